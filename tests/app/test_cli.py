"""``healthai serve`` flags -> Settings (flags > env > file), without starting a server."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from healthai.app import cli
from healthai.app.settings import load_settings


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["serve", *argv])


def test_flags_override_env_and_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('store_uri = "file:///from-file"\nshutdown_grace_s = 3\n[serving]\nenabled = true\n')
    args = parse(["--config", str(cfg), "--port", "0", "--dev", "--no-serving", "--log-level", "debug",
                  "--max-records-per-request", "7"])
    s = load_settings(config=args.config, environ={"HEALTHAI_PORT": "9", "HEALTHAI_SHUTDOWN_GRACE_S": "4"},
                      flags=cli._flags(args))
    assert (s.port, s.dev_mode, s.serving.enabled, s.log_level) == (0, True, False, "DEBUG")
    assert (s.store_uri, s.shutdown_grace_s, s.max_records_per_request) == ("file:///from-file", 4.0, 7)


def test_unset_flags_leave_lower_layers_alone() -> None:
    s = load_settings(environ={"HEALTHAI_SERVING__ENABLED": "false"}, flags=cli._flags(parse([])))
    assert s.serving.enabled is False and s.dev_mode is False and s.port == 50051


def test_bad_flag_value_is_an_argparse_error() -> None:
    with pytest.raises(SystemExit):
        parse(["--port", "fifty"])
