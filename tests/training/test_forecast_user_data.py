"""`healthai train forecast --series FILE --graph FILE`: the user's files (CSV/Parquet, long/wide, ISO
dates/weeks/epiweeks, edge list/square adjacency/GeoJSON), every validation error, and a CLI run on
real US-states counts with ISO 3166-2 ids that writes a run folder, card, ONNX export and --json."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from healthai.errors import InputFileError
from healthai.surveillance.series_file import mmwr_week_start, read_series
from healthai_training import cli
from healthai_training.epi.data import US_STATES, EpiData
from healthai_training.epi.user_data import load_files, load_store
from healthai_training.errors import TrainingInputError
from healthai_training.runs import _week_start

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")
NEW_ENGLAND = {
    "Connecticut": "US-CT",
    "Maine": "US-ME",
    "Massachusetts": "US-MA",
    "New_Hampshire": "US-NH",
    "Rhode_Island": "US-RI",
    "Vermont": "US-VT",
}
BORDERS = [
    ("US-CT", "US-MA"),
    ("US-CT", "US-RI"),
    ("US-MA", "US-RI"),
    ("US-MA", "US-NH"),
    ("US-MA", "US-VT"),
    ("US-NH", "US-VT"),
    ("US-NH", "US-ME"),
]  # real land borders


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="healthai")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


@pytest.fixture(scope="module")
def new_england(shared_data: Path) -> pd.DataFrame:
    """Real weekly ILI counts of the six New England states (US-states data), ISO ids, weekly dates."""
    x = np.loadtxt(shared_data / "epi/us_states/state360.txt", delimiter=",")
    cols = [US_STATES.index(s) for s in NEW_ENGLAND]
    periods = pd.date_range("2010-01-04", periods=x.shape[0], freq="7D")
    return pd.DataFrame(x[:, cols], index=periods, columns=list(NEW_ENGLAND.values()))


def _long_csv(frame: pd.DataFrame, path: Path, period_format=lambda p: p.date().isoformat()) -> Path:
    rows = [(r, period_format(p), f"{frame.loc[p, r]:g}") for p in frame.index for r in frame.columns]
    pd.DataFrame(rows, columns=["region", "period", "count"]).to_csv(path, index=False)
    return path


def _edges(path: Path, edges=BORDERS) -> Path:
    pd.DataFrame(edges, columns=["source", "target"]).to_csv(path, index=False)
    return path


def test_long_and_wide_files_read_the_same(new_england: pd.DataFrame, tmp_path: Path) -> None:
    long = load_files(series=_long_csv(new_england, tmp_path / "s.csv"), graph=_edges(tmp_path / "g.csv"))
    wide_path = tmp_path / "s.parquet"
    new_england.rename_axis("period").reset_index().assign(
        period=lambda d: d["period"].dt.strftime("%Y-%m-%d")
    ).to_parquet(wide_path)
    ids = list(new_england.columns)
    square = pd.DataFrame(np.zeros((6, 6)), columns=ids)
    for a, b in BORDERS:
        square.loc[ids.index(a), b] = square.loc[ids.index(b), a] = 1
    square.insert(0, "region", ids)
    square.to_csv(tmp_path / "adj.csv", index=False)
    wide = load_files(series=wide_path, graph=tmp_path / "adj.csv")
    assert long.step == wide.step == "W" and long.season == 52
    order = [wide.region_ids.index(r) for r in long.region_ids]
    np.testing.assert_array_equal(long.series, wide.series[:, order])
    np.testing.assert_array_equal(long.adjacency, wide.adjacency[np.ix_(order, order)])
    ma, nh = long.region_ids.index("US-MA"), long.region_ids.index("US-NH")
    assert long.adjacency[ma, nh] == 1 and long.adjacency[ma, long.region_ids.index("US-ME")] == 0
    assert long.report["graph"]["edges"] == len(BORDERS) and long.report["layout"] == "long"


def test_epiweeks_iso_weeks_and_daily_steps(tmp_path: Path) -> None:
    assert mmwr_week_start(2019, 1).isoformat() == "2018-12-30"  # CDC: week 1 of 2019 starts Sun 30 Dec
    assert mmwr_week_start(2015, 53).isoformat() == "2016-01-03"  # 2015 has 53 MMWR weeks
    epi = pd.DataFrame({"period": [201852, 201901, 201902], "a": [1, 2, 3]})
    epi.to_csv(tmp_path / "e.csv", index=False)
    assert list(read_series(tmp_path / "e.csv").periods.strftime("%Y-%m-%d")) == [
        "2018-12-23",
        "2018-12-30",
        "2019-01-06",
    ]
    pd.DataFrame({"period": ["2020-W53", "2021-W01"], "a": [1, 2]}).to_csv(tmp_path / "i.csv", index=False)
    assert read_series(tmp_path / "i.csv").periods[1] == pd.Timestamp("2021-01-04")
    pd.DataFrame({"period": ["2021-01-01", "2021-01-02"], "a": [1, 2]}).to_csv(
        tmp_path / "d.csv", index=False
    )
    assert read_series(tmp_path / "d.csv").step == "D"


def test_a_model_of_mmwr_weeks_says_its_weeks_start_on_sunday() -> None:
    """Trained on CDC epiweeks, a model's card says so, and ``Forecast --stored`` counts Sunday weeks."""
    def data(periods: list[str], step: str = "W") -> EpiData:
        return EpiData(name="x", series=np.zeros((len(periods), 1)), adjacency=np.zeros((1, 1)),
                       region_ids=("a",), step=step, periods=tuple(periods))

    assert _week_start(data(["2018-12-23", "2018-12-30"])) == {"week_start": "sunday"}
    assert _week_start(data(["2021-01-04", "2021-01-11"])) == {"week_start": "monday"}
    assert _week_start(data(["2021-01-01", "2021-01-02"], step="D")) == {}
    assert _week_start(data([])) == {}


