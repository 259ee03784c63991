"""`healthai train backtest`: rolling origins on real US-states counts (3 states, tiny model), nothing
after an origin reaches its choices, WIS from scoringrules equals the hand-written WIS, the stack and
the calibrated bands behave, and the --json layout."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from healthai_training import cli
from healthai_training.epi import metrics
from healthai_training.forecast.backtest import BASELINES, backtest_origins, run_backtest, wis
from healthai_training.forecast.model import FLUSIGHT_QUANTILES
from healthai_training.forecast.stacking import calibrate, fit_weights
from healthai_training.forecast.train import ForecastConfig
from tests.training.epi_subsets import us_states_subset

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")
LEVELS = np.asarray(FLUSIGHT_QUANTILES)
CFG = ForecastConfig(seasonal=True, epochs=2, hidden=4, horizons=(1, 4), steps=4, point_weight=30.0)


@pytest.fixture(scope="module")
def three_states(shared_data: Path):
    return us_states_subset(shared_data, 200)


def test_origins_are_season_starts_after_two_seasons() -> None:
    assert backtest_origins(360, 52) == [104, 156, 208, 260, 312]
    assert backtest_origins(100, 52) == []


def test_wis_from_scoringrules_matches_the_definition() -> None:
    rng = np.random.default_rng(0)
    y = rng.uniform(0, 10, (40, 3))
    q = np.sort(rng.uniform(0, 10, (40, 3, len(LEVELS))), axis=-1)
    assert float(wis(y, q, LEVELS).mean()) == pytest.approx(metrics.weighted_interval_score(y, q, LEVELS))
    point = np.repeat(y[..., None] + 1.0, len(LEVELS), axis=-1)  # a point mass: WIS = absolute error
    np.testing.assert_allclose(wis(y, point, LEVELS), 1.0)


def test_stack_weights_are_convex_and_bands_calibrated() -> None:
    rng = np.random.default_rng(1)
    a, b, noise = rng.uniform(0, 100, 400), rng.uniform(0, 100, 400), rng.normal(0, 1, 400)
    w = fit_weights(np.stack([a, b, rng.uniform(0, 100, 400)], axis=1), 0.7 * a + 0.3 * b + noise)
    np.testing.assert_allclose(w, [0.7, 0.3, 0.0], atol=0.02)
    assert np.all(w >= 0) and w.sum() == pytest.approx(1.0)
    # Counts whose noise grows with the level (Poisson): bands on the square-root scale, calibrated
    # on residuals pooled over a small and a large region, cover the nominal share in each. (A band
    # of one width in counts would be far too wide for the small region and too narrow for the other.)
    size = np.array([20.0, 2000.0])
    val_point = size * rng.uniform(0.8, 1.2, (1000, 2))
    test_point = size * rng.uniform(0.8, 1.2, (3000, 2))
    q = calibrate(test_point, [(val_point, rng.poisson(val_point))], LEVELS)
    test_y = rng.poisson(test_point)
    for region in (0, 1):
        y, band = test_y[:, region:region + 1], q[:, region:region + 1]
        assert metrics.coverage(y, band, LEVELS, 0.95) == pytest.approx(0.95, abs=0.02)
        assert metrics.coverage(y, band, LEVELS, 0.5) == pytest.approx(0.5, abs=0.04)


def test_no_choice_sees_data_after_its_origin(three_states) -> None:
    first = run_backtest(data=three_states, config=CFG)
    assert first["origins"] == [104, 156]
    assert set(first["models"]) == {"healthai", "healthai_stacked", *BASELINES}
    later = three_states.series.copy()
    later[156:] *= 3.0  # the last test season changes; nothing chosen at either origin may change
    second = run_backtest(data=replace(three_states, series=later), config=CFG)
    assert first["stack_weights"] == second["stack_weights"]
    assert [r["fit_sets"] for r in first["stack_weights"]["4"]] == [1, 2]  # 2nd origin: + 1st's season
    assert first["models"]["healthai"]["1"]["rmse"] != second["models"]["healthai"]["1"]["rmse"]
    for rows in first["stack_weights"].values():
        for row in rows:
            weights = list(row["weights"].values())
            assert min(weights) >= 0 and sum(weights) == pytest.approx(1.0, abs=1e-3)
    h4 = first["models"]["healthai_stacked"]["4"]
    assert set(h4["relative_wis"]) == set(BASELINES) and 0 <= h4["coverage95"] <= 1


@pytest.mark.parametrize(("ensemble", "horizons"), [(False, None), (True, None), (False, "1,2")])
def test_cli_backtest_json(tmp_path: Path, capsys, ensemble: bool, horizons: str | None) -> None:
    series = tmp_path / "s.csv"
    rng = np.random.default_rng(2)
    t = np.arange(170)
    counts = {r: 20 + 15 * np.sin(2 * np.pi * t / 52 + i) + rng.poisson(3, 170) for i, r in enumerate("abc")}
    rows = ["period,a,b,c"] + [
        f"{np.datetime64('2015-01-05') + np.timedelta64(7 * k, 'D')},{counts['a'][k]:.0f},"
        f"{counts['b'][k]:.0f},{counts['c'][k]:.0f}"
        for k in t
    ]
    series.write_text("\n".join(rows) + "\n")
    (tmp_path / "g.csv").write_text("source,target\na,b\nb,c\n")
    parser = argparse.ArgumentParser(prog="healthai")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        [
            "train",
            "backtest",
            "--series",
            str(series),
            "--graph",
            str(tmp_path / "g.csv"),
            "--epochs",
            "1",
            "--hidden",
            "4",
            "--runs-dir",
            str(tmp_path / "runs"),
            "--json",
            str(tmp_path / "bt.json"),
            *(["--ensemble", "--seeds", "0,1", "--cache-dir", str(tmp_path / "cache")] if ensemble else []),
            *(["--horizons", horizons] if horizons else []),
        ]
    )
    assert args.func(args) == 0
    out = json.loads((tmp_path / "bt.json").read_text())
    steps = [1, 2] if horizons else [2, 3, 5, 10, 15]  # next week is scored when asked for
    assert out["horizons"] == steps and out["origins"] == [104, 156]
    assert {"healthai", "stgnn", "last_value", "lag52"} <= set(out["models"])  # healthai: the default (stack)
    assert all(len(v) == len(steps) for v in out["models"]["healthai"].values() if isinstance(v, list))
    assert all(-1 <= r <= 1 for m in out["models"].values() for r in m["pcc"])  # the benchmarks' PCC
    run_dir = Path(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_dir"])
    assert (run_dir / "backtest.png").is_file() and "| h |" in (run_dir / "tables.md").read_text()
    if ensemble:  # one cached ST-GNN per seed and origin; the run says which seeds
        assert len(list((tmp_path / "cache").glob("*.pt"))) == 4 and "-ens0-1-" in run_dir.name


def test_fixed_split_is_one_origin_at_the_test_start(three_states) -> None:
    result = run_backtest(data=three_states, config=CFG, fixed_split=True)
    assert result["origins"] == [140]  # 0.7 × 200: validation 100..139, test 140..199
    assert {"healthai", "healthai_stacked", "last_value", "lag52"} <= set(result["models"])
