"""Split export for peer models (benchmarks/peers/): the exported cuts, scaling and test periods are
those of ``train backtest`` (its baselines rescored on them reproduce its numbers), every training
sample has a full window inside the training rows, and point forecasts are scored and refused as
documented."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from healthai_training.epi import data as epi_data
from healthai_training.errors import TrainingInputError
from healthai_training.forecast.backtest import run_backtest
from healthai_training.forecast.splits import baseline_points, export_splits, score_points
from healthai_training.forecast.train import ForecastConfig
from tests.training.epi_subsets import us_states_subset

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")
HORIZONS = (1, 4)


@pytest.fixture(scope="module")
def three_states(shared_data: Path) -> epi_data.EpiData:
    return us_states_subset(shared_data, 200)


def test_rescored_baselines_reproduce_the_backtest(three_states: epi_data.EpiData) -> None:
    cfg = ForecastConfig(seasonal=True, epochs=1, hidden=4, horizons=HORIZONS, steps=4, point_weight=30.0)
    result = run_backtest(data=three_states, config=cfg)
    splits = json.loads(json.dumps(export_splits(three_states, horizons=HORIZONS, window=20)))
    assert [o["origin"] for o in splits["origins"]] == result["origins"] == [104, 156]
    scored = score_points(three_states, splits, baseline_points(three_states, splits))
    assert scored["origins"] == result["origins"]
    compared = 0
    for name, row in scored["models"].items():
        for i, h in enumerate(HORIZONS):
            ours = result["models"][name][str(h)]
            assert row["rmse"][i] == pytest.approx(ours["rmse"], rel=1e-9)
            assert row["mae"][i] == pytest.approx(ours["mae"], rel=1e-9)
            compared += 1
    assert compared >= 6  # last value, lag one season, 2-season mean (drift needs h + 52 periods)


def test_cuts_scaling_and_targets(three_states: epi_data.EpiData) -> None:
    splits = export_splits(three_states, horizons=HORIZONS, window=20)
    for o in splits["origins"]:
        v, origin, end = o["val_start"], o["origin"], o["end"]
        assert v == int(0.8 * origin) and end == min(origin + 52, 200)
        lo, hi = epi_data.minmax_fit(three_states.series, v)  # training rows only
        np.testing.assert_allclose(o["scale_min"], lo)
        np.testing.assert_allclose(o["scale_max"], hi)
        for h in map(str, HORIZONS):
            train, val, test = (np.asarray(o["targets"][s][h]) for s in ("train", "val", "test"))
            assert train.max() < v and train.min() - int(h) - 20 + 1 == 0  # first full window
            np.testing.assert_array_equal(val, np.arange(v, origin))
            np.testing.assert_array_equal(test, np.arange(origin, end))
    fixed = export_splits(three_states, horizons=HORIZONS, fixed_split=True)
    assert [(o["val_start"], o["origin"], o["end"]) for o in fixed["origins"]] == [(100, 140, 200)]
    assert fixed["protocol"] == "fixed" and fixed["split"] == [0.5, 0.2, 0.3]


def test_score_points_and_refusals(three_states: epi_data.EpiData) -> None:
    splits = export_splits(three_states, horizons=HORIZONS, fixed_split=True)
    truth = {
        str(h): [three_states.series[o["targets"]["test"][str(h)]] for o in splits["origins"]]
        for h in HORIZONS
    }
    exact = score_points(three_states, splits, {"models": {"peer": truth}})["models"]["peer"]
    assert exact["rmse"] == [0.0, 0.0] and exact["coverage_95"] == [None, None]
    assert exact["pcc"] == pytest.approx([1.0, 1.0])
    flat = {h: [np.full_like(p, 7.0) for p in ps] for h, ps in truth.items()}  # constant: no correlation
    flat_row = score_points(three_states, splits, {"models": {"peer": flat}})["models"]["peer"]
    assert flat_row["pcc"] == [None, None] and json.dumps(flat_row, allow_nan=False)
    off = {h: [p + 2.0 for p in ps] for h, ps in truth.items()}
    row = score_points(three_states, splits, {"models": {"peer": off}})["models"]["peer"]
    assert row["rmse"] == pytest.approx([2.0, 2.0]) and row["wis"] == row["mae"] == pytest.approx([2.0, 2.0])
    with pytest.raises(TrainingInputError, match=r"peer: origin 140 h=1: need finite \[60, 3\]"):
        score_points(three_states, splits, {"models": {"peer": {**truth, "1": [truth["1"][0][:-1]]}}})
    with pytest.raises(TrainingInputError, match="one forecast per origin at h=4"):
        score_points(three_states, splits, {"models": {"peer": {"1": truth["1"]}}})
    other = replace(three_states, series=three_states.series + 1.0)
    with pytest.raises(TrainingInputError, match="series differs"):
        score_points(other, splits, {"models": {"peer": truth}})


def test_a_too_short_series_names_the_training_periods_and_no_seasonal_window_it_does_not_use() -> None:
    with pytest.raises(TrainingInputError) as err:
        epi_data.validate_series(np.ones((60, 3)), window=20, horizon=15, split=(0.5, 0.2, 0.3))
    assert "the training split (30 periods) must hold window + horizon = 20 + 15 periods" in str(err.value)
    assert "seasonal" not in str(err.value)
