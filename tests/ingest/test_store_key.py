"""A store keeps one pseudonym key: a writer with another key would store every re-sent record twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from healthai.app.testing import serve_in_thread
from healthai.errors import InvalidInput
from healthai.ingest.key_check import KEY_CHECK_FILE, check_store_key
from healthai.ingest.plugin import IngestPlugin
from healthai.normalize.context import NormalizeContext
from healthai.store import ParquetStore

from .conftest import REFERENCE_DATE, context, make_settings


def _start(store_dir: Path, ctx: NormalizeContext) -> None:
    settings = make_settings(store_dir)
    with serve_in_thread(settings, [IngestPlugin(settings, ctx=ctx)]):
        pass


def test_a_store_refuses_a_writer_with_another_key(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    _start(store_dir, context())
    check = json.loads((store_dir / KEY_CHECK_FILE).read_text())
    assert check["key_check"] == context().pseudonymizer.pseudonym("urn:healthai:key-check", "1")
    _start(store_dir, context())  # the same key starts again
    other = NormalizeContext.create(key=b"another-key-of-32-bytes-for-test", reference_date=REFERENCE_DATE)
    with pytest.raises(InvalidInput, match="written under another pseudonym key") as err:
        _start(store_dir, other)
    assert err.value.field == "pseudonym_key_file" and "another-key" not in err.value.message
    store = ParquetStore(str(store_dir)).open()
    check_store_key(store, context().pseudonymizer)  # idempotent for its own key
    store.close()


def test_serve_with_another_key_stops_in_one_line(tmp_path: Path) -> None:
    store = tmp_path / "s"
    _start(store, context())
    env = {**os.environ, "HEALTHAI_PSEUDONYM_KEY": "f" * 64}
    cmd = [sys.executable, "-m", "healthai.app", "serve", "--no-serving", "--store-uri", str(store),
           "--port", "0"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "cannot start: the store" in done.stderr and "Traceback" not in done.stderr


def test_a_dev_servers_random_key_is_checked_but_never_recorded(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("HEALTHAI_PSEUDONYM_KEY", raising=False)
    fresh = tmp_path / "fresh"
    settings = make_settings(fresh)  # dev mode, no key: a random one
    with serve_in_thread(settings, [IngestPlugin(settings)]):
        pass
    assert not (fresh / KEY_CHECK_FILE).exists()  # the next start's key will differ: nothing to keep
    keyed = tmp_path / "keyed"
    _start(keyed, context())
    settings = make_settings(keyed)
    refused = r"another pseudonym key.*--dev without a key makes a random one"
    with pytest.raises(InvalidInput, match=refused), serve_in_thread(settings, [IngestPlugin(settings)]):
        pass
