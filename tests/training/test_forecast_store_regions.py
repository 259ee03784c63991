"""`healthai train forecast --from-store`: which regions the model gets. A graph file names them, and
cases of patients living elsewhere are left out and counted; a built-in graph (``us-states``,
``us-counties``) takes the regions the store counted, or those of ``--region-ids``; ``--exclude-regions``
leaves some out. Real FHIR bundles (the loop test's) normalized into a real Parquet store."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from healthai_training import cli
from healthai_training.cli_forecast import user_data
from healthai_training.epi.user_data import load_store
from healthai_training.errors import TrainingInputError
from tests.training.test_forecast_loop import EDGES, REGIONS, WEEKS, normalized_store, weekly_cases

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")
VISITORS = ("US-RI", range(0, WEEKS, 20))  # a few cases of Rhode Island residents, every 20th week


@pytest.fixture(scope="module")
def store_and_graph(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("regions")
    visitors = np.zeros(WEEKS)
    visitors[list(VISITORS[1])] = 1
    return normalized_store(root, {**dict(zip(REGIONS.values(), weekly_cases().T, strict=True)),
                                   VISITORS[0]: visitors})


def test_a_graph_file_names_the_regions_and_cases_elsewhere_are_counted_out(store_and_graph, capsys) -> None:
    store, graph = store_and_graph
    data = load_store(str(store), graph=graph)
    assert data.region_ids == tuple(REGIONS.values())
    outside = data.report["store"]["outside_regions"]
    assert outside == {"regions": 1, "cases": len(VISITORS[1]), "examples": ["US-RI"]}
    assert f"{len(VISITORS[1])} ili cases in 1 region outside the model's 4 left out (e.g. US-RI)" in (
        capsys.readouterr().err)
    np.testing.assert_array_equal(data.series, weekly_cases())  # a case per patient and day: the cases


def test_a_graph_region_without_stored_cases_is_refused_or_left_out_by_name(store_and_graph,
                                                                           tmp_path: Path) -> None:
    store, _ = store_and_graph
    graph = tmp_path / "with-ct.csv"
    with graph.open("w", newline="") as f:
        csv.writer(f).writerows([("source", "target"), *EDGES, ("US-MA", "US-CT")])
    with pytest.raises(TrainingInputError, match=r"1 of the model's 5 regions have no stored case at all "
                                                 r"\['US-CT'\].*--exclude-regions") as e:
        load_store(str(store), graph=graph)
    assert e.value.field == "graph"
    data = load_store(str(store), graph=graph, exclude=("US-CT",))
    assert data.region_ids == tuple(REGIONS.values()) and data.report["excluded_regions"] == ["US-CT"]
    assert int(data.adjacency.sum()) == 2 * len(EDGES)  # the file's other edges, both ways
    with pytest.raises(TrainingInputError, match=r"--exclude-regions names \['US-TX'\]"):
        load_store(str(store), graph=graph, exclude=("US-TX",))


def test_the_built_in_state_graph_takes_the_store_regions_with_their_real_borders(store_and_graph,
                                                                                tmp_path) -> None:
    store, graph = store_and_graph
    every = load_store(str(store), graph="us-states")
    assert every.region_ids == tuple(sorted([*REGIONS.values(), "US-RI"]))
    assert every.report["store"]["outside_regions"]["cases"] == 0
    assert every.region_names == ("MA", "ME", "NH", "RI", "VT")
    four = load_store(str(store), graph="us-states", exclude=("US-RI",))
    by_file = load_store(str(store), graph=graph)
    order = [four.region_ids.index(r) for r in by_file.region_ids]
    borders = four.adjacency[np.ix_(order, order)] - np.eye(4)  # the built-in graph lists self loops
    np.testing.assert_array_equal(borders, by_file.adjacency)  # the real borders are the loop test's edges
    np.testing.assert_array_equal(four.series[:, order], by_file.series)
    named = tmp_path / "regions.txt"
    named.write_text("US-VT\nUS-NH\nUS-ME\n")
    picked = load_store(str(store), graph="us-states", region_ids=named)
    assert picked.region_ids == ("US-VT", "US-NH", "US-ME")
    massachusetts = int(weekly_cases()[:, 0].sum())
    assert picked.report["store"]["outside_regions"] == {
        "regions": 2, "cases": massachusetts + len(VISITORS[1]), "examples": ["US-MA", "US-RI"]}
    named.write_text("US-VT\nUS-CT\n")
    with pytest.raises(TrainingInputError, match=r"no stored case at all \['US-CT'\]"):
        load_store(str(store), graph="us-states", region_ids=named)


def test_private_counts_on_a_built_in_graph_need_the_regions_named(store_and_graph) -> None:
    store, _ = store_and_graph
    parser = argparse.ArgumentParser(prog="healthai")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["train", "forecast", "--from-store", str(store), "--graph", "us-states",
                              "--count-epsilon", "1", "--count-start", "2021-01-04"])
    with pytest.raises(TrainingInputError, match="needs --region-ids FILE") as e:
        user_data(args)
    assert e.value.field == "region_ids"


def test_cli_trains_and_exports_a_model_on_the_store_regions(store_and_graph, tmp_path, capsys) -> None:
    store, _ = store_and_graph
    repo = tmp_path / "models"
    repo.mkdir()
    parser = argparse.ArgumentParser(prog="healthai")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["train", "forecast", "--from-store", str(store), "--graph", "us-states",
                              "--exclude-regions", "US-RI", "--epochs", "1", "--hidden", "4", "--no-stack",
                              "--runs-dir", str(tmp_path / "runs"), "--export-to", str(repo),
                              "--model-name", "forecast_states"])
    assert args.func(args) == 0
    out = capsys.readouterr()
    assert "outside the model's 4 left out (e.g. US-RI)" in out.err
    card = json.loads((repo / "forecast_states/1/model_card.json").read_text())
    text = json.dumps(card)
    assert all(r in text for r in REGIONS.values()) and "US-RI" in text  # excluded, and said so


def test_an_agency_syndrome_trains_from_the_store(store_and_graph, tmp_path: Path) -> None:
    """A syndrome of the agency's own file (here influenza by another name) counts as the built-in
    one does, and the run report keeps its definition."""
    store, graph = store_and_graph
    path = tmp_path / "syndromes.toml"
    path.write_text('[syndromes.influenza]\ndescription = "influenza, J10-J11"\nicd10 = ["J10", "J11"]\n')
    mine = load_store(str(store), graph=graph, syndrome="influenza", syndromes=path)
    np.testing.assert_array_equal(mine.series, load_store(str(store), graph=graph).series)
    assert mine.report["store"]["syndrome_definition"] == {
        "description": "influenza, J10-J11", "icd10": ["J10", "J11"], "snomed": [], "lab_loinc": []}
    with pytest.raises(TrainingInputError, match=r"--syndrome 'influenza' is not one of.*--syndromes FILE"):
        load_store(str(store), graph=graph, syndrome="influenza")
