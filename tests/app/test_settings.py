"""Settings: precedence flags > env > file > defaults; the pseudonym-key rule."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

from healthai.app.settings import Settings, load_settings
from healthai.errors import InvalidInput


def test_defaults_bind_loopback() -> None:
    s = load_settings(environ={})
    assert (s.host, s.port, s.store_uri, s.dev_mode) == ("127.0.0.1", 50051, "./var/store", False)
    assert s.serving.enabled is True


def test_precedence_flags_over_env_over_file(tmp_path: Path) -> None:
    cfg = tmp_path / "healthai.toml"
    cfg.write_text('port = 7000\nhost = "0.0.0.0"\nlog_level = "debug"\nstore_uri = "file:///data"\n'
                   "[serving]\nenabled = false\nintra_op_threads = 3\n")
    env = {"HEALTHAI_PORT": "7001", "HEALTHAI_SERVING__INTRA_OP_THREADS": "4", "HEALTHAI_UNRELATED": "x"}
    s = load_settings(config=cfg, environ=env, flags={"port": 7002, "host": None})
    assert s.port == 7002  # flag
    assert s.host == "0.0.0.0" and s.store_uri == "file:///data"  # file (flag None = not given)
    assert s.log_level == "DEBUG"
    assert s.serving.enabled is False and s.serving.intra_op_threads == 4  # file, then env
    assert load_settings(config=cfg, environ=env).port == 7001  # env over file


def test_config_file_from_env_and_errors(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("max_records_per_request = 10\n")
    assert load_settings(environ={"HEALTHAI_CONFIG": str(cfg)}).max_records_per_request == 10
    with pytest.raises(InvalidInput, match=r"config file .*missing\.toml"):
        load_settings(config=tmp_path / "missing.toml", environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("port = = 1\n")
    with pytest.raises(InvalidInput, match=r"bad\.toml"):
        load_settings(config=bad, environ={})
    with pytest.raises(ValidationError, match="port"):
        load_settings(environ={"HEALTHAI_PORT": "not-a-port"})
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        load_settings(flags={"prot": 1}, environ={})
    with pytest.raises(ValidationError, match="given together"):
        Settings(omop_concept=tmp_path / "CONCEPT.csv")


def test_pseudonym_key_sources(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(InvalidInput, match="no pseudonym key: set pseudonym_key_file or HEALTHAI_PSEUDONYM"):
        Settings().pseudonym_key(environ={})
    key_file = tmp_path / "key"
    key_file.write_text("00" * 32 + "\n")
    assert Settings(pseudonym_key_file=key_file).pseudonym_key(environ={}) == bytes(32)
    assert Settings().pseudonym_key(environ={"HEALTHAI_PSEUDONYM_KEY": "a-long-secret-passphrase"}) == \
        b"a-long-secret-passphrase"
    with pytest.raises(InvalidInput, match="pseudonym key has 5 bytes; at least 16 required"):
        Settings().pseudonym_key(environ={"HEALTHAI_PSEUDONYM_KEY": "short"})
    with pytest.raises(InvalidInput, match=r"pseudonym_key_file .*nokey"):
        Settings(pseudonym_key_file=tmp_path / "nokey").pseudonym_key(environ={})
    with caplog.at_level(logging.WARNING):
        a = Settings(dev_mode=True).pseudonym_key(environ={})
        b = Settings(dev_mode=True).pseudonym_key(environ={})
    assert len(a) == 32 and a != b
    assert "dev mode: random per-process pseudonym key" in caplog.text
    assert a.hex() not in caplog.text
