"""The Risk.Score fast paths give exactly what the plain computation gives: occlusion that skips
features at baseline, one-patient explanation, duplicate patients scored once, packed floats read from
the wire, and lone requests run on the event loop."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from healthai.serving.risk.card import RiskCard
from healthai.serving.risk.task import RiskTask
from healthai.serving.wire import packed_float32
from healthai.v1 import risk_pb2, risk_pb2_grpc

from .tiny_models import logistic_model

F = 6
W = np.array([1.0, -0.5, 0.25, 2.0, 0.0, -1.5])
BASELINE = np.array([0.0, 1.0, -0.5, 0.0, 2.0, 0.25], np.float32)


@pytest.fixture(scope="module")
def session() -> ort.InferenceSession:
    model = logistic_model(W, -0.3).SerializeToString()
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def task() -> RiskTask:
    card = RiskCard(tuple(f"f{i}" for i in range(F)), BASELINE, ("low", "high"), np.array([0.5, 1.0]))
    return RiskTask(card)


def reference(session: ort.InferenceSession, x: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Every feature of every patient occluded, one run per patient."""
    p = session.run(None, {"features": x})[0].reshape(-1)
    out: dict[str, list[np.ndarray]] = {"top_index": [], "top_contribution": []}
    for i, row in enumerate(x):
        occluded = np.repeat(row[None], F, axis=0)
        occluded[np.arange(F), np.arange(F)] = BASELINE
        contribution = p[i] - session.run(None, {"features": occluded})[0].reshape(1, -1)
        contribution = contribution.astype(np.float32)[0]
        idx = np.argsort(-np.abs(contribution), kind="stable")[:k]  # largest first, ties in card order
        out["top_index"].append(idx)
        out["top_contribution"].append(contribution[idx])
    return {"probability": p, "band": (p > 0.5).astype(np.int64),
            **{key: np.array(v).reshape(len(x), k) for key, v in out.items()}}


def patients(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, F)).astype(np.float32)
    x[::2, [1, 4]] = BASELINE[[1, 4]]  # some features sit at their baseline: never occluded
    return x


def check(got: dict[str, np.ndarray], want: dict[str, np.ndarray], k: int) -> None:
    np.testing.assert_allclose(got["probability"], want["probability"], rtol=1e-6)
    np.testing.assert_array_equal(got["band"], want["band"])
    if k:
        np.testing.assert_array_equal(got["top_index"], want["top_index"])
        np.testing.assert_allclose(got["top_contribution"], want["top_contribution"], atol=1e-6)
    else:
        assert "top_index" not in got


@pytest.mark.parametrize("n", [1, 5])
def test_one_request_matches_full_occlusion(session, task, n):
    x = patients(n, seed=n)
    [got] = task.run(lambda feeds: session.run(None, feeds), [task.request(x, 3)])
    check(got, reference(session, x, 3), 3)


def test_features_at_baseline_contribute_exactly_zero(session, task):
    x = BASELINE[None].copy()
    x[0, 3] = 1.0  # only f3 moves p
    [got] = task.run(lambda feeds: session.run(None, feeds), [task.request(x, F)])
    assert got["top_index"][0, 0] == 3
    assert got["top_contribution"][0, 0] != 0
    assert (got["top_contribution"][0, 1:] == 0).all()
    assert list(got["top_index"][0, 1:]) == [0, 1, 2, 4, 5]  # ties keep the card's order


def test_repeated_patients_across_requests_are_scored_once_with_each_requests_k(session, task):
    a, b = patients(3, seed=7), patients(2, seed=8)
    parts = [(a, 2), (b, 0), (a[:1], 3), (np.concatenate([b, a]), 1)]
    fed: list[int] = []

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        fed.append(len(feeds["features"]))
        return session.run(None, feeds)

    results = task.run(run, [task.request(x, k) for x, k in parts])
    for (x, k), got in zip(parts, results, strict=True):
        check(got, reference(session, x, k), k)
    distinct = np.concatenate([a, b])  # 11 patients asked for, 5 distinct; each occluded where it moves
    assert fed == [len(distinct) + int((distinct != BASELINE).sum())]


def test_packed_floats_from_the_wire_equal_the_field(task):
    values = np.random.default_rng(1).normal(size=F * 2000).astype(np.float32)
    values[:3] = [-0.0, np.float32(1e-45), np.float32(3.4e38)]
    request = risk_pb2.ScoreRequest(model_name="m", model_version=2, feature_names=["a", "b"],
                                    features=values.tolist(), top_features=0,
                                    diagnoses=[risk_pb2.DiagnosisCodes(codes=["I10"])] * 3)
    got = packed_float32(request, "features", len(request.features))
    assert got.dtype == np.float32 and got.tobytes() == values.tobytes()


def test_lone_requests_run_on_the_loop_once_measured_cheap(risk_repo, make_server):
    server = make_server(risk_repo, inline_execute_max_us=1e6)
    stub = risk_pb2_grpc.RiskStub(server.channel)
    scheduler = server.plugin.manager.resolve("risk_tiny").scheduler
    assert not scheduler._inline_ok(1)  # nothing measured yet: the worker threads
    x = np.array([0.5, 1.0, -1.0, 0.25], np.float32)
    first = [stub.Score(risk_pb2.ScoreRequest(model_name="risk_tiny", features=x.tolist()), timeout=10)
             for _ in range(scheduler.cost.MIN_SAMPLES)]
    assert scheduler._inline_ok(1)
    later = stub.Score(risk_pb2.ScoreRequest(model_name="risk_tiny", features=x.tolist()), timeout=10)
    assert later == first[0]
    inner = scheduler.runtime.execute
    scheduler.runtime.execute = lambda batch: inner(batch)  # a replaced execute may block: never inline
    assert not scheduler._inline_ok(1)


def test_inline_off_keeps_every_run_on_the_worker_threads(risk_repo, make_server):
    server = make_server(risk_repo, inline_execute_max_us=0)
    stub = risk_pb2_grpc.RiskStub(server.channel)
    for _ in range(10):
        stub.Score(risk_pb2.ScoreRequest(model_name="risk_tiny", features=[0.0] * 4), timeout=10)
    assert not server.plugin.manager.resolve("risk_tiny").scheduler._inline_ok(1)
