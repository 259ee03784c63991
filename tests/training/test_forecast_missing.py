"""Missing cells and periods of a user's series: refused by default; ``--missing interpolate`` fills
them in time from the region's own counts, counts them in the report, never trains on them as targets
and never scores them."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from healthai.errors import InputFileError
from healthai.surveillance.series_file import read_series
from healthai_training import cli
from healthai_training.epi.user_data import load_files
from healthai_training.errors import TrainingInputError
from healthai_training.forecast.backtest import run_backtest, score
from healthai_training.forecast.model import FLUSIGHT_QUANTILES
from healthai_training.forecast.train import ForecastConfig, _split_tensors, evaluate, train_forecaster
from tests.training.epi_subsets import us_states_subset

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")
CFG = ForecastConfig(seasonal=True, epochs=2, hidden=4, horizons=(1, 4), steps=4, point_weight=30.0)
GAPS = (  # B: NA, empty and X cells; A: one empty cell; the week of 2020-01-20 absent from the file
    "period,A,B\n2020-01-06,1,NA\n2020-01-13,,5\n2020-01-27,3,X\n2020-02-03,4,7\n2020-02-10,5,\n"
)


def _write(tmp_path: Path, text: str, name: str = "s.csv") -> Path:
    (tmp_path / name).write_text(text)
    return tmp_path / name


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="healthai")
    cli.register(parser.add_subparsers(dest="command", required=True))
    return int(parser.parse_args(argv).func(parser.parse_args(argv)))


def test_missing_cells_are_refused_by_default_with_the_way_out(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match=r"row 3, column 'A': count ''.*--missing interpolate") as err:
        read_series(_write(tmp_path, GAPS))
    assert err.value.field == "series"
    long = _write(tmp_path, "region,period,count\na,2020-01-06,1\na,2020-01-13,2\nb,2020-01-13,4\n", "l.csv")
    with pytest.raises(InputFileError, match=r"region 'b' has no row for period 2020-01-06.*--missing"):
        read_series(long)
    gap = _write(tmp_path, "period,a\n2020-01-06,1\n2020-01-13,1\n2020-01-27,2\n", "g.csv")
    with pytest.raises(InputFileError, match=r"1 W periods missing.*--missing interpolate"):
        read_series(gap)


def test_interpolate_fills_in_time_carries_the_ends_and_reports(tmp_path: Path) -> None:
    table = read_series(_write(tmp_path, GAPS), missing="interpolate")
    assert [str(p.date()) for p in table.periods] == [
        "2020-01-06", "2020-01-13", "2020-01-20", "2020-01-27", "2020-02-03", "2020-02-10"]
    np.testing.assert_allclose(table.values[:, 0], [1, 5 / 3, 7 / 3, 3, 4, 5])  # linear between 1 and 3
    np.testing.assert_allclose(table.values[:, 1], [5, 5, 17 / 3, 19 / 3, 7, 7])  # ends carried
    assert table.imputed.tolist() == [[False, True], [True, False], [True, True], [False, True],
                                      [False, False], [False, True]]
    r = table.report
    assert r["missing_cells"] == 6 and r["missing_share"] == 0.5
    assert r["missing_by_region"] == {"B": 4, "A": 2} and r["missing_in_last_period"] == ["B"]
    assert r["first_missing"] == {"region": "B", "period": "2020-01-06"}


def test_interpolate_still_refuses_what_it_cannot_fill(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="'abc' is not a finite number \\(not a number nor a missing"):
        read_series(_write(tmp_path, "period,a,b\n2020-01-06,1,abc\n2020-01-13,2,3\n"), missing="interpolate")
    with pytest.raises(InputFileError, match="region 'b' has no count in any period"):
        read_series(_write(tmp_path, "period,a,b\n2020-01-06,1,\n2020-01-13,2,NA\n"), missing="interpolate")
    with pytest.raises(InputFileError, match="missing must be one of") as err:
        read_series(_write(tmp_path, GAPS), missing="zero")
    assert err.value.field == "missing"


def test_parquet_nulls_and_a_headerless_matrix_gap(tmp_path: Path) -> None:
    frame = pd.DataFrame({"period": ["2020-01-06", "2020-01-13", "2020-01-20"], "a": [1.0, None, 3.0]})
    frame.to_parquet(tmp_path / "s.parquet")
    with pytest.raises(InputFileError, match="count 'nan' is not a finite number"):
        read_series(tmp_path / "s.parquet")
    assert read_series(tmp_path / "s.parquet", missing="interpolate").values[:, 0].tolist() == [1, 2, 3]
    matrix = _write(tmp_path, "1,2\n,4\n3,NA\n", "m.txt")
    table = read_series(matrix, start="2020-01-06", step="W", missing="interpolate")
    assert table.values.tolist() == [[1, 2], [2, 4], [3, 4]] and table.report["missing_cells"] == 2


def test_filled_cells_are_inputs_not_training_targets(shared_data: Path) -> None:
    data = us_states_subset(shared_data, 200)
    imputed = np.zeros(data.series.shape, bool)
    imputed[30:34, 1] = True
    lo, hi = data.series[:100].min(0), data.series[:100].max(0)
    _, _, plain = _split_tensors(data, 20, 4, lo, hi, "train")
    _, _, masked = _split_tensors(replace(data, imputed=imputed), 20, 4, lo, hi, "train")
    # windows ending at t forecast t..t+3: target week 30..33 of region 1 drops out of 1..4 windows' steps
    assert plain.sum() - masked.sum() == 16 and masked[:, :, 0].sum() == plain[:, :, 0].sum()
    ends = np.arange(20, 100)[np.arange(20, 100) - 20 >= 0]
    assert masked[list(ends).index(30), 0, 1] == 0 and masked[list(ends).index(30), 0, 0] == 1


def test_filled_cells_are_never_scored(shared_data: Path, tmp_path: Path) -> None:
    """The last period is only ever a truth: scores of a series whose last period is marked filled do
    not move when that period's values do; unmarked, they would."""
    data = us_states_subset(shared_data, 200)
    imputed = np.zeros(data.series.shape, bool)
    imputed[-1] = True
    wild = data.series.copy()
    wild[-1] *= 10
    a = run_backtest(data=replace(data, imputed=imputed), config=CFG, fixed_split=True, cache_dir=tmp_path)
    b = run_backtest(data=replace(data, series=wild, imputed=imputed), config=CFG, fixed_split=True,
                     cache_dir=tmp_path)
    c = run_backtest(data=replace(data, series=wild), config=CFG, fixed_split=True, cache_dir=tmp_path)
    for name in ("healthai", "healthai_stacked", "last_value"):
        assert a["models"][name]["1"]["rmse"] == pytest.approx(b["models"][name]["1"]["rmse"])
        assert a["models"][name]["4"]["wis"] == pytest.approx(b["models"][name]["4"]["wis"])
        assert c["models"][name]["1"]["rmse"] != pytest.approx(b["models"][name]["1"]["rmse"])
    result = train_forecaster(data=replace(data, imputed=imputed), config=CFG)
    same, _ = evaluate(result.model, replace(data, series=wild, imputed=imputed), CFG.horizons)
    other, _ = evaluate(result.model, replace(data, series=wild), CFG.horizons)
    assert same["1"]["rmse"] == pytest.approx(result.metrics["test"]["1"]["rmse"])
    assert other["1"]["rmse"] != pytest.approx(same["1"]["rmse"])


