"""End to end through a real ``healthai serve`` process: the SDK, ``healthai-client scenario`` with
its PNG plot against the baseline, ``healthai-client calibrate``, and the ``scenario`` API-key scope."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from healthai import security
from healthai.app.testing import start_server_process, stop_server_process
from healthai_client import Client
from healthai_client.cli import main
from healthai_client.errors import HealthAIClientError

SEED = {"seed_infections": {"25025": 40, "36061": 60}}  # Suffolk MA (Boston), New York County


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, counties_dir: Path
) -> Iterator[tuple[str, dict[str, str]]]:
    folder = tmp_path_factory.mktemp("scenario-serve")
    keys = {}
    entries = []
    for name, scopes in (("planner", ["scenario"]), ("scorer", ["score"])):
        key, entry = security.new_key(name, scopes)
        keys[name] = key
        entries.append(entry)
    (folder / "keys.json").write_text(json.dumps({"keys": entries}))
    env = {
        "HEALTHAI_SCENARIO__GRAPHS_DIR": str(counties_dir.parent),
        "HEALTHAI_SECURITY__API_KEYS_FILE": str(folder / "keys.json"),
        "HEALTHAI_SERVING__ENABLED": "false",
    }
    proc, port = start_server_process(
        ["--dev", "--store-uri", str(folder / "store"), "--log-level", "WARNING"], env
    )
    try:
        yield f"127.0.0.1:{port}", keys
    finally:
        assert stop_server_process(proc) == 0


def test_sdk_run_stream_and_scope(served: tuple[str, dict[str, str]]) -> None:
    address, keys = served
    with Client(address, api_key=keys["planner"], timeout=120) as c:
        seen: list[int] = []
        res = c.scenario(
            "us_counties",
            horizon_days=28,
            runs=20,
            seed=4,
            report_regions=["25025", "36061", "06037"],
            progress=lambda done, total: seen.append(done),
            **SEED,
        )
        assert seen == [7, 14, 21, 28]
        assert res.quantiles.shape == (4, 3, 23) and res.runs == 20
        assert res.quantile(0.5)[:, 0].sum() > 40 and res.quantile(0.99)[:, 2].sum() == 0  # LA is far away
        unary = c.scenario(
            "us_counties",
            horizon_days=28,
            runs=20,
            seed=4,
            report_regions=["25025", "36061", "06037"],
            **SEED,
        )
        np.testing.assert_array_equal(
            unary.quantiles, res.quantiles
        )  # unary and stream: same job, same answer
    with Client(address, api_key=keys["scorer"], timeout=30) as c, pytest.raises(HealthAIClientError) as e:
        c.scenario("us_counties", horizon_days=7, runs=2, **SEED)
    assert e.value.code == grpc.StatusCode.PERMISSION_DENIED and "scenario" in e.value.message


def test_cli_plots_a_what_if_against_the_baseline(
    served: tuple[str, dict[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    address, keys = served
    png = tmp_path / "what_if.png"
    args = [
        "scenario",
        "--address",
        address,
        "--api-key",
        keys["planner"],
        "--graph",
        "us_counties",
        "--seed-infections",
        "25025=40,36061=60",
        "--horizon",
        "70",
        "--runs",
        "16",
        "--seed",
        "2",
        "--regions",
        "25025,36061,25017,09110",
        "--intervention",
        "regions=25025,25017,36061;start=14;end=70;contact=0.6",
        "--plot",
        str(png),
        "--plot-regions",
        "25025,36061",
        "--stream",
        "--timeout",
        "120",
    ]
    assert main(args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "25025" in out and f"plot: {png}" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert main([*args[:-5], "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["region_ids"] == ["25025", "36061", "25017", "09110"] and len(result["levels"]) == 23


def test_cli_calibrate_and_bad_input(
    served: tuple[str, dict[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    address, keys = served
    days = np.arange(35)
    csv = tmp_path / "counts.csv"
    csv.write_text(
        "date,US-MA,US-NY\n"
        + "".join(f"2026-02-{1 + d % 28:02d},{5 * 1.05**d:.0f},{9 * 1.05**d:.0f}\n" for d in days)
    )
    auth = ["--address", address, "--api-key", keys["planner"], "--timeout", "120"]
    assert main(["calibrate", "--observed", str(csv), *auth]) == 0, capsys.readouterr().err
    assert "r0 " in capsys.readouterr().out
    assert main(["scenario", "--seed-infections", "99999=5", "--horizon", "7", *auth]) == 4
    assert "seed_infections.region_ids[0]" in capsys.readouterr().err


def test_sdk_and_cli_hospital_occupancy(
    served: tuple[str, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    address, keys = served
    with Client(address, api_key=keys["planner"], timeout=120) as c:
        res = c.scenario(
            "us_counties",
            horizon_days=42,
            runs=10,
            seed=4,
            report_regions=["25025", "36061"],
            disease={"r0": 2.5, "hospital_fraction": 0.05, "hospital_days": 6.0},
            **SEED,
        )
    assert res.hospital_quantiles is not None and res.hospital_quantiles.shape == (6, 2, 23)
    assert res.hospital_total_quantiles is not None and res.hospital_total_quantiles[:, 11].max() > 0
    args = ["scenario", "--address", address, "--api-key", keys["planner"], "--seed-infections", "25025=40"]
    args += ["--horizon", "42", "--runs", "8", "--regions", "25025", "--hospital-fraction", "0.05"]
    assert main(args) == 0, capsys.readouterr().err
    assert "hospital occupancy, all regions" in capsys.readouterr().out


def test_own_regions_from_a_graph_file_and_a_population_file(
    served: tuple[str, dict[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The edge list `train forecast --graph` takes + `region,population` simulate the caller's regions:
    the same job as the graph given by hand (each border both ways), spreading along the chain."""
    from healthai_client.region_graph_file import read_scenario_graph

    address, keys = served
    (tmp_path / "borders.csv").write_text("source,target\nR-A,R-B\nR-B,R-C\nR-C,R-D\n")
    (tmp_path / "people.csv").write_text("region,population\nR-A,50000\nR-B,20000\nR-C,80000\nR-D,10000\n")
    graph = read_scenario_graph(tmp_path / "borders.csv", tmp_path / "people.csv")
    by_hand = {"region_ids": ["R-A", "R-B", "R-C", "R-D"], "population": [50000, 20000, 80000, 10000],
               "edges": [(0, 1, 1.0), (1, 0, 1.0), (1, 2, 1.0), (2, 1, 1.0), (2, 3, 1.0), (3, 2, 1.0)]}
    assert sorted(graph["edges"]) == sorted(by_hand["edges"]) and graph["population"] == by_hand["population"]
    # the same chain as a headerless adjacency (a benchmark's *-adj.txt), its rows named by --region-ids
    (tmp_path / "chain-adj.txt").write_text("1,1,0,0\n1,1,1,0\n0,1,1,1\n0,0,1,1\n")
    (tmp_path / "ids.txt").write_text("R-A\nR-B\nR-C\nR-D\n")
    matrix = read_scenario_graph(tmp_path / "chain-adj.txt", tmp_path / "people.csv",
                                 region_ids=tmp_path / "ids.txt")
    assert sorted(matrix["edges"]) == sorted(by_hand["edges"])
    job = {"horizon_days": 120, "runs": 1, "deterministic": True, "seed_infections": {"R-A": 20}}
    with Client(address, api_key=keys["planner"], timeout=120) as c:
        got, expected = c.scenario(graph, **job), c.scenario(by_hand, **job)
    np.testing.assert_array_equal(got.mean, expected.mean)
    peaks = got.peak_day[:, len(got.levels) // 2]
    assert list(got.region_ids) == by_hand["region_ids"] and peaks[0] < peaks[1] < peaks[2] < peaks[3]

    auth = ["--address", address, "--api-key", keys["planner"], "--timeout", "120"]
    argv = ["scenario", "--graph", str(tmp_path / "borders.csv"), "--seed-infections", "R-A=20",
            "--horizon", "30", "--runs", "2", *auth]
    assert main([*argv, "--population", str(tmp_path / "people.csv"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["region_ids"] == by_hand["region_ids"]
    assert main(argv) == 2 and "needs --population" in capsys.readouterr().err
    adj = ["scenario", "--graph", str(tmp_path / "chain-adj.txt"), "--population",
           str(tmp_path / "people.csv"), "--seed-infections", "R-A=20", "--horizon", "30", "--runs", "2",
           *auth, "--json"]
    assert main(adj) == 2 and "name them with --region-ids FILE" in capsys.readouterr().err  # r01 ...
    assert main([*adj, "--region-ids", str(tmp_path / "ids.txt")]) == 0
    assert json.loads(capsys.readouterr().out)["region_ids"] == by_hand["region_ids"]
    (tmp_path / "people.csv").write_text("region,population\nR-A,50000\nR-B,20000\nR-C,80000\n")
    assert main([*argv, "--population", str(tmp_path / "people.csv")]) == 2
    assert "1 in the graph but not the population file people.csv ['R-D']" in capsys.readouterr().err
