"""`healthai-client score --input x.csv`: a header naming a column twice, or a row with more or fewer
cells than the header, exits 2 naming the column or line (csv.DictReader kept the last of two ``age``
columns and filled short rows with missing values, silently). A well-formed file still scores."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from healthai_client.cli import main
from healthai_client.cli_commands import _score_input

from .model_repo import RISK_MODEL

HEADER = "age,bmi,systolic_bp,hba1c"


def _read(path: Path) -> list[dict[str, float]]:
    return _score_input(argparse.Namespace(input=path, set=None))[0]


def test_a_repeated_column_exits_2_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv_file = tmp_path / "dup.csv"
    csv_file.write_text(f"{HEADER},age\n67.25,28,140,6.5,30.75\n")
    # refused before any connection: no server needed for the exit code
    assert main(["score", "-m", RISK_MODEL, "--input", str(csv_file), "--address", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "column 'age' twice" in err and "columns 1 and 5" in err
    assert "67.25" not in err and "30.75" not in err  # no cell value echoed


@pytest.mark.parametrize(("row", "cells"), [("67,28,140,6.5,99", 5), ("67,28", 2)])
def test_a_ragged_row_is_refused_naming_its_line(tmp_path: Path, row: str, cells: int) -> None:
    csv_file = tmp_path / "ragged.csv"
    csv_file.write_text(f"{HEADER}\n60,25,120,5.5\n{row}\n")
    with pytest.raises(ValueError, match=f"line 3 has {cells} cells for the 4 columns"):
        _read(csv_file)


def test_an_unnamed_column_is_refused(tmp_path: Path) -> None:
    csv_file = tmp_path / "unnamed.csv"
    csv_file.write_text("age,,hba1c\n60,25,5.5\n")
    with pytest.raises(ValueError, match="header column 2 has no name"):
        _read(csv_file)


def test_set_naming_a_feature_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="'age' twice"):
        _score_input(argparse.Namespace(input=None, set=["age=60", "age=61"]))


def test_a_well_formed_csv_still_scores(server: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    csv_file = tmp_path / "ok.csv"
    csv_file.write_text(f"{HEADER}\n60,25,120,5.5\n\n61,NA,121,5.6\n")  # a blank line is skipped
    rows = _read(csv_file)
    assert len(rows) == 2 and rows[0]["age"] == 60 and rows[1]["bmi"] != rows[1]["bmi"]  # NA: NaN
    csv_file.write_text(f"{HEADER}\n60,25,120,5.5\n")
    assert main(["score", "-m", RISK_MODEL, "--input", str(csv_file), "--address", server]) == 0
    assert RISK_MODEL in capsys.readouterr().out