def test_geojson_neighbours_share_a_boundary(tmp_path: Path) -> None:
    def square(x: int, rid: str) -> dict:  # B's corners moved by 1e-9, as reprojection leaves them
        shift = 1e-9 if rid == "B" else 0.0
        ring = [[x + shift, 0], [x + 1 + shift, 0], [x + 1 + shift, 1], [x + shift, 1], [x + shift, 0]]
        return {
            "type": "Feature",
            "properties": {"code": rid, "name": rid.lower()},
            "geometry": {"type": "Polygon", "coordinates": [ring]},
        }

    (tmp_path / "g.geojson").write_text(
        json.dumps(
            {"type": "FeatureCollection", "features": [square(0, "A"), square(1, "B"), square(2, "C")]}
        )
    )
    pd.DataFrame(
        {
            "period": pd.date_range("2020-01-06", periods=4, freq="7D").strftime("%Y-%m-%d"),
            "C": 1,
            "A": 2,
            "B": 3,
        }
    ).to_csv(tmp_path / "s.csv", index=False)
    data = load_files(series=tmp_path / "s.csv", graph=tmp_path / "g.geojson")
    assert data.region_ids == ("C", "A", "B") and data.region_names == ("c", "a", "b")
    expected = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 1]])  # C–B and A–B touch; A and C do not
    np.testing.assert_array_equal(data.adjacency, expected)


def _write(tmp_path: Path, text: str, name: str = "s.csv") -> Path:
    (tmp_path / name).write_text(text)
    return tmp_path / name


