"""Calibration: recovers transmission from counts the model made; state codes sum their counties; the
RPC fits the store's surveillance counts (a real Parquet store) and starts a scenario from the fit."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pyarrow as pa
import pytest

from healthai.app.settings import Settings
from healthai.app.testing import serve_in_thread
from healthai.errors import InvalidInput
from healthai.ops.metapop import SeirState, advance
from healthai.scenario.calibrate import calibrate, groups_of
from healthai.scenario.graphs import county_graph
from healthai.scenario.model import Disease
from healthai.scenario.plugin import ScenarioPlugin
from healthai.scenario.settings import ScenarioSettings
from healthai.store import ParquetStore
from healthai.surveillance import SurveillanceCounts
from healthai.v1 import scenario_pb2, scenario_pb2_grpc
from tests.scenario.conftest import grid_graph


def synthetic_counts(r0: float, rate: float, days: int = 60) -> tuple[list[str], np.ndarray]:
    g = grid_graph(4, pop_scale=200_000)
    d = Disease(r0=r0)
    i = np.zeros(g.n_regions, np.int64)
    i[[0, 5]] = (200, 100)
    z = np.zeros_like(i)
    st = SeirState.start(g.population - i, z, i, z, runs=1, mode="deterministic")
    ones = np.ones((1, g.n_regions))
    rows = [
        advance(
            g,
            st,
            beta=[d.beta],
            sigma=d.sigma,
            gamma=d.gamma,
            contact=ones,
            travel=ones,
            vacc=np.zeros_like(ones),
            substeps=2,
        )[:, 0]
        for _ in range(days)
    ]
    return list(g.ids), rate * np.array(rows)


@pytest.mark.parametrize("noisy", [False, True])
def test_recovers_r0_from_counts_the_model_made(noisy: bool) -> None:
    ids, counts = synthetic_counts(1.6, 0.25)
    if noisy:
        counts = np.random.default_rng(0).poisson(counts).astype(np.float64)
    fit = calibrate(grid_graph(4, pop_scale=200_000), Disease(), ids, counts, window_days=28)
    assert abs(fit.r0 / 1.6 - 1) < 0.05
    assert fit.r2 > (0.95 if noisy else 0.99) and fit.deviance_explained > 0.5
    assert fit.fitted.shape == fit.observed.shape == (27, 16)
    total = sum(fit.start)
    assert (
        np.array_equal(total, grid_graph(4, pop_scale=200_000).population)
        and min(a.min() for a in fit.start) >= 0
    )


@pytest.mark.parametrize("noisy", [False, True])
def test_reporting_rate_is_flagged_unless_depletion_shows(noisy: bool) -> None:
    """Early in the epidemic a rate and r0 explain the counts equally well: the fit says the rate is
    not identifiable and gives an interval holding the truth, not a point; once the window covers the
    bend of the curve (susceptibles running low) the rate is identified, close to the truth."""
    g = grid_graph(4, pop_scale=200_000)
    rng = np.random.default_rng(1)
    ids, early = synthetic_counts(1.6, 0.25, days=60)
    _, full = synthetic_counts(1.6, 0.25, days=120)
    if noisy:
        early, full = (rng.poisson(c).astype(np.float64) for c in (early, full))
    fit = calibrate(g, Disease(), ids, early, window_days=28)
    lo, hi = fit.rate_interval
    assert not fit.rate_identifiable and lo <= 0.25 <= hi and hi / lo > 3
    assert fit.r0_interval[0] <= 1.6 <= fit.r0_interval[1]  # the growth rate still pins r0
    fit = calibrate(g, Disease(), ids, full, window_days=100)
    lo, hi = fit.rate_interval
    assert fit.rate_identifiable and lo <= 0.25 <= hi and hi / lo <= 2
    assert abs(fit.reporting_rate / 0.25 - 1) < 0.15 and abs(fit.r0 / 1.6 - 1) < 0.05


def test_a_growing_epidemic_fits_a_higher_r0_than_a_shrinking_one() -> None:
    ids, up = synthetic_counts(2.0, 0.3)
    _, down = synthetic_counts(0.8, 0.3, days=40)
    g = grid_graph(4, pop_scale=200_000)
    assert calibrate(g, Disease(), ids, up).r0 > 1.5 > 1.0 > calibrate(g, Disease(), ids, down * 50).r0


def test_state_codes_sum_their_counties(counties_dir: Path) -> None:
    g = county_graph(counties_dir)
    groups = groups_of(g, ["US-MA", "US-DE", "06037"])
    assert [len(x) for x in groups] == [14, 3, 1]
    with pytest.raises(InvalidInput, match=r"observed\.region_ids\[0\]"):
        groups_of(g, ["US-XX"])
    with pytest.raises(InvalidInput, match="overlap"):
        groups_of(g, ["US-CA", "06037"])


def _condition_rows(states: dict[str, float], days: int) -> pa.Table:
    """ILI conditions (ICD-10 J10.1), one patient each, growing ~6 % a day from 2026-02-01."""
    ts = pa.timestamp("us", tz="UTC")
    rows = []
    for state, base in states.items():
        for d in range(days):
            for k in range(int(base * 1.06**d)):
                rows.append(
                    (
                        f"{state}-{d}-{k}",
                        f"p-{state}-{d}-{k}",
                        state,
                        dt.datetime(2026, 2, 1, 9, tzinfo=dt.UTC) + dt.timedelta(days=d),
                    )
                )
    cols = list(zip(*rows, strict=True))
    return pa.table(
        {
            "source": pa.array(["t"] * len(rows)),
            "record_key": pa.array(cols[0]),
            "patient_id": pa.array(cols[1]),
            "region": pa.array(cols[2]),
            "icd10_code": pa.array(["J10.1"] * len(rows)),
            "snomed_code": pa.array([None] * len(rows), pa.string()),
            "onset": pa.array(cols[3], ts),
            "recorded": pa.array([None] * len(rows), ts),
        }
    )


@pytest.fixture(scope="module")
def stored_server(
    tmp_path_factory: pytest.TempPathFactory, counties_dir: Path
) -> Iterator[scenario_pb2_grpc.ScenarioStub]:
    store = ParquetStore(str(tmp_path_factory.mktemp("scenario-store"))).open()
    store.commit({"condition": _condition_rows({"US-MA": 4, "US-NY": 6, "US-CT": 2}, 35)})
    plugin = ScenarioPlugin(ScenarioSettings(graphs_dir=counties_dir.parent), SurveillanceCounts(store))
    with (
        serve_in_thread(Settings(port=0, dev_mode=True), [plugin]) as running,
        grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch,
    ):
        yield scenario_pb2_grpc.ScenarioStub(ch)


def test_calibrate_rpc_fits_stored_counts(stored_server: scenario_pb2_grpc.ScenarioStub) -> None:
    graph = scenario_pb2.ScenarioGraph(name="us_counties")
    fit = stored_server.Calibrate(
        scenario_pb2.CalibrateRequest(graph=graph, stored=scenario_pb2.StoredCounts(syndrome="ili")),
        timeout=120,
    )
    assert fit.last_date == "2026-03-07" and fit.window_days == 28
    # The stored counts grow 6 % a day: an SEIR growing at rate r has r0 = (1 + r/sigma)(1 + r/gamma).
    d, growth = Disease(), np.log(1.06)
    assert fit.r0 == pytest.approx((1 + growth / d.sigma) * (1 + growth / d.gamma), rel=0.1)
    assert fit.r2 > 0.95
    # 6 % growth over four weeks: susceptibles are plentiful, so the rate is not identifiable
    assert not fit.reporting_rate_identifiable
    assert 0 < fit.reporting_rate_low <= fit.reporting_rate <= fit.reporting_rate_high <= 1
    assert fit.r0_low <= fit.r0 <= fit.r0_high
    pop = county_graph(Path(stored_server_graphs())).population
    total = np.array(fit.state.s) + np.array(fit.state.e) + np.array(fit.state.i) + np.array(fit.state.r)
    assert np.array_equal(total, pop)
    res = stored_server.Run(
        scenario_pb2.ScenarioRequest(
            graph=graph,
            calibrate=scenario_pb2.CalibrateRequest(stored=scenario_pb2.StoredCounts()),
            horizon_days=14,
            runs=3,
            report_regions=["25025"],
            quantile_levels=[0.5],
        ),
        timeout=120,
    )
    assert res.calibration.r0 == pytest.approx(fit.r0) and sum(res.mean) > 0


def stored_server_graphs() -> str:
    from tests.scenario.conftest import COUNTIES

    return str(COUNTIES)


def test_calibrate_rpc_bad_counts_name_the_field(stored_server: scenario_pb2_grpc.ScenarioStub) -> None:
    graph = scenario_pb2.ScenarioGraph(name="us_counties")
    cases = [
        (scenario_pb2.CalibrateRequest(graph=graph), ".counts"),
        (
            scenario_pb2.CalibrateRequest(
                graph=graph, observed=scenario_pb2.Observed(region_ids=["US-MA"], counts=[1.0] * 10)
            ),
            "window_days",
        ),
        (
            scenario_pb2.CalibrateRequest(
                graph=graph, observed=scenario_pb2.Observed(region_ids=["US-MA", "x"], counts=[1.0] * 3)
            ),
            "observed.counts",
        ),
        (
            scenario_pb2.CalibrateRequest(graph=graph, stored=scenario_pb2.StoredCounts(end_date="March")),
            "stored.end_date",
        ),
    ]
    for req, field in cases:
        with pytest.raises(grpc.RpcError) as e:
            stored_server.Calibrate(req, timeout=60)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in e.value.details(), (
            e.value.details()
        )
