"""Built-in region graphs (``--graph us-states`` / ``us-counties``) from the shipped Census 2024 county
adjacency, cut down to the series' regions."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from healthai.errors import InputFileError
from healthai.surveillance.builtin_graphs import ADJACENCY_FILE
from healthai.surveillance.graph_file import graph_region_ids, read_graph
from healthai_training import cli
from tests.training.epi_subsets import us_states_subset

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")
NEW_ENGLAND = ("ME", "NH", "VT", "MA", "RI", "CT")
BORDERS = {("ME", "NH"), ("NH", "VT"), ("NH", "MA"), ("VT", "MA"), ("MA", "RI"), ("MA", "CT"), ("RI", "CT")}
FIPS = {"ME": "23", "NH": "33", "VT": "50", "MA": "25", "RI": "44", "CT": "09"}


def _pairs(adjacency: np.ndarray, ids: tuple[str, ...]) -> set[tuple[str, str]]:
    return {(ids[i], ids[j]) for i, j in zip(*np.nonzero(np.triu(adjacency, 1)), strict=True)}


def test_us_states_are_new_englands_borders_by_usps_or_fips_code() -> None:
    g = read_graph("us-states", region_ids=NEW_ENGLAND)
    assert _pairs(g.adjacency, NEW_ENGLAND) == {tuple(sorted(p, key=NEW_ENGLAND.index)) for p in BORDERS}
    assert g.region_names == NEW_ENGLAND and g.report["format"].startswith("built-in us-states")
    fips = tuple(FIPS[s] for s in NEW_ENGLAND)
    np.testing.assert_array_equal(read_graph("us-states", region_ids=fips).adjacency, g.adjacency)


def test_us_counties_cut_down_to_rhode_island() -> None:
    ids = ("44001", "44003", "44005", "44007", "44009")  # Bristol, Kent, Newport, Providence, Washington
    g = read_graph("us-counties", region_ids=ids)
    pairs = _pairs(g.adjacency, ids)
    assert {("44003", "44007"), ("44003", "44009")} <= pairs  # Kent borders Providence and Washington
    assert ("44005", "44007") not in pairs and ("44001", "44009") not in pairs
    assert g.region_names[3] == "Providence County, RI"


def test_what_the_graph_does_not_know_or_cannot_join_is_refused() -> None:
    unknown = r"1 in the series but not the graph \['US'\].*a national total"
    with pytest.raises(InputFileError, match=unknown) as e:
        read_graph("us-states", region_ids=("MA", "NH", "US"))
    assert e.value.field == "graph"
    with pytest.raises(InputFileError, match="5-digit county FIPS codes"):
        read_graph("us-counties", region_ids=("25", "33"))
    with pytest.raises(InputFileError, match=r"isolated regions \(no neighbour\): \['AK'\]"):
        read_graph("us-states", region_ids=("AK", "WA", "OR"))
    allowed = read_graph("us-states", region_ids=("AK", "WA", "OR"), allow_isolated=True)
    assert allowed.report["isolated"] == ["AK"]
    with pytest.raises(InputFileError, match="spans the country"):
        graph_region_ids("us-states")


def test_cli_trains_fips_states_on_the_built_in_graph(shared_data: Path, tmp_path: Path, capsys) -> None:
    data = us_states_subset(shared_data, 160)  # Massachusetts, New Hampshire, Vermont
    frame = pd.DataFrame(data.series, columns=["25", "33", "50"])
    frame.insert(0, "period", [str(d.date()) for d in pd.date_range("2015-10-05", periods=160, freq="7D")])
    frame.to_csv(tmp_path / "states.csv", index=False)
    parser = argparse.ArgumentParser(prog="healthai")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["train", "forecast", "--series", str(tmp_path / "states.csv"), "--graph",
                              "us-states", "--epochs", "1", "--hidden", "4", "--no-stack", "--runs-dir",
                              str(tmp_path / "runs")])
    assert args.func(args) == 0
    run_dir = Path(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_dir"])
    graph = json.loads((run_dir / "metrics.json").read_text())["data"]["graph"]
    assert graph["format"] == "built-in us-states (Census 2024 county adjacency)" and graph["edges"] == 3
    assert graph["sha256"] == hashlib.sha256(ADJACENCY_FILE.read_bytes()).hexdigest()


def test_a_national_total_beside_its_states_is_left_out_by_name(shared_data: Path, tmp_path: Path) -> None:
    """FluSight-style target data: three states and the US total, on the built-in state graph."""
    from healthai_training.epi.user_data import load_files

    data = us_states_subset(shared_data, 60)
    days = pd.date_range("2023-10-07", periods=60, freq="7D")
    states = ("25", "33", "50")
    rows = [(str(d.date()), f, data.series[t, j]) for t, d in enumerate(days) for j, f in enumerate(states)]
    rows += [(str(d.date()), "US", data.series[t].sum()) for t, d in enumerate(days)]
    series = tmp_path / "target-data.csv"
    pd.DataFrame(rows, columns=["date", "location", "observation"]).to_csv(series, index=False)
    with pytest.raises(InputFileError, match=r"\['US'\].*a national total is no region"):
        load_files(series=series, graph="us-states")
    got = load_files(series=series, graph="us-states", exclude=("US",))
    assert got.region_ids == ("25", "33", "50") and got.report["excluded_regions"] == ["US"]
    assert got.region_names == ("MA", "NH", "VT")
    np.testing.assert_array_equal(got.series, data.series)
    with pytest.raises(InputFileError, match=r"--exclude-regions names \['72'\]") as e:
        load_files(series=series, graph="us-states", exclude=("US", "72"))
    assert e.value.field == "exclude_regions"
