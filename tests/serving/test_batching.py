"""Dynamic batching, bounded queue, deadlines and cancellation — over gRPC on a real server.

The model's execute is wrapped in a gate so the test decides when the (real) ONNX run happens; that
makes queue states deterministic without sleeps.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from healthai.v1 import risk_pb2, risk_pb2_grpc


class Gate:
    """Wraps runtime.execute: each call waits until released; records the batch sizes it ran."""

    def __init__(self, loaded) -> None:
        self.inner = loaded.runtime.execute
        self.entered = threading.Semaphore(0)
        self.open = threading.Event()
        self.batches: list[int] = []
        loaded.runtime.execute = self

    def __call__(self, batch):
        self.entered.release()
        assert self.open.wait(30)
        self.batches.append(sum(r.batch_size for r in batch))
        return self.inner(batch)


def request(value: float = 0.0) -> risk_pb2.ScoreRequest:
    return risk_pb2.ScoreRequest(model_name="risk_tiny", features=[value] * 4, top_features=0)


def queued(server) -> int:
    return server.plugin.manager.resolve("risk_tiny").scheduler.queued


def wait_queued(server, n: int) -> None:
    """Waits (on the server's own loop, event-driven by polling its state) until n requests queue."""
    import asyncio

    async def until() -> None:
        while queued(server) != n:
            await asyncio.sleep(0.001)

    server.run(asyncio.wait_for(until(), 10))


def test_concurrent_requests_coalesce_up_to_max_batch_size(risk_repo, make_server):
    server = make_server(risk_repo)  # max_batch_size 64, delay 200 us
    stub = risk_pb2_grpc.RiskStub(server.channel)
    gate = Gate(server.plugin.manager.resolve("risk_tiny"))
    first = stub.Score.future(request())
    assert gate.entered.acquire(timeout=10)  # the first request is executing; the rest queue behind it
    futures = [stub.Score.future(request(i / 100)) for i in range(100)]
    wait_queued(server, 100)
    gate.open.set()
    results = [f.result(timeout=30) for f in futures]
    assert first.result(timeout=30).probability
    assert gate.batches[0] == 1 and gate.batches[1:] == [64, 36]
    np.testing.assert_allclose([r.probability[0] for r in results],
                               [1 / (1 + np.exp(-(3.25 * i / 100 - 1))) for i in range(100)], rtol=1e-5)


def test_batching_off_runs_one_request_per_execution(risk_repo, make_server):
    server = make_server(risk_repo, dynamic_batching=False)
    stub = risk_pb2_grpc.RiskStub(server.channel)
    gate = Gate(server.plugin.manager.resolve("risk_tiny"))
    gate.open.set()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: stub.Score(request(), timeout=10), range(16)))
    assert gate.batches == [1] * 16


def test_full_queue_answers_resource_exhausted_at_once(risk_repo, make_server):
    server = make_server(risk_repo, max_queue_requests=3)
    stub = risk_pb2_grpc.RiskStub(server.channel)
    gate = Gate(server.plugin.manager.resolve("risk_tiny"))
    running = stub.Score.future(request())
    assert gate.entered.acquire(timeout=10)
    waiting = [stub.Score.future(request()) for _ in range(3)]
    wait_queued(server, 3)
    with pytest.raises(grpc.RpcError) as err:
        stub.Score(request(), timeout=5)  # answered while the gate is still shut: no waiting
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "queue is full (3 requests waiting)" in err.value.details()
    gate.open.set()
    assert all(f.result(timeout=30).probability for f in [running, *waiting])


def test_expired_request_is_not_executed_and_cancelled_one_frees_its_slot(risk_repo, make_server):
    server = make_server(risk_repo, max_queue_requests=2)
    stub = risk_pb2_grpc.RiskStub(server.channel)
    gate = Gate(server.plugin.manager.resolve("risk_tiny"))
    running = stub.Score.future(request())
    assert gate.entered.acquire(timeout=10)
    expiring = stub.Score.future(request(), timeout=0.3)
    cancelled = stub.Score.future(request())
    wait_queued(server, 2)
    cancelled.cancel()
    wait_queued(server, 1)  # the cancelled call left the queue at once
    with pytest.raises(grpc.RpcError) as err:
        expiring.result(timeout=10)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_queued(server, 0)  # ... and so did the expired one (its slot is free again)
    kept = stub.Score.future(request(0.5))
    wait_queued(server, 1)
    gate.open.set()
    assert kept.result(timeout=30).probability and running.result(timeout=30).probability
    assert gate.batches == [1, 1]  # neither the expired nor the cancelled request ran


def test_requests_with_different_top_k_share_one_execution(risk_repo, make_server):
    server = make_server(risk_repo)
    stub = risk_pb2_grpc.RiskStub(server.channel)
    gate = Gate(server.plugin.manager.resolve("risk_tiny"))
    running = stub.Score.future(request())
    assert gate.entered.acquire(timeout=10)
    x = np.random.default_rng(4).normal(size=(5, 4)).astype(np.float32)
    parts = [(x[0:1], 0), (x[1:3], 2), (x[3:5], 4)]
    futures = [stub.Score.future(risk_pb2.ScoreRequest(
        model_name="risk_tiny", features=p.reshape(-1).tolist(), top_features=k)) for p, k in parts]
    wait_queued(server, 3)
    gate.open.set()
    assert running.result(timeout=30).probability
    responses = [f.result(timeout=30) for f in futures]
    assert gate.batches == [1, 5]  # one execution for all three requests
    w = np.array([1.0, 0.5, -0.25, 2.0], np.float32)
    for (p, k), r in zip(parts, responses, strict=True):
        np.testing.assert_allclose(r.probability, 1 / (1 + np.exp(-(p @ w - 1))), rtol=1e-5)
        assert r.top_k == k and len(r.top_feature_name) == len(p) * k
        if k:  # contributions: p - p(feature at baseline 0), largest |change| first
            prob = 1 / (1 + np.exp(-(p @ w - 1)))
            occluded = 1 / (1 + np.exp(-((p @ w)[:, None] - p * w - 1)))  # [n, F]
            want = np.sort(np.abs(prob[:, None] - occluded), axis=1)[:, ::-1][:, :k]
            got = np.abs(np.array(r.top_feature_contribution).reshape(len(p), k))
            np.testing.assert_allclose(got, want, rtol=1e-4)
