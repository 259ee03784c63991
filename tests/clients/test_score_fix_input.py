"""score --table errors name the row of the whole table; score --input sends empty / NA / null cells
as missing values (NaN)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from types import SimpleNamespace

import grpc
import numpy as np
import pytest

from healthai_client.cli_commands import _score_input
from healthai_client.cohort_table import CohortRows, score_rows
from healthai_client.errors import HealthAIClientError


class _Client:
    def score(self, model, x, **kwargs):
        bad = np.flatnonzero(x[:, 0] > 100)
        if not len(bad):
            return SimpleNamespace(model_name=model, model_version=1, patients=())
        raise HealthAIClientError(grpc.StatusCode.INVALID_ARGUMENT,
                                  f"features[{bad[0]}].crp={x[bad[0], 0]:g} is outside [0, 100]")


def test_batch_error_names_the_table_row() -> None:
    x = np.zeros((2500, 1), np.float32)
    x[1148, 0] = 1e6
    rows = CohortRows(("crp",), x, tuple(f"MRN{i}" for i in range(2500)))
    for batch in (1000, 5000):
        with pytest.raises(HealthAIClientError) as info:
            score_rows(_Client(), "m", rows, batch=batch, top_features=None)
        assert "table row 1149 (features[1148]).crp=1e+06" in info.value.message
        assert "MRN" not in info.value.message


def test_missing_cells_are_sent_as_nan(tmp_path: Path) -> None:
    csv_file = tmp_path / "in.csv"
    csv_file.write_text("age,sbp\n60,\n61,NA\n62,140\n")
    rows, _ = _score_input(argparse.Namespace(input=csv_file, set=None))
    assert [math.isnan(r["sbp"]) for r in rows] == [True, True, False]
    js = tmp_path / "in.json"
    js.write_text(json.dumps([{"age": 60, "sbp": None}]))
    assert math.isnan(_score_input(argparse.Namespace(input=js, set=None))[0][0]["sbp"])
    csv_file.write_text("age,sbp\n60,high\n")
    with pytest.raises(ValueError, match="empty cell, NA or null"):
        _score_input(argparse.Namespace(input=csv_file, set=None))
