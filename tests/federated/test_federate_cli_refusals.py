"""``healthai federate``: bad input stops with exit 2 and one line (no traceback), before any Flower
process starts; TLS files without the CA that turns TLS on are refused, never served in plaintext."""

from __future__ import annotations

from pathlib import Path

import pytest

from healthai.cli import main

SPEC = Path(__file__).resolve().parents[2] / "training/examples/heart_cohort.toml"


def test_a_missing_spec_or_table_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    assert main(["federate", "coordinator", "--spec", str(tmp_path / "nope.toml"), "--non-private",
                 "--runs-dir", str(tmp_path / "runs")]) == 2
    assert capsys.readouterr().out.startswith("error: ")
    assert main(["federate", "site", "--superlink", "127.0.0.1:9", "--table", str(tmp_path / "nope.csv"),
                 "--spec", str(SPEC), "--site", "x"]) == 2
    assert "error: " in capsys.readouterr().out


@pytest.mark.parametrize("flag", ["--tls-cert", "--tls-key"])
def test_tls_files_without_a_ca_are_refused(tmp_path: Path, capsys, flag: str) -> None:
    assert main(["federate", "coordinator", "--spec", str(SPEC), "--non-private",
                 flag, str(tmp_path / "f.pem"), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert f"error: {flag} needs --tls-ca" in capsys.readouterr().out
