"""The Scenario gRPC service on a real in-process server (127.0.0.1, free port): results, errors with
their status codes and fields, work caps, streaming progress, deadlines, cancellation, audit."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from healthai.app.settings import Settings
from healthai.app.testing import serve_in_thread
from healthai.observability.audit import AuditWriter
from healthai.observability.interceptor import ObservabilityInterceptor
from healthai.scenario.model import FLUSIGHT_LEVELS, Disease, Scenario, run
from healthai.scenario.plugin import ScenarioPlugin
from healthai.scenario.settings import ScenarioSettings
from healthai.v1 import scenario_pb2, scenario_pb2_grpc
from tests.scenario.conftest import COUNTIES, grid_graph

GRID = grid_graph(4)


def grid_msg() -> scenario_pb2.ScenarioGraph:
    """GRID as an explicit graph (raw gravity weights; the server rescales rows to mobility)."""
    edges = [
        scenario_pb2.Edge(src=i, dst=int(GRID.indices[e]), weight=float(GRID.weights[e]))
        for i in range(GRID.n_regions)
        for e in range(GRID.indptr[i], GRID.indptr[i + 1])
    ]
    return scenario_pb2.ScenarioGraph(
        region_ids=list(GRID.ids), population=GRID.population.tolist(), edges=edges, mobility=0.1
    )


def request(**kw: object) -> scenario_pb2.ScenarioRequest:
    base: dict[str, object] = dict(
        graph=grid_msg(),
        horizon_days=60,
        runs=20,
        seed=3,
        seed_infections=scenario_pb2.Seed(region_ids=["r00"], infectious=[30]),
    )
    base.update(kw)
    return scenario_pb2.ScenarioRequest(**base)  # type: ignore[arg-type]


class AuditLines(logging.Handler):
    """Keeps the Scenario/Run audit line; ``seen`` is set when it arrives."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seen = threading.Event()
        self.line = ""

    def emit(self, record: logging.LogRecord) -> None:
        if "healthai.v1.Scenario/Run" in record.getMessage():
            self.line = record.getMessage()
            self.seen.set()


class Server:
    def __init__(self, running: object, plugin: ScenarioPlugin, channel: grpc.Channel) -> None:
        self.plugin = plugin
        self.stub = scenario_pb2_grpc.ScenarioStub(channel)


def _serve(settings: ScenarioSettings) -> Iterator[Server]:
    plugin = ScenarioPlugin(settings)
    app = Settings(port=0, dev_mode=True)
    writer = AuditWriter(logging.getLogger("healthai.audit"))
    obs = ObservabilityInterceptor(audit=writer, metrics_enabled=False)
    with (
        serve_in_thread(app, [plugin], interceptors=[obs]) as running,
        grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch,
    ):
        yield Server(running, plugin, ch)
    writer.close()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    yield from _serve(
        ScenarioSettings(graphs_dir=COUNTIES.parent, unary_max_work=3_000_000, max_work=60_000_000)
    )


@pytest.fixture
def tight() -> Iterator[Server]:
    """One job at a time, none queued."""
    yield from _serve(
        ScenarioSettings(
            graphs_dir=COUNTIES.parent, max_concurrent_jobs=1, max_queued_jobs=0, max_work=2_000_000_000
        )
    )


def test_run_returns_quantiles_peaks_and_samples(server: Server) -> None:
    audit, logger = AuditLines(), logging.getLogger("healthai.audit")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(audit)
    try:
        res = server.stub.Run(request(sample_trajectories=5), timeout=60)
        assert audit.seen.wait(30), "no audit line"  # written by the audit thread
    finally:
        logger.removeHandler(audit)
        logger.setLevel(level)
    P, R, L = 9, GRID.n_regions, len(FLUSIGHT_LEVELS)
    assert list(res.quantile_levels) == pytest.approx(FLUSIGHT_LEVELS) and L == 23
    assert list(res.period_start_day) == list(range(0, 60, 7)) and len(res.region_ids) == R
    q = np.array(res.quantiles).reshape(P, R, L)
    assert np.all(np.diff(q, axis=-1) >= 0) and q[..., -1].max() > 0
    assert np.array(res.samples).reshape(5, P, R).sum() > 0
    assert np.array(res.peak_day).reshape(R, L)[0, 11] > 0
    assert res.work == 20 * R * 60 and res.runs == 20
    assert '"runs":20' in audit.line and '"days":60' in audit.line, audit.line


def test_same_request_same_answer_and_matches_the_library(server: Server) -> None:
    a, b = (server.stub.Run(request(runs=8), timeout=60) for _ in range(2))
    assert a.quantiles == b.quantiles
    det = server.stub.Run(request(runs=0, deterministic=True, horizon_days=70), timeout=60)
    i0 = np.zeros(GRID.n_regions, np.int64)
    i0[0] = 30
    z = np.zeros_like(i0)
    ref = run(
        Scenario(
            graph=GRID,
            start=(GRID.population - i0, z, i0, z),
            horizon=70,
            runs=1,
            disease=Disease(),
            mode="deterministic",
        )
    )
    np.testing.assert_allclose(np.array(det.mean).reshape(10, -1), ref.mean, rtol=1e-5)


