"""Through a real in-process server, the SDK and ``healthai-client scenario``: the stochastic mean's
attack rate at the served defaults against the ODE, deterministic mode without ``runs``, the table's
column labels, the isolated-region hint, and the population error naming the region."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from healthai.app.settings import Settings
from healthai.app.testing import serve_in_thread
from healthai.scenario.model import Disease, substeps_for
from healthai.scenario.plugin import ScenarioPlugin
from healthai.scenario.settings import ScenarioSettings
from healthai.v1 import scenario_pb2, scenario_pb2_grpc
from healthai_client import Client
from healthai_client.cli import main
from tests.scenario.conftest import COUNTIES

ONE = {"region_ids": ["A"], "population": [10_000_000], "edges": []}
TWO = {"region_ids": ["A", "B"], "population": [4_000_000, 6_000_000], "edges": [(0, 1, 1.0), (1, 0, 1.0)]}


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    plugin = ScenarioPlugin(ScenarioSettings(graphs_dir=COUNTIES.parent, unary_max_work=20_000_000))
    logging.getLogger("healthai.audit").setLevel(logging.WARNING)
    with serve_in_thread(Settings(port=0, dev_mode=True), [plugin]) as running:
        yield f"127.0.0.1:{running.port}"


def test_default_substeps_keep_rate_dt_small() -> None:
    d = Disease()
    assert substeps_for(d, "stochastic") == 4 and substeps_for(d, "deterministic") == 1
    short = Disease(latent_days=0.5, infectious_days=2.0)  # sigma = 2
    assert substeps_for(short, "stochastic") == 20 and substeps_for(short, "deterministic") == 4
    shortest = Disease(latent_days=0.1, hospital_fraction=0.1, hospital_days=0.2)
    assert substeps_for(shortest, "stochastic") == 24  # the cap: sigma dt = 10 / 24


@pytest.mark.parametrize(("graph", "r0"), [(ONE, 1.5), (ONE, 2.0), (TWO, 1.5)])
def test_served_stochastic_mean_matches_the_ode(address: str, graph: dict[str, object], r0: float) -> None:
    """The served defaults (no substeps anywhere on the wire): one tau-leap per day made R0 about 10 %
    too large (attack rate 0.670 for 0.583 at R0 1.5, peak prevalence +41 %)."""
    pop = np.array(graph["population"], dtype=np.float64)  # type: ignore[arg-type]
    job = {"horizon_days": 365, "seed": 3, "disease": {"r0": r0}, "seed_infections": {"A": 200}}
    with Client(address, timeout=120) as c:
        stoch = c.scenario(graph, runs=16, **job)  # type: ignore[arg-type]
        ode = c.scenario(graph, deterministic=True, **job)  # type: ignore[arg-type]
    assert ode.runs == 1 and stoch.runs == 16
    attack_s, attack_o = stoch.mean.sum(axis=0) / pop, ode.mean.sum(axis=0) / pop
    z = 0.5
    for _ in range(500):  # the final-size equation (one region, or both together: same r0 everywhere)
        z = 1.0 - np.exp(-r0 * z)
    assert np.all(np.abs(attack_o / z - 1) < 2e-3), (attack_o, z)
    assert np.all(np.abs(attack_s / attack_o - 1) < 0.01), (attack_s, attack_o)
    mid = list(stoch.levels).index(0.5)
    peak_s, peak_o = stoch.peak_size[:, mid], ode.peak_size[:, mid]
    assert np.all(np.abs(peak_s / peak_o - 1) < 0.02), (peak_s, peak_o)
    days_s, days_o = stoch.peak_day[:, mid], ode.peak_day[:, mid]
    assert np.all(np.abs(days_s - days_o) <= 0.04 * days_o + 1), (days_s, days_o)


def test_population_error_names_the_index_and_region(address: str) -> None:
    graph = scenario_pb2.ScenarioGraph(region_ids=["A", "B", "C"], population=[100, 50, 0])
    seed = scenario_pb2.Seed(region_ids=["A"], infectious=[1])
    req = scenario_pb2.ScenarioRequest(graph=graph, horizon_days=10, runs=2, seed_infections=seed)
    with grpc.insecure_channel(address) as ch, pytest.raises(grpc.RpcError) as err:
        scenario_pb2_grpc.ScenarioStub(ch).Run(req, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.value.details()
    assert details.startswith("graph.population[2] (region C): 0 is not in [1, 2e9]"), details


def _files(tmp_path: Path, isolated: bool = False) -> list[str]:
    (tmp_path / "edges.csv").write_text("source,target,weight\nR1,R2,1\nR2,R3,1\nR3,R1,1\n")
    rows = "R1,100000\nR2,50000\nR3,200000\n" + ("R4,1000\n" if isolated else "")
    (tmp_path / "pop.csv").write_text("region,population\n" + rows)
    return ["--graph", str(tmp_path / "edges.csv"), "--population", str(tmp_path / "pop.csv")]


def _cli(address: str, tmp_path: Path, *extra: str) -> list[str]:
    return ["scenario", "-a", address, *_files(tmp_path), "--seed-infections", "R1=20", "--horizon", "60",
            "--seed", "1", *extra]


def test_cli_table_labels_the_quantile_it_prints(
    address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_cli(address, tmp_path, "--runs", "20", "--quantiles", "0.9,0.95")) == 0
    header = capsys.readouterr().out.splitlines()[1]
    assert "onsets (mean sum)" in header and "peak day q90" in header and "peak size q90" in header, header
    assert "q50" not in header
    assert main(_cli(address, tmp_path, "--runs", "20", "--quantiles", "0.1,0.5,0.9")) == 0
    header = capsys.readouterr().out.splitlines()[1]
    assert "onsets (q50 sum)" in header and "peak day q50" in header, header


def test_cli_deterministic_needs_no_runs_flag(
    address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_cli(address, tmp_path, "--deterministic")) == 0
    assert capsys.readouterr().out.startswith("1 runs")
    with Client(address, timeout=60) as c:  # the SDK's default too
        res = c.scenario(ONE, horizon_days=10, deterministic=True, seed_infections={"A": 5})
    assert res.runs == 1


def test_cli_isolated_region_hint_names_no_training_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["scenario", "-a", "127.0.0.1:1", *_files(tmp_path, isolated=True), "--seed-infections", "R1=20",
            "--horizon", "60"]
    assert main(args) != 0
    err = capsys.readouterr().err
    assert "R4,R4" in err and "--population" in err, err
    assert "--allow-isolated" not in err and "--exclude-regions" not in err, err
