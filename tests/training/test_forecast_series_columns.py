"""A long series file with its own column names (``--columns``) and hubverse time-series target data
(``location, target_end_date, observation``; ``target`` and ``as_of`` columns) as ``--series``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from healthai.errors import InputFileError
from healthai.surveillance.series_file import read_series
from healthai_client import read_history
from healthai_training import cli
from tests.training.epi_subsets import us_states_subset

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")


def _hubverse(tmp_path: Path, weeks: int = 4) -> Path:
    """Two targets for two FIPS locations; week 2 of the admissions was revised in a later version."""
    rows = ["as_of,location,target,target_end_date,observation"]
    for w in range(weeks):
        day = str((pd.Timestamp("2024-10-05") + pd.Timedelta(weeks=w)).date())
        for loc, base in (("01", 10), ("06", 100)):
            rows.append(f"2024-11-02,{loc},wk inc flu hosp,{day},{base + w}")
            rows.append(f"2024-11-02,{loc},wk flu hosp rate,{day},{(base + w) / 100}")
    rows.append("2024-10-26,01,wk inc flu hosp,2024-10-12,7")  # an older version of week 2, superseded
    (tmp_path / "time-series.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "time-series.csv"


def test_hubverse_target_data_needs_a_target_and_keeps_the_latest_version(tmp_path: Path) -> None:
    path = _hubverse(tmp_path)
    targets = r"holds 2 targets \['wk flu hosp rate', 'wk inc flu hosp'\]"
    with pytest.raises(InputFileError, match=targets) as e:
        read_series(path)
    assert e.value.field == "target"
    table = read_series(path, target="wk inc flu hosp")
    assert table.region_ids == ("01", "06")  # FIPS codes keep their leading zero
    np.testing.assert_array_equal(table.values, [[10, 100], [11, 101], [12, 102], [13, 103]])
    r = table.report
    assert r["layout"] == "hubverse time series" and r["target"] == "wk inc flu hosp"
    assert r["as_of"] == {"versions": 2, "latest": "2024-11-02", "rows_superseded": 1}
    assert r["columns"] == {"region": "location", "period": "target_end_date", "count": "observation"}
    # hubs date a week by its last day (Saturday, MMWR): the series' periods are week starts (Sunday)
    assert str(table.periods[0].date()) == "2024-09-29" and table.periods[0].day_name() == "Sunday"
    with pytest.raises(InputFileError, match="no target 'deaths'"):
        read_series(path, target="deaths")


def test_own_column_names_ignore_the_rest_and_name_what_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("geo,name,week,cases\nA,Alpha,2020-01-06,1\nB,Beta,2020-01-06,2\n"
                    "A,Alpha,2020-01-13,3\nB,Beta,2020-01-13,oops\n")
    with pytest.raises(InputFileError, match="--columns REGION,PERIOD,COUNT names your own"):
        read_series(path)
    with pytest.raises(InputFileError, match=r"row 5, column cases: count 'oops'"):  # the file's own row
        read_series(path, columns=("geo", "week", "cases"))
    path.write_text(path.read_text().replace("oops", "4"))
    table = read_series(path, columns=("geo", "week", "cases"))
    assert table.values.tolist() == [[1, 2], [3, 4]] and table.report["ignored_columns"] == ["name"]
    with pytest.raises(InputFileError, match="no column 'day'") as e:
        read_series(path, columns=("geo", "day", "cases"))
    assert e.value.field == "columns"
    ours = tmp_path / "ours.csv"
    ours.write_text("region,period,count,note\nA,2020-01-06,1,x\n")
    with pytest.raises(InputFileError, match=r"also got \['note'\] \(--columns"):
        read_series(ours)
    wide = tmp_path / "wide.csv"
    wide.write_text("period,A\n2020-01-06,1\n2020-01-13,2\n")
    with pytest.raises(InputFileError, match="--target chooses a series of a long file") as e:
        read_series(wide, target="x")
    assert e.value.field == "target"
    with pytest.raises(InputFileError, match="a headerless matrix has none"):
        read_series(tmp_path / "m.txt", start="2020-01-06", step="W", columns=("a", "b", "c"))


def test_the_client_sends_hubverse_target_data_as_history(tmp_path: Path) -> None:
    path = _hubverse(tmp_path)
    with pytest.raises(ValueError, match="choose one with --target"):
        read_history(path)
    sent = read_history(path, target="wk flu hosp rate")
    assert sent.region_ids == ("01", "06") and sent.last_period.isoformat() == "2024-10-20"  # W43's Sunday
    np.testing.assert_allclose(sent.counts[:, 1], [1.0, 1.01, 1.02, 1.03])


def test_cli_trains_on_hubverse_target_data(shared_data: Path, tmp_path: Path, capsys) -> None:
    data = us_states_subset(shared_data, 160)
    fips = ("25", "33", "50")  # Massachusetts, New Hampshire, Vermont
    days = pd.date_range("2015-10-10", periods=160, freq="7D")
    frame = pd.DataFrame([(str(d.date()), f, "wk inc flu hosp", data.series[t, j])
                          for t, d in enumerate(days) for j, f in enumerate(fips)],
                         columns=["target_end_date", "location", "target", "observation"])
    frame["location_name"] = frame["location"].map(dict(zip(fips, ("MA", "NH", "VT"), strict=True)))
    series = tmp_path / "target-data.parquet"
    frame.to_parquet(series)
    graph = tmp_path / "g.csv"
    graph.write_text("source,target\n25,33\n33,50\n25,50\n")
    parser = argparse.ArgumentParser(prog="healthai")
    cli.register(parser.add_subparsers(dest="command", required=True))
    argv = ["train", "forecast", "--series", str(series), "--graph", str(graph), "--epochs", "1", "--hidden",
            "4", "--no-stack", "--runs-dir", str(tmp_path / "runs")]
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    run_dir = Path(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_dir"])
    report = json.loads((run_dir / "metrics.json").read_text())["data"]
    assert report["layout"] == "hubverse time series" and report["target"] == "wk inc flu hosp"
    assert report["ignored_columns"] == ["location_name"] and report["periods"] == 160
    card = json.loads(next(run_dir.glob("models/*/1/model_card.json")).read_text())
    assert card["week_start"] == "sunday"  # Saturday week ends: MMWR weeks, as --stored counts them
    args = parser.parse_args([*argv, "--columns", "location,target_end_date"])
    assert args.func(args) == 2
    assert "columns takes three distinct names" in capsys.readouterr().out