def test_interventions_over_rpc_lower_the_curve(server: Server) -> None:
    base = server.stub.Run(request(), timeout=60)
    closed = server.stub.Run(
        request(interventions=[scenario_pb2.Intervention(start_day=7, end_day=60, contact_multiplier=0.5)]),
        timeout=60,
    )
    assert sum(closed.mean) < 0.7 * sum(base.mean)


BAD = [
    ({"seed_infections": None}, "start"),
    ({"horizon_days": 0}, "horizon_days"),
    (
        {"interventions": [scenario_pb2.Intervention(regions=["nope"], start_day=0, end_day=5)]},
        "interventions[0].regions[0]",
    ),
    ({"interventions": [scenario_pb2.Intervention(start_day=9, end_day=5)]}, "interventions[0].start"),
    (
        {"interventions": [scenario_pb2.Intervention(start_day=0, end_day=5, travel_multiplier=50)]},
        "interventions.travel_multiplier",
    ),
    (
        {"interventions": [scenario_pb2.Intervention(start_day=0, end_day=5, vaccination_rate=2)]},
        "interventions[0].vaccination_rate",
    ),
    ({"quantile_levels": [0.5, 0.2]}, "quantile_levels"),
    ({"quantile_levels": [1.5]}, "quantile_levels"),
    ({"disease": scenario_pb2.Disease(r0=-1)}, "disease.r0"),
    ({"disease": scenario_pb2.Disease(latent_days=float("nan"))}, "disease.latent_days"),
    ({"sample_trajectories": 50}, "sample_trajectories"),
    (
        {"seed_infections": scenario_pb2.Seed(region_ids=["r00"], infectious=[10**9])},
        "seed_infections.infectious[0]",
    ),
    ({"seed_infections": None, "state": scenario_pb2.State(s=[1], e=[0], i=[0], r=[0])}, "state.s"),
    ({"report_regions": ["r00", "zz"]}, "report_regions[1]"),
    ({"graph": scenario_pb2.ScenarioGraph(region_ids=["a", "a"], population=[1, 2])}, "graph.regions"),
    (
        {"graph": scenario_pb2.ScenarioGraph(region_ids=["a", "b"], population=[5, 0])},
        "graph.population[1] (region b)",
    ),
    (
        {
            "graph": scenario_pb2.ScenarioGraph(
                region_ids=["a", "b"], population=[5, 5], edges=[scenario_pb2.Edge(src=0, dst=7, weight=1)]
            )
        },
        "graph.edges[0]",
    ),
    ({"graph": scenario_pb2.ScenarioGraph(region_ids=["a"], population=[5], mobility=2)}, "graph.mobility"),
    ({"deterministic": True, "runs": 5}, "runs"),
    ({"disease": scenario_pb2.Disease(hospital_fraction=1.5)}, "disease.hospital_fraction"),
    ({"disease": scenario_pb2.Disease(hospital_fraction=0.1, hospital_days=-2)}, "disease.hospital_days"),
    (
        {
            "seed_infections": None,
            "state": scenario_pb2.State(
                s=(GRID.population - 1).tolist(), e=[0] * 16, i=[0] * 16, r=[0] * 16, h=[1] * 16
            ),
        },
        "start.H",
    ),
]


