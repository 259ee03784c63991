"""The scheduler's adaptive execution: small batches on the event loop, the rest on worker threads.

In-process, with a real ONNX Runtime model and the real scheduler on a real event loop (no gRPC): the
same requests give the same results wherever they run; a failing request in a batch run on the loop
fails alone; a caller cancelled while leading a batch never takes its batch-mates down with it; the
cost estimate follows measurements but shrugs off a preempted run.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest

from healthai.errors import InvalidInput
from healthai.serving.runtime.contract import InferRequest
from healthai.serving.runtime.onnx import OnnxModel
from healthai.serving.runtime.scheduler import ExecutionCost, Scheduler

from .tiny_models import load_risk_runtime

W = np.array([1.0, 0.5, -0.25, 2.0])


@pytest.fixture
def model(tmp_path: Path) -> OnnxModel:
    return load_risk_runtime(tmp_path, W, bias=-1.0, delay_us=100_000)


class Threads:
    """Records on which thread each model run happened (the backend's run, under the executor)."""

    def __init__(self, runtime: OnnxModel) -> None:
        self.names: list[str] = []
        inner = runtime.run

        def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            self.names.append(threading.current_thread().name)
            return inner(feeds)

        runtime.run = run  # type: ignore[method-assign]  # execute stays ours: inline is allowed


def rows(n: int, seed: int) -> list[np.ndarray]:
    x = np.random.default_rng(seed).normal(size=(n, len(W))).astype(np.float32)
    return [x[i:i + 1] for i in range(n)]


async def burst(scheduler: Scheduler, inputs: list[np.ndarray]) -> list[object]:
    """Requests that arrive together (one loop turn), answers or errors in order."""
    calls = [scheduler.infer(InferRequest({"features": x})) for x in inputs]
    return await asyncio.gather(*calls, return_exceptions=True)


def measured(scheduler: Scheduler, one_row_ns: float, per_row_ns: float) -> None:
    for _ in range(ExecutionCost.MIN_SAMPLES):
        scheduler.cost.add(1, int(one_row_ns))
        scheduler.cost.add(4, int(4 * per_row_ns))


def test_inline_and_threaded_batches_give_identical_results(model: OnnxModel) -> None:
    threads = Threads(model)
    inputs = rows(12, seed=0)

    async def scenario(inline_max_us: float) -> list[object]:
        scheduler = Scheduler(model, max_queue=64, inline_max_us=inline_max_us)
        measured(scheduler, 10_000, 10_000)
        try:
            lone = [await scheduler.infer(InferRequest({"features": x})) for x in inputs[:3]]
            return lone + await burst(scheduler, inputs[3:])
        finally:
            await scheduler.close()

    on_loop = asyncio.run(scenario(inline_max_us=1e6))
    assert threads.names and all(n == "MainThread" for n in threads.names)
    threads.names.clear()
    on_threads = asyncio.run(scenario(inline_max_us=0))
    assert threads.names and all(n.startswith("tiny-v1") for n in threads.names)
    for a, b in zip(on_loop, on_threads, strict=True):
        np.testing.assert_array_equal(a["probability"], b["probability"])  # type: ignore[index]
    x = np.concatenate(inputs)
    np.testing.assert_allclose(np.concatenate([r["probability"] for r in on_loop]).reshape(-1),  # type: ignore[index]
                               1 / (1 + np.exp(-(x @ W - 1))), rtol=1e-5)


def test_batch_over_the_budget_runs_on_a_thread(model: OnnxModel) -> None:
    threads = Threads(model)

    async def scenario() -> tuple[int, int]:
        scheduler = Scheduler(model, max_queue=64, inline_max_us=100)
        measured(scheduler, one_row_ns=20_000, per_row_ns=30_000)  # 1 row: 20 µs; 4 rows: 120 µs
        try:
            await scheduler.infer(InferRequest({"features": rows(1, 1)[0]}))
            lone = threads.names[-1]
            await scheduler.infer(InferRequest({"features": np.concatenate(rows(4, 2))}))
            return lone, threads.names[-1]
        finally:
            await scheduler.close()

    lone, four = asyncio.run(scenario())
    assert lone == "MainThread" and four.startswith("tiny-v1")


def test_failing_request_in_a_batch_on_the_loop_fails_alone(model: OnnxModel) -> None:
    threads = Threads(model)
    inputs: list[np.ndarray] = rows(6, seed=3)
    inputs[2] = inputs[2].astype(np.float64)  # ONNX Runtime refuses the dtype: InvalidInput

    async def scenario() -> list[object]:
        scheduler = Scheduler(model, max_queue=64, inline_max_us=1e6)
        measured(scheduler, 1_000, 1_000)
        try:
            return await burst(scheduler, inputs)
        finally:
            await scheduler.close()

    results = asyncio.run(scenario())
    assert set(threads.names) == {"MainThread"}
    assert isinstance(results[2], InvalidInput) and "rejected the input" in str(results[2])
    for i, r in enumerate(results):
        if i != 2:
            x = inputs[i]
            np.testing.assert_allclose(r["probability"].reshape(-1), 1 / (1 + np.exp(-(x @ W - 1))),  # type: ignore[index]
                                       rtol=1e-5)


@pytest.mark.parametrize("turns", [0, 1, 2, 3, 5])
@pytest.mark.parametrize("inline", [True, False])
def test_cancelled_leader_never_loses_its_batch_mates(model: OnnxModel, turns: int, inline: bool) -> None:
    """The first request, which starts a batch, is cancelled after ``turns`` loop turns — e.g. while
    its batch runs on a thread, with requests queued behind it — and a queued one is cancelled too."""

    async def scenario() -> tuple[list[object], bool]:
        scheduler = Scheduler(model, max_queue=64, inline_max_us=1e6 if inline else 0)
        measured(scheduler, 1_000, 1_000)
        try:
            await scheduler.infer(InferRequest({"features": rows(1, 5)[0]}))  # a recent arrival
            leader = asyncio.ensure_future(scheduler.infer(InferRequest({"features": rows(1, 6)[0]})))
            await asyncio.sleep(0)
            mates = [asyncio.ensure_future(scheduler.infer(InferRequest({"features": x})))
                     for x in rows(3, 7)]
            dropped = asyncio.ensure_future(scheduler.infer(InferRequest({"features": rows(1, 9)[0]})))
            for _ in range(turns):
                await asyncio.sleep(0)
            leader.cancel()
            dropped.cancel()
            done = await asyncio.wait_for(asyncio.gather(*mates, return_exceptions=True), 10)
            (gone,) = await asyncio.gather(dropped, return_exceptions=True)
            assert isinstance(gone, asyncio.CancelledError) or "probability" in gone
            (led,) = await asyncio.gather(leader, return_exceptions=True)
            assert isinstance(led, asyncio.CancelledError) or "probability" in led  # done before the cancel
            await asyncio.wait_for(scheduler.infer(InferRequest({"features": rows(1, 8)[0]})), 10)
            return done, scheduler.queued == 0
        finally:
            await scheduler.close()

    done, drained = asyncio.run(scenario())
    assert drained
    x = np.concatenate(rows(3, 7))
    np.testing.assert_allclose(np.concatenate([r["probability"] for r in done]).reshape(-1),  # type: ignore[index]
                               1 / (1 + np.exp(-(x @ W - 1))), rtol=1e-5)


def test_cost_estimate_needs_samples_and_resists_a_preempted_run() -> None:
    cost = ExecutionCost()
    for _ in range(ExecutionCost.MIN_SAMPLES - 1):
        cost.add(1, 50_000)
        cost.add(10, 100_000)
    assert cost.estimate_ns(1) is None and cost.estimate_ns(10) is None
    cost.add(1, 50_000)
    cost.add(10, 100_000)
    assert cost.estimate_ns(1) == pytest.approx(50_000) and cost.estimate_ns(20) == pytest.approx(200_000)
    cost.add(1, 5_000_000)  # descheduled mid-run: counts as twice the average at most
    assert cost.estimate_ns(1) == pytest.approx(60_000)
    for _ in range(12):  # a model that really got slower is followed
        cost.add(1, 400_000)
    assert cost.estimate_ns(1) > 300_000


def test_direct_binding_call_matches_the_public_run(model: OnnxModel) -> None:
    """A CPU-only session is run through ONNX Runtime's binding directly (skipping the public
    wrapper's per-call checks): same outputs, and bad input still refused as the caller's."""
    assert model._direct  # CPU-only here: the direct call is what serves
    x = np.concatenate(rows(5, seed=11))
    direct = model.run({"features": x})
    model._direct = False
    public = model.run({"features": x})
    np.testing.assert_array_equal(direct[0], public[0])
    for flag in (True, False):
        model._direct = flag
        with pytest.raises(InvalidInput, match="rejected the input"):
            model.run({"features": x.astype(np.float64)})
        with pytest.raises(InvalidInput, match="rejected the input"):
            model.run({"features": x[:, :3]})
