# Two entry points for a fresh clone:  `make run`  (set up + serve)  and  `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.stamp-setup
SOURCES := $(shell find csrc proto -type f) CMakeLists.txt setup.py pyproject.toml

.PHONY: setup build run test lint bench clean

setup: $(STAMP)

$(STAMP): requirements-runtime.txt requirements-dev.txt $(SOURCES)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	csrc/fetch_ort_headers.sh build/onnxruntime-dev
	$(BIN)/pip install -q --no-build-isolation -e .
	$(BIN)/healthai info
	touch $(STAMP)

build: setup

run: setup var/pseudonym.key
	$(BIN)/healthai serve --pseudonym-key-file var/pseudonym.key

# A local HMAC key for pseudonyms, made once (0600). Production passes its own key (file or env).
var/pseudonym.key:
	mkdir -p var
	umask 077 && $(BIN)/python -c "import secrets; print(secrets.token_hex(32))" > $@

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check server training clients tests benchmarks deploy

bench: setup
	$(BIN)/python benchmarks/aggregate.py --quick
	$(BIN)/python benchmarks/ingest.py --quick
	$(BIN)/python benchmarks/serve.py --quick

clean:
	rm -rf build $(VENV) server/v1 server/*.so
