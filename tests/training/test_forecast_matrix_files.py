"""Headerless matrices (the published benchmarks' layout: ``japan.txt`` periods × regions,
``japan-adj.txt`` regions × regions, no header, no dates) through ``--series-start`` / ``--region-ids``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from healthai.errors import InputFileError
from healthai.surveillance.matrix_file import positional_ids
from healthai_training import cli
from healthai_training.epi.data import load_epi
from healthai_training.epi.user_data import load_files
from healthai_training.errors import TrainingInputError

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")
RING = "1,1,0,1\n1,1,1,0\n0,1,1,1\n1,0,1,1\n"  # four regions on a ring, self-loops on the diagonal


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="healthai")
    cli.register(parser.add_subparsers(dest="command", required=True))
    return int(parser.parse_args(argv).func(parser.parse_args(argv)))


def _write(tmp_path: Path, name: str, text: str) -> Path:
    (tmp_path / name).write_text(text)
    return tmp_path / name


def _matrix(tmp_path: Path, weeks: int = 130, regions: int = 4) -> Path:
    rng = np.random.default_rng(0)
    t = np.arange(weeks)[:, None]
    x = rng.poisson(20 + 15 * np.cos(2 * np.pi * t / 52 + np.arange(regions) * 0.3))
    np.savetxt(tmp_path / "series.txt", x, fmt="%d", delimiter=",")
    return tmp_path / "series.txt"


@pytest.mark.parametrize(("name", "series", "adjacency"), [
    ("japan", "japan_prefectures/japan.txt", "japan_prefectures/japan-adj.txt"),
    ("us_states", "us_states/state360.txt", "us_states/state-adj.txt"),
])
def test_benchmark_files_load_as_the_named_data_set(shared_data: Path, name: str, series: str,
                                                    adjacency: str) -> None:
    epi = shared_data / "epi"
    data = load_files(series=epi / series, graph=epi / adjacency, series_start="2012-W32", step="W",
                      allow_isolated=True)  # Hokkaido and Okinawa, Alaska and Hawaii: no land border
    named = load_epi(name, data_root=shared_data)
    assert np.array_equal(data.series, named.series) and np.array_equal(data.adjacency, named.adjacency)
    assert data.region_ids == positional_ids(named.n_regions) and data.region_ids[:2] == ("r01", "r02")
    assert data.periods[:2] == ("2012-08-06", "2012-08-13") and data.step == "W" and data.season == 52
    assert data.report["layout"] == "matrix" and data.report["ids"] == "by position"
    assert data.report["graph"]["format"] == "headerless adjacency"


def test_region_ids_file_names_both_matrices_and_lines_up_a_named_graph(tmp_path: Path) -> None:
    series, ring = _matrix(tmp_path), _write(tmp_path, "adj.txt", RING)
    ids = _write(tmp_path, "ids.csv", "id,name\nUS-CT,Connecticut\nUS-MA,Massachusetts\nUS-RI,\nUS-NH,NH\n")
    data = load_files(series=series, graph=ring, series_start="2020-01-06", step="W", region_ids=ids)
    assert data.region_ids == ("US-CT", "US-MA", "US-RI", "US-NH")
    assert data.region_names == ("Connecticut", "Massachusetts", "", "NH")
    assert data.report["ids"] == "region-ids file" and data.report["region_ids"]["sha256"]
    assert data.adjacency[0, 3] > 0 and data.adjacency[0, 2] == 0  # CT–NH by the ring, CT–RI not
    # the same ids, as a named edge list in another order: the same graph
    edges = _write(tmp_path, "e.csv", "source,target\nUS-NH,US-CT\nUS-CT,US-MA\nUS-MA,US-RI\nUS-RI,US-NH\n")
    again = load_files(series=series, graph=edges, series_start="2020-01-06", step="W", region_ids=ids)
    off = ~np.eye(4, dtype=bool)
    assert np.array_equal(again.adjacency[off] > 0, data.adjacency[off] > 0)
    np.testing.assert_array_equal(again.series, data.series)


@pytest.mark.parametrize(("kwargs", "graph", "field", "message"), [
    ({}, RING, "series", "needs --series-start DATE and --step"),
    ({"series_start": "2020-01-06"}, RING, "step", "--step W or D is required"),
    ({"series_start": "2020-01-06", "step": "W", "region_ids": "a\nb\nc\n"}, RING, "series",
     "4 columns but the region-ids file names 3 regions"),
    ({"series_start": "2020-01-06", "step": "W", "region_ids": "a\nb\na\nc\n"}, RING, "region_ids",
     "line 3: region 'a' appears twice"),
    ({"series_start": "someday", "step": "W"}, RING, "series_start", "--series-start: period 'someday'"),
    ({"series_start": "2020-01-06", "step": "W"}, "1,1,0,1\n1,1,1,0\n0,1,1,1\n0,0,1,1\n", "graph",
     "not symmetric: r01→r04 is 1 but r04→r01 is 0"),
    ({"series_start": "2020-01-06", "step": "W"}, "1,1,0\n1,1,1\n0,1,1\n", "graph",
     r"1 in the series but not the graph \['r04'\]"),
    ({"series_start": "2020-01-06", "step": "W", "region_ids": "a\nb\nc\nd\n"},
     RING.replace("1,0,1,1", "1,x,1,1"), "graph", "row 4, column 'b': 'x' is not a weight"),
])
def test_bad_matrices_name_the_field(tmp_path: Path, kwargs: dict, graph: str, field: str,
                                     message: str) -> None:
    series = _matrix(tmp_path)
    if "region_ids" in kwargs:
        kwargs = {**kwargs, "region_ids": _write(tmp_path, "ids.txt", kwargs["region_ids"])}
    with pytest.raises(InputFileError, match=message) as err:
        load_files(series=series, graph=_write(tmp_path, "adj.txt", graph), **kwargs)
    assert err.value.field == field


def test_a_matrix_cell_that_is_not_a_number_names_line_and_column(tmp_path: Path) -> None:
    series = _write(tmp_path, "s.txt", "1,2,3,4\n1,2,3,4\n1,2,oops,4\n")
    with pytest.raises(InputFileError, match=r"row 3, column 3 \(r03\): count 'oops'"):
        load_files(series=series, graph=_write(tmp_path, "adj.txt", RING), series_start="2020-01-06",
                   step="W")


def test_series_start_refuses_a_header_and_a_headerless_graph_asks_for_ids(tmp_path: Path) -> None:
    named = _write(tmp_path, "named.csv", "period,a,b,c,d\n2020-01-06,1,2,3,4\n2020-01-13,1,2,3,4\n")
    ring = _write(tmp_path, "adj.txt", RING)
    with pytest.raises(InputFileError, match="first row is not all numbers") as err:
        load_files(series=named, graph=ring, series_start="2020-01-06", step="W")
    assert err.value.field == "series_start"
    with pytest.raises(InputFileError, match="name them with --region-ids FILE"):
        load_files(series=named, graph=ring)
    edges = _write(tmp_path, "e.csv", "source,target\na,b\nb,c\nc,d\nd,a\n")
    ids = _write(tmp_path, "ids.txt", "a\nb\nc\nd\n")
    with pytest.raises(TrainingInputError, match="both name their regions") as err:  # nothing to name
        load_files(series=named, graph=edges, region_ids=ids)
    assert err.value.field == "region_ids"
    assert load_files(series=named, graph=ring, region_ids=ids).region_ids == ("a", "b", "c", "d")


def test_cli_trains_and_exports_a_headerless_matrix_with_its_region_names(tmp_path: Path, capsys) -> None:
    series, ring = _matrix(tmp_path), _write(tmp_path, "adj.txt", RING)
    ids = _write(tmp_path, "ids.txt", "a,Alpha\nb,Beta\nc,Gamma\nd,Delta\n")
    argv = ["train", "forecast", "--series", str(series), "--graph", str(ring), "--series-start", "202002",
            "--step", "W", "--region-ids", str(ids), "--epochs", "1", "--no-stack",
            "--runs-dir", str(tmp_path / "runs"), "--export-to", str(tmp_path / "repo"), "--model-name", "m"]
    assert _run(argv) == 0
    run_dir = Path(json.loads(capsys.readouterr().out.splitlines()[-1])["run_dir"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["data"]["layout"] == "matrix" and metrics["data"]["first_period"] == "2020-01-05"
    card = json.loads((tmp_path / "repo" / "m" / "1" / "model_card.json").read_text())
    graph = json.loads((tmp_path / "repo" / "m" / "1" / "graph.json").read_text())
    assert card["region_ids"] == graph["region_ids"] == ["a", "b", "c", "d"]
    assert card["region_names"] == graph["region_names"] == ["Alpha", "Beta", "Gamma", "Delta"]
    assert _run(["train", "forecast", "--series-start", "2020-01-06", "--runs-dir", str(tmp_path)]) == 2
    assert "--series-start needs --series" in capsys.readouterr().out


def test_a_model_trained_on_a_matrix_forecasts_from_the_same_file(tmp_path: Path, capsys) -> None:
    """Positional ids end to end: train on the matrix, serve the export, send the same file as history."""
    from healthai.app.settings import Settings
    from healthai.app.testing import serve_in_thread
    from healthai.serving.plugin import plugin as serving_plugin
    from healthai.serving.settings import ServingSettings
    from healthai_client.cli import main as client_main

    series, ring, repo = _matrix(tmp_path), _write(tmp_path, "adj.txt", RING), tmp_path / "repo"
    assert _run(["train", "forecast", "--series", str(series), "--graph", str(ring), "--series-start",
                 "2020-01-06", "--step", "W", "--epochs", "1", "--no-stack", "--runs-dir",
                 str(tmp_path / "runs"), "--export-to", str(repo), "--model-name", "forecast_matrix"]) == 0
    capsys.readouterr()
    serving = ServingSettings(model_repository=repo, reload_poll_s=0.0)
    settings = Settings(port=0, dev_mode=True, serving=serving)
    with serve_in_thread(settings, [serving_plugin(settings=settings)]) as running:
        argv = ["forecast", "-m", "forecast_matrix", "--history", str(series), "--json",
                "--address", f"127.0.0.1:{running.port}"]
        assert client_main(argv) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["region_ids"] == ["r01", "r02", "r03", "r04"]
    assert np.all(np.isfinite(np.asarray(got["quantiles"])))