def test_score_keeps_only_observed_cells() -> None:
    rng = np.random.default_rng(0)
    levels = np.asarray(FLUSIGHT_QUANTILES)
    y = rng.uniform(0, 10, (6, 3))
    q = np.sort(rng.uniform(0, 10, (6, 3, len(levels))), axis=-1)
    observed = rng.random((6, 3)) > 0.3
    full = score(y[observed][:, None], q[observed][:, None], levels, q[observed][:, None, 11])
    assert score(y, q, levels, q[..., 11], observed) == pytest.approx(full)


def test_cli_trains_with_interpolate_and_says_what_it_filled(shared_data: Path, tmp_path: Path,
                                                            capsys) -> None:
    data = us_states_subset(shared_data, 200)
    periods = pd.date_range("2012-01-02", periods=200, freq="7D")
    frame = pd.DataFrame(data.series, columns=["MA", "NH", "VT"]).astype(object)
    frame.insert(0, "period", [str(p.date()) for p in periods])
    frame.loc[50:53, "NH"] = "X"  # a month NH did not report
    frame = frame.drop(index=120)  # a week nobody sent
    series = tmp_path / "ne.csv"
    frame.to_csv(series, index=False)
    graph = _write(tmp_path, "source,target\nMA,NH\nNH,VT\nMA,VT\n", "g.csv")
    base = ["train", "forecast", "--series", str(series), "--graph", str(graph), "--epochs", "1",
            "--hidden", "4", "--no-stack", "--runs-dir", str(tmp_path / "runs")]
    assert _run(base) == 2
    assert "row 52, column 'NH': count 'X'" in capsys.readouterr().out
    assert _run([*base, "--missing", "interpolate"]) == 0
    out, err = capsys.readouterr()
    assert "missing: 7 cells (1.2%) filled in time" in err
    run_dir = Path(json.loads(out.strip().splitlines()[-1])["run_dir"])
    report = json.loads((run_dir / "metrics.json").read_text())["data"]
    assert report["missing_cells"] == 7 and report["missing_by_region"] == {"NH": 5, "MA": 1, "VT": 1}
    with pytest.raises(TrainingInputError, match="--missing is for --series files") as e:
        cli_args = argparse.ArgumentParser(prog="healthai")
        cli.register(cli_args.add_subparsers(dest="command", required=True))
        from healthai_training.cli_forecast import user_data

        user_data(cli_args.parse_args(["train", "forecast", "--from-store", str(tmp_path / "store"),
                                       "--graph", str(graph), "--missing", "interpolate"]))
    assert e.value.field == "missing"


