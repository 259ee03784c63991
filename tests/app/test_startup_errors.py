"""Start-up refusals are one ``cannot start: ...`` line (exit 2), never a traceback: a misspelt key inside
a settings section, a store the server cannot write, a port file it cannot write, a damaged part file;
``healthai keys create`` refuses a bad client name the same way."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from pydantic import ValidationError

from healthai.app.settings import load_settings
from healthai.cli import main
from healthai.errors import FailedPrecondition
from healthai.store import ParquetStore

KEY_ENV = {"HEALTHAI_PSEUDONYM_KEY": "0123456789abcdef0123456789abcdef"}


def serve(*extra: str, env: dict[str, str] | None = None, **kw: object) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "healthai.app", "serve", "--no-serving", "--port", "0", *extra]
    return subprocess.run(cmd, env={**os.environ, **KEY_ENV, **(env or {})}, capture_output=True, text=True,
                          timeout=60, **kw)  # type: ignore[call-overload]


@pytest.mark.parametrize(("section", "typo", "meant"), [
    ("security", "api_key_file", "api_keys_file"),
    ("serving", "model_repo", "model_repository"),
    ("observability", "metric_port", "metrics_port"),
])
def test_a_misspelt_key_in_a_section_is_refused_naming_section_and_key(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], section: str, typo: str, meant: str) -> None:
    """``[security] api_key_file`` (missing s) once started with auth: none."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'port = 0\ndev_mode = true\nstore_uri = "{tmp_path / "s"}"\n[{section}]\n{typo} = "x"\n')
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        load_settings(config=cfg, environ={})
    assert main(["serve", "--config", str(cfg), "--no-serving"]) == 2
    err = capsys.readouterr().err
    assert f"{section}.{typo}: unknown setting (did you mean {meant!r}?)" in err
    assert not (tmp_path / "s").exists()  # refused before anything started


def test_nested_settings_from_the_environment_still_work_and_typos_there_are_refused() -> None:
    env = {"HEALTHAI_SECURITY__API_KEYS_FILE": "/etc/healthai/keys.json",
           "HEALTHAI_OBSERVABILITY__METRICS_PORT": "9464", "HEALTHAI_SERVING__RELOAD_POLL_S": "0"}
    s = load_settings(environ=env)
    assert str(s.security.api_keys_file) == "/etc/healthai/keys.json" and s.security.auth_enabled
    assert s.observability.metrics_port == 9464 and s.serving.reload_poll_s == 0
    with pytest.raises(ValidationError, match=r"security\.api_key_file"):
        load_settings(environ={"HEALTHAI_SECURITY__API_KEY_FILE": "/etc/healthai/keys.json"})


def test_a_port_file_that_cannot_be_written_is_refused_before_serving(tmp_path: Path) -> None:
    """It used to log 'serving', then die with a FileNotFoundError/PermissionError traceback."""
    done = serve("--store-uri", str(tmp_path / "s"), "--port-file", str(tmp_path / "no-such-dir" / "port"))
    assert done.returncode == 2, done.stderr
    assert "cannot start: port_file (--port-file)" in done.stderr
    assert "No such file or directory" in done.stderr
    assert "Traceback" not in done.stderr and "serving healthai" not in done.stderr


def _read_only(store: Path) -> tuple[list[str], str]:
    """The command prefix that runs the server with ``store`` not writable, and the reason it will name:
    as root (which ignores permissions), a read-only bind mount in a private mount namespace."""
    if os.geteuid() != 0:
        for p in (store, *store.rglob("*")):
            p.chmod(0o555)
        return [], "EACCES: Permission denied"
    prefix = ["unshare", "-m", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"', str(store)]
    if shutil.which("unshare") is None or subprocess.run([*prefix, "true"], capture_output=True).returncode:
        pytest.skip("root without unshare/mount: no way to make a directory read-only for this test")
    return prefix, "EROFS: Read-only file system"


@pytest.mark.parametrize("initialized", [False, True])
def test_a_store_the_server_cannot_write_is_refused_at_start(tmp_path: Path, initialized: bool) -> None:
    """A fresh read-only directory gave a PermissionError traceback; an initialized one started SERVING and
    answered every ingest INTERNAL."""
    store = tmp_path / "store"
    store.mkdir()
    if initialized:
        ParquetStore(str(store)).open().close()  # as a previous (writable) start left it
        (store / "_commits").mkdir()
    prefix, reason = _read_only(store)
    cmd = [*prefix, sys.executable, "-m", "healthai.app", "serve", "--no-serving", "--port", "0",
           "--store-uri", str(store)]
    done = subprocess.run(cmd, env={**os.environ, **KEY_ENV}, capture_output=True, text=True, timeout=60)
    try:
        assert done.returncode == 2, done.stderr
        assert f"cannot start: store_uri '{store}': the store cannot be written ({reason}" in done.stderr
        assert "Traceback" not in done.stderr
    finally:
        for p in (store, *store.rglob("*")):
            p.chmod(0o755)


def test_keys_create_refuses_a_bad_client_name_in_one_line(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    keys = tmp_path / "keys.json"
    assert main(["keys", "create", "--file", str(keys), "--client", "bad name", "--scope", "score"]) == 2
    assert "healthai keys create: client 'bad name' must match" in capsys.readouterr().err
    assert not keys.exists()
    keys.write_text("not json")
    assert main(["keys", "list", "--file", str(keys)]) == 2
    assert "healthai keys list: not valid JSON" in capsys.readouterr().err


def _patients(*ids: str) -> pa.Table:
    return pa.table({"source": ["s"] * len(ids), "record_key": list(ids), "sex": ["female"] * len(ids)})


def test_a_damaged_part_file_is_named_and_never_skipped(tmp_path: Path) -> None:
    """``cannot start: Parquet magic bytes not found in footer`` did not say which file, nor what to do."""
    store_dir = tmp_path / "store"
    store = ParquetStore(str(store_dir)).open()
    store.commit({"patient": _patients("a", "b")})
    result = store.commit({"patient": _patients("c")})
    store.close()
    damaged = store_dir / result.files[0]
    undamaged = shutil.copy(damaged, tmp_path / "backup.parquet")
    os.truncate(damaged, 100)
    with pytest.raises(FailedPrecondition) as err:
        ParquetStore(str(store_dir)).open()
    message = err.value.message
    assert f"store_uri: {result.files[0]!r} (under the store root) cannot be read (ArrowInvalid: " \
        "Parquet magic bytes not found" in message
    assert "committed rows, not a leftover" in message and "restore the file from a backup" in message
    assert str(tmp_path) not in message and err.value.field == "store_uri"
    damaged.rename(tmp_path / damaged.name)  # moved aside: the commit log still names it, never skipped
    with pytest.raises(FailedPrecondition, match=rf"names {result.files[0]!r} .*which is missing"):
        ParquetStore(str(store_dir)).open()
    (tmp_path / damaged.name).rename(damaged)
    shutil.copy(undamaged, damaged)  # restored from a backup
    reopened = ParquetStore(str(store_dir)).open()
    assert reopened.count("patient") == 3
    reopened.close()


def test_serve_names_the_damaged_file_in_one_line(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    store = ParquetStore(str(store_dir)).open()
    rel = store.commit({"patient": _patients("a")}).files[0]
    store.close()
    os.truncate(store_dir / rel, 100)
    done = serve("--store-uri", str(store_dir))
    assert done.returncode == 2, done.stderr
    assert f"cannot start: store_uri: {rel!r} (under the store root) cannot be read" in done.stderr
    assert "Traceback" not in done.stderr
