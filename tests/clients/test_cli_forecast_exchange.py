"""`healthai-client regions` and `forecast --hubverse/--plot` against a real server (tiny model)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from healthai_client.cli import main

from .model_repo import FORECAST_MODEL, REGIONS, expected_forecast


def test_regions_lists_the_model_graph(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["regions", "-m", FORECAST_MODEL, "--address", server, "--json"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == REGIONS
    assert main(["regions", "-m", "forecast_nope", "--address", server]) == 4


def test_hubverse_rows_and_plot(server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    history = np.arange(12, dtype=np.float32).reshape(4, 3) + 5
    path = tmp_path / "history.csv"
    path.write_text(",".join(REGIONS) + "\n" + "\n".join(",".join(f"{v:g}" for v in row) for row in history))
    base = ["forecast", "-m", FORECAST_MODEL, "--history", str(path), "--address", server]
    assert main([*base, "--hubverse", str(tmp_path / "hub.csv")]) == 2  # no dates: needs a reference date
    assert "give the reference date" in capsys.readouterr().err and not (tmp_path / "hub.csv").exists()
    argv = [*base, "--hubverse", str(tmp_path / "hub.csv"), "--reference-date", "2026-01-05",
            "--plot", str(tmp_path / "fan.png")]
    assert main(argv) == 0
    with (tmp_path / "hub.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    expected = expected_forecast(history)  # [horizons, regions, levels]
    h, n, q = expected.shape
    assert len(rows) == h * n * q
    first = rows[0]
    assert (first["reference_date"], first["location"], first["horizon"], first["output_type"]) == (
        "2026-01-05", REGIONS[0], "1", "quantile")
    assert first["target_end_date"] == "2026-01-12"  # one weekly step after the reference date
    assert float(first["value"]) == pytest.approx(float(expected[0, 0, 0]), rel=1e-5)
    assert (tmp_path / "fan.png").read_bytes()[:4] == b"\x89PNG"