@pytest.mark.parametrize(
    ("series", "graph", "kwargs", "message"),
    [
        (
            "region,period,count\na,2020-01-06,1\na,2020-01-06,2\nb,2020-01-06,1\n",
            None,
            {},
            r"rows \[2, 3\] repeat region 'a' at period 2020-01-06",
        ),
        (
            "period,a,b\n2020-01-06,1,2\n2020-01-13,1,2\n2020-01-27,1,2\n",
            None,
            {},
            "missing periods: nothing between 2020-01-13 and 2020-01-27",
        ),
        (
            "region,period,count\na,2020-01-06,1\na,2020-01-13,1\nb,2020-01-06,1\n",
            None,
            {},
            "region 'b' has no row for period 2020-01-13",
        ),
        ("period,a,b\n2020-01-06,1,\n2020-01-13,1,2\n", None, {}, r"row 2, column 'b': count '' is not"),
        (
            "period,a,b\n2020-01-06,1,-3\n2020-01-13,1,2\n",
            None,
            {},
            "1 negative counts, first -3 for region 'b' at 2020-01-06; pass --negatives clip",
        ),
        ("period,a,b\nsoon,1,2\n", None, {}, "row 2: period 'soon' is not an ISO date"),
        ("period,a,a\n2020-01-06,1,2\n", None, {}, r"the header names \['a'\] more than once"),
        ("period,a,b,c\n2020-01-06,1,2,3\n2020-01-13,1,2,3\n", None, {}, r"by a row to itself, e.g. c,c"),
        ("period,a,b\n2020-01-06,1,twelve\n", None, {}, r"'twelve' is not a finite number \(not a number"),
        (  # each distinct label is parsed once; the error names the first row that holds it
            "region,period,count\na,2020-01-06,1\nb,2020-01-06,1\na,2020-1-13,1\nb,2020-1-13,1\n",
            None,
            {},
            "row 4: period '2020-1-13' is not an ISO date",
        ),
        (
            "period,a,b\n2020-01-06,1,2\n2020-01-13,1,2\n",
            "source,target\na,c\n",
            {},
            r"1 in the graph but not the series \['c'\]",
        ),
        (
            "period,a,b,c\n2020-01-06,1,2,3\n2020-01-13,1,2,3\n",
            "source,target\na,b\nc,c\n",
            {},
            r"1 isolated regions \(no neighbour\): \['c'\]",
        ),
        (
            "period,a,b\n2020-01-06,1,2\n2020-01-13,1,2\n",
            "source,target,weight\na,b,1\nb,a,2\n",
            {},
            "edge b–a is given twice",
        ),
        (
            "period,a,b\n2020-01-06,1,2\n2020-01-13,1,2\n",
            "source,target\na,b\n",
            {"split": (0.5, 0.5, 0.5)},
            "split must be three fractions",
        ),
    ],
)
def test_bad_files_name_file_row_and_field(
    tmp_path: Path, series: str, graph: str | None, kwargs: dict, message: str
) -> None:
    g = _write(tmp_path, graph or "source,target\na,b\n", "g.csv")
    with pytest.raises(InputFileError, match=message):  # series (shared reader) or graph/settings
        load_files(series=_write(tmp_path, series), graph=g, **kwargs)


def test_negatives_clip_and_keep_are_counted(tmp_path: Path) -> None:
    s = _write(tmp_path, "period,a,b\n2020-01-06,1,-3\n2020-01-13,-1,2\n")
    g = _write(tmp_path, "source,target\na,b\n", "g.csv")
    clipped = load_files(series=s, graph=g, negatives="clip")
    assert clipped.series.min() == 0 and clipped.report["negative_counts"] == 2
    kept = load_files(series=s, graph=g, negatives="keep")
    assert kept.series[0, 1] == -3 and kept.report["negatives_kept"] is True


def test_cli_own_files_run_card_export_and_json(new_england: pd.DataFrame, tmp_path: Path, capsys,
                                                caplog: pytest.LogCaptureFixture) -> None:
    series = _long_csv(new_england, tmp_path / "ne.csv")
    argv = [
        "train",
        "forecast",
        "--series",
        str(series),
        "--graph",
        str(_edges(tmp_path / "ne_edges.csv")),
        "--split",
        "0.6,0.2,0.2",
        "--scaling",
        "global",
        "--epochs",
        "2",
        "--hidden",
        "8",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--export-to",
        str(tmp_path / "repo"),
        "--json",
        str(tmp_path / "out.json"),
        "--variants",
        "custom",
    ]
    assert _run(argv) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    progress = [r.getMessage() for r in caplog.records if r.name.startswith("healthai_training")]
    assert "origin 104: trained" in " ".join(progress)  # a long run says what it is doing
    assert any(m.startswith("exported forecast_ne to the run folder as v1") for m in progress), progress
    # no --model-name: named after the series file, never after the benchmark --dataset default
    assert Path(line["run_dir"]).name.startswith("forecast-ne-seasonal-nonprivate-seed0-stacked")
    assert not (tmp_path / "repo/forecast_japan").exists()
    version = tmp_path / "repo/forecast_ne/1"
    card = json.loads((version / "model_card.json").read_text())
    graph = json.loads((version / "graph.json").read_text())
    assert graph["region_ids"] == sorted(NEW_ENGLAND.values())
    # the stacked default: its window holds the 2-season mean (2 × 52 + 2), its weights came from the
    # rolling origins before the test split (0.8 × 360 = 288)
    assert card["step"] == "W" and card["season_length"] == 52 and card["window"] == 106
    assert card["week_start"] == "monday"  # the series' weeks: Forecast --stored counts the same weeks
    assert card["stack"]["rolling_origins"] == [104, 156, 208, 260]
    assert card["split"]["fractions"] == [0.6, 0.2, 0.2] and card["split"]["test_weeks"][0] == int(0.8 * 360)
    assert card["data"]["graph"]["edges"] == len(BORDERS) and card["data"]["negative_counts"] == 0
    assert card["training"]["scaling"] == "global" and (version / "model.onnx").is_file()
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["horizons"] == [2, 3, 5, 10, 15]
    assert set(out["models"]) >= {
        "healthai",
        "lag52",
        "seasonal_mean_2x5",
        "last_value",
        "seasonal_naive_drift",
    }
    assert out["models"]["healthai"]["rmse"] == [line["rmse"][str(h)] for h in out["horizons"]]
    assert all(0 <= c <= 1 for c in out["models"]["healthai"]["coverage_95"])
    assert all(-1 <= r <= 1 for m in out["models"].values() for r in m["pcc"])
    metrics = json.loads((Path(line["run_dir"]) / "metrics.json").read_text())
    assert metrics["data"]["series"]["sha256"] and metrics["test"]["2"]["baselines"]["last_value"]["rmse"] > 0


