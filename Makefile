# Two entry points for a fresh clone:  `make run`  (set up + serve)  and  `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
DEPS    := $(VENV)/.stamp-deps
STAMP   := $(VENV)/.stamp-setup
# Non-editable installs: build outputs (stubs, native libraries) stay in build/, never in the source
# tree, so any source change re-installs (incremental: CMake rebuilds only what changed).
SOURCES := $(shell find csrc proto server training/healthai_training clients/python -type f \
             -not -path '*/__pycache__/*') CMakeLists.txt setup.py pyproject.toml training/pyproject.toml

.PHONY: setup build run test lint bench clean

setup: $(STAMP)

$(DEPS): requirements-runtime.txt requirements-build.txt requirements-dev.txt training/requirements.txt \
         requirements-kafka.txt requirements-privacy.txt training/requirements-federated.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	$(BIN)/pip install -q -r training/requirements-federated.txt  # flwr: healthai federate (not serving)
	csrc/fetch_ort_headers.sh build/onnxruntime-dev
	touch $(DEPS)

$(STAMP): $(DEPS) $(SOURCES)
	rm -rf build/lib.*/healthai/data  # setuptools keeps files deleted from the source (a withdrawn model)
	$(BIN)/pip install -q --no-build-isolation --no-deps . ./training
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
	$(BIN)/ruff check server training clients tests benchmarks deploy proto setup.py

bench: setup
	$(BIN)/python benchmarks/aggregate.py --quick
	$(BIN)/python benchmarks/ingest.py --quick
	$(BIN)/python benchmarks/serve.py --quick

clean:
	rm -rf build $(VENV) training/build *.egg-info training/*.egg-info
