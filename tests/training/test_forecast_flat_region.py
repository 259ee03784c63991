"""A region flat over the training split (zeros until it started reporting) is scaled by all regions'
training range and named in a warning: with a span of 1 its first hundreds of cases reached the network
as inputs in the hundreds and its forecasts (and its neighbours') ran to many times any count seen."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from healthai_training import cli
from healthai_training.epi import data as epi_data


def test_a_flat_region_gets_the_pooled_training_span() -> None:
    series = np.array([[0.0, 10.0, 5.0], [0.0, 30.0, 9.0], [400.0, 50.0, 7.0]])
    lo, hi = epi_data.minmax_fit(series, 2)
    assert lo.tolist() == [0.0, 10.0, 5.0] and hi.tolist() == [30.0, 30.0, 9.0]
    assert epi_data.flat_regions(series, 2, ("A", "B", "C")) == ["A"]
    lo, hi = epi_data.minmax_fit(np.zeros((3, 2)), 2)  # nothing varies anywhere: a span of 1
    assert (hi - lo).tolist() == [1.0, 1.0]


def test_a_region_that_reported_only_zeros_in_training_does_not_wreck_the_forecasts(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(3)
    weeks = 52 * 7
    t = np.arange(weeks)
    counts = {r: 30 + 200 * np.exp(-((t % 52 - 8 - i) ** 2) / 30) + rng.poisson(5, weeks)
              for i, r in enumerate("ABCDE")}
    counts["C"][: weeks // 2 + 20] = 0  # reports from the validation split on
    start = np.datetime64("2010-01-04")
    rows = ["period," + ",".join("ABCDE")] + [
        f"{start + np.timedelta64(7 * k, 'D')}," + ",".join(f"{counts[r][k]:.0f}" for r in "ABCDE")
        for k in range(weeks)]
    (tmp_path / "s.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "g.csv").write_text("source,target\nA,B\nB,C\nC,D\nD,E\nE,A\n")
    parser = argparse.ArgumentParser(prog="healthai")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["train", "forecast", "--series", str(tmp_path / "s.csv"), "--graph",
                              str(tmp_path / "g.csv"), "--no-stack", "--epochs", "8", "--runs-dir",
                              str(tmp_path / "runs"), "--json", str(tmp_path / "out.json")])
    with caplog.at_level(logging.WARNING):
        assert args.func(args) == 0
    assert any("never change over the training split (C)" in r.getMessage() for r in caplog.records)
    rmse = json.loads((tmp_path / "out.json").read_text())["models"]["healthai"]["rmse"]
    assert max(rmse) < max(c.max() for c in counts.values())  # was 4-6x the largest count