def _train_argv(series: Path, edges: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["train", "forecast", "--series", str(series), "--graph", str(edges), "--epochs", "1",
            "--runs-dir", str(tmp_path / "runs"), *extra]


def test_cli_refuses_short_series_and_graph_without_series(
    new_england: pd.DataFrame, tmp_path: Path, capsys
) -> None:
    edges = _edges(tmp_path / "e.csv")
    # 60 weeks: the training split (30) cannot even hold a 20-week window + 15 steps
    shortest = _long_csv(new_england.iloc[:60], tmp_path / "shortest.csv")
    assert _run(_train_argv(shortest, edges, tmp_path)) == 2
    assert "series of 60 periods is too short" in capsys.readouterr().out
    # 100 weeks hold a 20-week window but not a seasonal one (54 + 15): asked for, it is refused
    short = _long_csv(new_england.iloc[:100], tmp_path / "short.csv")
    assert _run(_train_argv(short, edges, tmp_path, "--mode", "seasonal")) == 2
    assert "series of 100 periods is too short" in capsys.readouterr().out
    assert _run(["train", "forecast", "--graph", str(edges), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "--graph needs --series or --from-store" in capsys.readouterr().out
    # a season shorter than the horizon + 2 (a weekly pattern asked of the seasonal members): refused
    for command in ("forecast", "backtest"):
        argv = _train_argv(shortest, edges, tmp_path, "--season-length", "7")
        argv[1] = command
        assert _run(argv) == 2
        assert "season length must be >= 17 periods (the 15-period horizon + 2" in capsys.readouterr().out
    # outputs that could not be written are refused before training, not after it
    missing = tmp_path / "no" / "such" / "m.json"
    assert _run(_train_argv(shortest, edges, tmp_path, "--json", str(missing))) == 2
    assert f"--json {missing}: the folder {missing.parent} does not exist" in capsys.readouterr().out
    for name in ("../escaped", "my model", ".hidden"):
        assert _run(_train_argv(shortest, edges, tmp_path, "--model-name", name)) == 2
        assert f"--model-name {name!r}: a model name is one folder name" in capsys.readouterr().out


def test_default_mode_is_the_window_below_two_seasons_of_seasonal_windows(
    new_england: pd.DataFrame, tmp_path: Path, capsys
) -> None:
    edges = _edges(tmp_path / "e.csv")
    short = _long_csv(new_england.iloc[:100], tmp_path / "short.csv")
    assert _run(_train_argv(short, edges, tmp_path, "--no-stack")) == 0
    out, err = capsys.readouterr()
    assert "mode: window20 (the training split (50 periods) holds 0 seasonal training windows" in err
    metrics = json.loads((Path(json.loads(out.splitlines()[-1])["run_dir"]) / "metrics.json").read_text())
    assert metrics["mode"] == "window20" and metrics["window"] == 20
    chosen = metrics["data"]["mode"]
    assert chosen["mode"] == "window20"
    assert "(54 + 15 periods each), fewer than 2 seasons of 52" in chosen["why"]
    # the threshold: two seasons of seasonal windows, 54 + 15 - 1 + 2 x 52 = 172 training weeks
    args = argparse.Namespace(series=short, from_store=None, graph=edges, step=None, season_length=None,
                              split=None, negatives="refuse", allow_isolated=False, graph_id_property=None)
    data = cli.user_data(args)
    assert cli.resolve_mode("window20", data, {}) == "window20" and "mode" not in data.report
    for weeks, mode in ((342, "window20"), (344, "seasonal")):  # training split 171 / 172 weeks
        series = _long_csv(new_england.iloc[:weeks], tmp_path / f"s{weeks}.csv")
        data = cli.user_data(argparse.Namespace(**{**vars(args), "series": series}))
        assert cli.resolve_mode(None, data, {}) == mode, weeks
    assert data.report["mode"] == {"mode": "seasonal", "why": "default"}


def test_daily_series_with_kept_negatives_trains_on_a_364_day_season(tmp_path: Path) -> None:
    from healthai_training.forecast.train import ForecastConfig, train_forecaster

    rng = np.random.default_rng(3)
    days = pd.date_range("2019-01-01", periods=800, freq="D")
    t = np.arange(800)[:, None]
    counts = rng.poisson(10 + 8 * np.cos(2 * np.pi * t / 365.25 + np.array([0.0, 0.5, 1.0]))).astype(float)
    counts[[100, 400], [0, 2]] = -2  # reporting corrections
    frame = pd.DataFrame(counts, columns=["x", "y", "z"]).assign(period=days.strftime("%Y-%m-%d"))
    frame.to_csv(tmp_path / "daily.csv", index=False)
    graph = _write(tmp_path, "source,target\nx,y\ny,z\n", "g.csv")
    data = load_files(series=tmp_path / "daily.csv", graph=graph, negatives="keep")
    assert (data.step, data.season, data.report["negative_counts"]) == ("D", 364, 2)
    cfg = ForecastConfig(seasonal=True, season=364, steps=7, horizons=(1, 7), epochs=1, hidden=4)
    result = train_forecaster(data=data, config=cfg)
    assert result.model.window == 366 and result.model.season == 364
    assert set(result.metrics["test"]["7"]["baselines"]) >= {"last_value", "lag52", "seasonal_naive_drift"}


def test_from_store_refuses_a_missing_directory_instead_of_creating_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-store"
    graph = tmp_path / "graph.csv"
    graph.write_text("source,target\nUS-MA,US-NH\n")  # the graph is read first: it needs no data
    with pytest.raises(TrainingInputError, match="no such directory"):
        load_store(str(missing), graph=graph, syndrome="ili")
    assert not missing.exists()  # a typo never leaves an empty store behind


def test_a_served_models_graph_json_is_a_graph_file(tmp_path: Path, shared_data: Path) -> None:
    """A forecaster's exported graph.json trains the next one: the same neighbours as the adjacency it
    was built from (the shipped US-states model and its data set's ``state-adj.txt``)."""
    from healthai.surveillance.graph_file import read_graph

    exported = Path(__file__).parents[2] / "server/healthai/data/models/forecast_us_states/1/graph.json"
    ids = tuple(json.loads(exported.read_text())["region_ids"])
    got = read_graph(exported, region_ids=ids, allow_isolated=True)  # Alaska, Hawaii
    assert got.region_ids == ids and got.report["format"] == "graph.json"
    adjacency = np.loadtxt(shared_data / "epi/us_states/state-adj.txt", delimiter=",")
    np.testing.assert_array_equal(got.adjacency > 0, (adjacency + np.eye(len(ids))) > 0)
    broken = tmp_path / "graph.json"
    broken.write_text(json.dumps({"region_ids": ["a", "b"], "indptr": [0, 1], "indices": [0]}))
    with pytest.raises(InputFileError, match="indptr / indices do not describe 2 regions"):
        read_graph(broken, region_ids=("a", "b"))
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(InputFileError, match="neither a GeoJSON FeatureCollection"):
        read_graph(tmp_path / "other.json", region_ids=("a", "b"))