def test_load_files_carries_the_mask_only_when_something_was_filled(tmp_path: Path) -> None:
    graph = _write(tmp_path, "source,target\nA,B\n", "g.csv")
    filled = load_files(series=_write(tmp_path, GAPS), graph=graph, missing="interpolate")
    assert filled.imputed is not None and int(filled.imputed.sum()) == 6
    whole = _write(tmp_path, "period,A,B\n2020-01-06,1,2\n2020-01-13,2,3\n", "w.csv")
    assert load_files(series=whole, graph=graph, missing="interpolate").imputed is None


def test_no_stack_weight_or_band_is_fitted_to_a_filled_cell(shared_data: Path) -> None:
    from healthai_training.forecast.backtest import observed_only
    from healthai_training.forecast.stacking import FitSet, fit_stack

    data = us_states_subset(shared_data, 200)
    imputed = np.zeros(data.series.shape, bool)
    imputed[60:70, 2] = True
    rng = np.random.default_rng(1)
    levels = np.asarray(FLUSIGHT_QUANTILES)

    def sets(wild: float) -> list[FitSet]:
        out = []
        for start in (40, 92, 144):
            y = data.series[start:start + 52].copy()
            y[imputed[start:start + 52]] *= wild  # the filled cells' "truth" is whatever was filled in
            points = {n: y * rng.uniform(0.8, 1.2, y.shape) for n in ("healthai", "last_value", "lag52")}
            out.append(FitSet(points, y, start, start + 52))
        return out

    masked = replace(data, imputed=imputed)
    rng = np.random.default_rng(1)
    a = fit_stack([observed_only(masked, s) for s in sets(1.0)], ["healthai", "last_value", "lag52"], levels)
    rng = np.random.default_rng(1)
    b = fit_stack([observed_only(masked, s) for s in sets(50.0)], ["healthai", "last_value", "lag52"], levels)
    np.testing.assert_allclose(a.weights, b.weights)
    np.testing.assert_allclose(a.offsets, b.offsets)
    assert observed_only(masked, sets(1.0)[0]).y.shape == (52 * 3 - 10,)  # weeks 60-69 of region 2
    assert observed_only(masked, sets(1.0)[1]).y.shape == (52, 3)  # nothing filled there: unchanged
    rng = np.random.default_rng(1)
    unmasked = fit_stack(sets(50.0), ["healthai", "last_value", "lag52"], levels)
    assert not np.allclose(unmasked.offsets, b.offsets)  # the filled cells would have moved the bands


def test_step_d_on_a_weekly_series_is_refused_not_interpolated(tmp_path: Path) -> None:
    path = tmp_path / "weekly.csv"
    weeks = pd.date_range("2024-01-01", periods=20, freq="7D")
    path.write_text("period,a\n" + "".join(f"{d.date()},{10 + i}\n" for i, d in enumerate(weeks)))
    for missing in ("refuse", "interpolate"):  # the advice to interpolate would invent 6 days in 7
        with pytest.raises(InputFileError, match=r"this is a weekly series; train it with --step W"):
            read_series(path, step="D", missing=missing)