@pytest.mark.parametrize(("change", "field"), BAD, ids=[b[1] for b in BAD])
def test_bad_input_is_invalid_argument_naming_the_field(server: Server, change: dict, field: str) -> None:
    req = request(**{k: v for k, v in change.items() if v is not None})
    for k, v in change.items():
        if v is None:
            req.ClearField(k)
    with pytest.raises(grpc.RpcError) as e:
        server.stub.Run(req, timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
    assert e.value.details().startswith(field + ":"), e.value.details()


def test_hospital_occupancy_over_rpc(server: Server) -> None:
    """SEIHR over the wire: bed-occupancy quantiles come back (and not without a hospital fraction);
    an explicit start state may hold occupied beds, and H counts toward S+E+I+H+R = N."""
    plain = server.stub.Run(request(), timeout=60)
    assert not plain.hospital_quantiles and not plain.hospital_total_quantiles
    disease = scenario_pb2.Disease(hospital_fraction=0.1, hospital_days=6)
    res = server.stub.Run(request(disease=disease), timeout=60)
    P, R, L = 9, GRID.n_regions, len(FLUSIGHT_LEVELS)
    beds = np.array(res.hospital_quantiles).reshape(P, R, L)
    total = np.array(res.hospital_total_quantiles).reshape(P, L)
    assert np.all(np.diff(beds, axis=-1) >= 0) and total[:, 11].max() > 0
    assert np.array_equal(np.array(res.quantiles), np.array(plain.quantiles))  # H does not feed back
    h = [0] * R
    h[3] = 50
    s = GRID.population.copy()
    s[0] -= 30
    s[3] -= 50
    i = [30] + [0] * (R - 1)
    state = scenario_pb2.State(s=s.tolist(), e=[0] * R, i=i, r=[0] * R, h=h)
    first = server.stub.Run(request(disease=disease, state=state, seed_infections=None), timeout=60)
    assert np.array(first.hospital_quantiles).reshape(P, R, L)[0, 3, 11] > 0  # beds still occupied
    bad = scenario_pb2.State(s=GRID.population.tolist(), e=[0] * R, i=[0] * R, r=[0] * R, h=h)
    with pytest.raises(grpc.RpcError) as e:
        server.stub.Run(request(disease=disease, state=bad, seed_infections=None), timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "s+e+i+r+h" in e.value.details()


def test_unknown_graph_is_not_found(server: Server) -> None:
    with pytest.raises(grpc.RpcError) as e:
        server.stub.Run(request(graph=scenario_pb2.ScenarioGraph(name="mars")), timeout=30)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND and "graph.name" in e.value.details()


def test_work_caps_are_resource_exhausted(server: Server) -> None:
    big = request(runs=2000, horizon_days=100)  # 3.2 M > unary cap 3 M, < stream cap
    with pytest.raises(grpc.RpcError) as e:
        server.stub.Run(big, timeout=30)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "RunStream" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        list(server.stub.RunStream(request(runs=10000, horizon_days=400), timeout=30))
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_stream_reports_progress_then_the_result(server: Server) -> None:
    updates = list(server.stub.RunStream(request(horizon_days=50, period_days=10), timeout=60))
    progress = [u.progress.days_done for u in updates if u.HasField("progress")]
    assert progress == [10, 20, 30, 40, 50]
    assert updates[-1].HasField("result") and len(updates[-1].result.period_start_day) == 5


def test_county_graph_by_name(server: Server, counties_dir: Path) -> None:
    res = server.stub.Run(
        scenario_pb2.ScenarioRequest(
            graph=scenario_pb2.ScenarioGraph(name="us_counties"),
            horizon_days=21,
            runs=4,
            seed=1,
            seed_infections=scenario_pb2.Seed(region_ids=["06037"], infectious=[100]),
            report_regions=["06037", "06059", "36061"],
            quantile_levels=[0.1, 0.5, 0.9],
        ),
        timeout=60,
    )
    q = np.array(res.quantiles).reshape(3, 3, 3)
    assert q[:, 0, 1].sum() > 100 and q[:, 1, 1].sum() > 0  # Los Angeles grows, Orange County is reached
    assert q[:, 2].sum() == 0  # Manhattan is not reached in three weeks
    assert np.array(res.total_quantiles).reshape(3, 3).shape == (3, 3) and res.work == 4 * 3144 * 21


def _long_stream(stub: scenario_pb2_grpc.ScenarioStub, timeout: float) -> grpc.Future:
    # 375 k cell-days per period, 150 M in all: well under a second per period, seconds in all. A slow
    # vaccination everywhere keeps every region drawing every day (no region goes quiet after the
    # epidemic), so the length follows the cell-days, not how fast the epidemic burns out.
    everywhere = scenario_pb2.Intervention(start_day=0, end_day=2000, vaccination_rate=1e-4)
    return stub.RunStream(
        request(runs=3000, horizon_days=2000, period_days=5, interventions=[everywhere]), timeout=timeout
    )


def _run_once_free(stub: scenario_pb2_grpc.ScenarioStub, started: float) -> float:
    """With one slot and no queue, a call is refused until the previous job has stopped: retry (bounded)
    until one runs; returns the seconds since ``started``."""
    while time.monotonic() - started < 30:
        try:
            assert stub.Run(request(runs=2, horizon_days=7), timeout=30).runs == 2
            return time.monotonic() - started
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            threading.Event().wait(0.05)
    raise AssertionError("the slot was not freed within 30 s")


def test_cancel_frees_the_work(tight: Server) -> None:
    call = _long_stream(tight.stub, 120)
    first = next(call)
    assert first.HasField("progress")
    started = time.monotonic()
    call.cancel()
    assert _run_once_free(tight.stub, started) < 10  # the whole job would take minutes
    assert tight.plugin.servicer.gate.active == 0


def test_deadline_is_honoured_and_frees_the_slot(tight: Server) -> None:
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as e:
        list(_long_stream(tight.stub, 1.0))
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert _run_once_free(tight.stub, started) < 10


def test_overload_is_resource_exhausted(tight: Server) -> None:
    call = _long_stream(tight.stub, 120)
    assert next(call).HasField("progress")
    try:
        with pytest.raises(grpc.RpcError) as e:
            tight.stub.Run(request(runs=2, horizon_days=7), timeout=30)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        call.cancel()
