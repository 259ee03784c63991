"""Dynamic batching on a busy event loop: requests wait for company only while the loop has other work.

In-process, with a real ONNX Runtime model, the real scheduler and the server's own event loop
(``idle.new_event_loop``): a spinning task stands for the other calls that keep a loaded server's loop
busy. Requests that arrive then form one batch, which runs as soon as the loop would go idle, when it
is full, or at max_queue_delay; an idle loop never holds a request back. A cancelled, expired or bad
request leaves its batch-mates' answers untouched.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from healthai.errors import DeadlineExceeded, InvalidInput
from healthai.serving.runtime import idle
from healthai.serving.runtime.contract import InferRequest
from healthai.serving.runtime.onnx import OnnxModel
from healthai.serving.runtime.scheduler import ExecutionCost, Scheduler

from .tiny_models import load_risk_runtime

W = np.array([1.0, 0.5, -0.25, 2.0])


def load(root: Path, **config: object) -> OnnxModel:
    return load_risk_runtime(root, W, bias=-1.0, **config)


class Runs:
    """Rows of every model run (the backend's run under the executor; execute stays ours)."""

    def __init__(self, runtime: OnnxModel) -> None:
        self.rows: list[int] = []
        inner = runtime.run

        def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            self.rows.append(len(feeds["features"]))
            return inner(feeds)

        runtime.run = run  # type: ignore[method-assign]


def rows(n: int, seed: int = 0) -> list[np.ndarray]:
    x = np.random.default_rng(seed).normal(size=(n, len(W))).astype(np.float32)
    return [x[i:i + 1] for i in range(n)]


def expected(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-(x.reshape(-1, len(W)) @ W - 1)))


def on_server_loop(scenario: Callable[[], Awaitable[Any]]) -> Any:
    with asyncio.Runner(loop_factory=idle.new_event_loop) as runner:
        return runner.run(scenario())


class Spinner:
    """Keeps the loop busy (always something ready to run) until stopped: a loaded server."""

    def __init__(self) -> None:
        self.running = True
        self.task = asyncio.get_running_loop().create_task(self._spin())

    async def _spin(self) -> None:
        while self.running:
            await asyncio.sleep(0)

    async def stop(self) -> None:
        self.running = False
        await self.task


def scheduler_for(model: OnnxModel, busy_window_us: float = 1.0, idle_grace_us: float = 0.0) -> Scheduler:
    """The busy window defaults to 1 µs here: the model's max_queue_delay (larger) is the bound."""
    scheduler = Scheduler(model, max_queue=64, inline_max_us=1e6, busy_window_us=busy_window_us,
                          idle_grace_us=idle_grace_us)
    for _ in range(ExecutionCost.MIN_SAMPLES):  # measured cheap: runs on the loop
        scheduler.cost.add(1, 1_000)
        scheduler.cost.add(4, 4_000)
    return scheduler


async def arrive(scheduler: Scheduler, inputs: list[np.ndarray], *,
                 timeouts: list[float | None] | None = None) -> list[asyncio.Task[Any]]:
    """One request per loop turn (as grpc.aio hands calls to the loop); returns their tasks."""
    tasks = []
    for i, x in enumerate(inputs):
        timeout = timeouts[i] if timeouts else None
        tasks.append(asyncio.get_running_loop().create_task(
            scheduler.infer(InferRequest({"features": x}), timeout=timeout)))
        await asyncio.sleep(0)
    return tasks


def test_busy_loop_gathers_one_batch_that_runs_when_the_loop_goes_idle(tmp_path: Path) -> None:
    model = load(tmp_path, delay_us=10_000_000)  # the bound is not what ends this batch
    runs = Runs(model)
    inputs = rows(7)

    async def scenario() -> tuple[list[Any], bool]:
        scheduler = scheduler_for(model)
        spinner = Spinner()
        try:
            tasks = await arrive(scheduler, inputs)
            for _ in range(20):
                await asyncio.sleep(0)
            waiting = not any(t.done() for t in tasks[1:])  # the first found the loop's history idle
            await spinner.stop()  # the loop goes idle: the batch runs
            return list(await asyncio.gather(*tasks)), waiting
        finally:
            await scheduler.close()

    results, waiting = on_server_loop(scenario)
    assert waiting
    assert runs.rows == [1, 6]  # the first alone (no busy history yet), then one batch of six
    got = np.concatenate([r["probability"] for r in results]).reshape(-1)
    np.testing.assert_allclose(got, expected(np.concatenate(inputs)), rtol=1e-5, atol=1e-6)


def test_idle_loop_never_holds_a_request_back(tmp_path: Path) -> None:
    model = load(tmp_path, delay_us=10_000_000)
    runs = Runs(model)

    async def scenario() -> list[Any]:
        scheduler = scheduler_for(model)
        try:
            out = []
            for x in rows(5):
                await asyncio.sleep(0.001)  # a client's round trip: the loop waits for I/O
                out.append(await scheduler.infer(InferRequest({"features": x})))
            return out
        finally:
            await scheduler.close()

    assert len(on_server_loop(scenario)) == 5
    assert runs.rows == [1] * 5


@pytest.mark.parametrize("server_loop", [False, True])
def test_no_idle_signal_or_no_busy_window_never_gathers(tmp_path: Path, server_loop: bool) -> None:
    """Without the server's selector there is no idle signal, and a busy window of 0 turns waiting on
    a busy loop off: requests start at once, as before."""
    model = load(tmp_path, delay_us=10_000_000)
    runs = Runs(model)

    async def scenario() -> None:
        scheduler = scheduler_for(model, busy_window_us=0.0 if server_loop else 1.0)
        spinner = Spinner()
        try:
            await asyncio.gather(*await arrive(scheduler, rows(4)))
        finally:
            await spinner.stop()
            await scheduler.close()

    if server_loop:
        on_server_loop(scenario)
    else:
        asyncio.run(scenario())
    assert runs.rows == [1, 1, 1, 1]


def test_busy_window_bounds_the_wait_when_longer_than_max_queue_delay(tmp_path: Path) -> None:
    model = load(tmp_path, delay_us=1)  # the model's own delay would end the batch at once

    async def scenario() -> list[int]:
        scheduler = scheduler_for(model, busy_window_us=10_000_000)
        runs = Runs(model)
        spinner = Spinner()
        try:
            tasks = await arrive(scheduler, rows(4))
            for _ in range(10):
                await asyncio.sleep(0)
            assert not any(t.done() for t in tasks[1:])
            await spinner.stop()
            await asyncio.gather(*tasks)
            return runs.rows
        finally:
            await scheduler.close()

    assert on_server_loop(scenario) == [1, 3]


def test_batch_runs_at_max_queue_delay_while_the_loop_stays_busy(tmp_path: Path) -> None:
    model = load(tmp_path, delay_us=200_000)  # long enough that the four arrivals always make it
    runs = Runs(model)

    async def scenario() -> bool:
        scheduler = scheduler_for(model)
        spinner = Spinner()
        try:
            tasks = await arrive(scheduler, rows(4))
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
            return spinner.running and not spinner.task.done()
        finally:
            await spinner.stop()
            await scheduler.close()

    assert on_server_loop(scenario)  # answered while the loop was still busy
    assert runs.rows == [1, 3]


def test_full_batch_runs_at_once(tmp_path: Path) -> None:
    model = load(tmp_path, delay_us=10_000_000, max_batch_size=3)
    runs = Runs(model)

    async def scenario() -> list[Any]:
        scheduler = scheduler_for(model)
        spinner = Spinner()
        try:
            tasks = await arrive(scheduler, rows(5))
            for _ in range(5):
                await asyncio.sleep(0)
            first_batch = [t.done() for t in tasks]
            await spinner.stop()
            await asyncio.gather(*tasks)
            return first_batch
        finally:
            await scheduler.close()

    done_while_busy = on_server_loop(scenario)
    assert done_while_busy == [True, True, True, True, False]
    assert runs.rows == [1, 3, 1]


def test_cancelled_and_expired_requests_leave_their_batch_mates_alone(tmp_path: Path) -> None:
    model = load(tmp_path, delay_us=10_000_000)
    runs = Runs(model)
    inputs = rows(6, seed=1)

    async def scenario() -> list[Any]:
        scheduler = scheduler_for(model)
        spinner = Spinner()
        try:
            tasks = await arrive(scheduler, inputs, timeouts=[None, None, 0.0, None, None, None])
            tasks[3].cancel()  # its caller went away while it waited for company
            for _ in range(5):
                await asyncio.sleep(0)
            await spinner.stop()
            out = await asyncio.gather(*tasks, return_exceptions=True)
            assert scheduler.queued == 0
            return list(out)
        finally:
            await scheduler.close()

    out = on_server_loop(scenario)
    assert isinstance(out[2], DeadlineExceeded)
    assert isinstance(out[3], asyncio.CancelledError)
    assert runs.rows == [1, 3]  # neither the expired nor the cancelled one was executed
    for i in (0, 1, 4, 5):
        np.testing.assert_allclose(out[i]["probability"].reshape(-1), expected(inputs[i]),
                                   rtol=1e-5, atol=1e-6)


def test_bad_request_in_a_gathered_batch_fails_alone(tmp_path: Path) -> None:
    model = load(tmp_path, delay_us=10_000_000)
    inputs: list[np.ndarray] = rows(5, seed=2)
    inputs[3] = inputs[3].astype(np.float64)  # ONNX Runtime refuses the dtype: InvalidInput

    async def scenario() -> list[Any]:
        scheduler = scheduler_for(model)
        spinner = Spinner()
        try:
            tasks = await arrive(scheduler, inputs)
            await spinner.stop()
            return list(await asyncio.gather(*tasks, return_exceptions=True))
        finally:
            await scheduler.close()

    out = on_server_loop(scenario)
    assert isinstance(out[3], InvalidInput)
    for i in (0, 1, 2, 4):
        np.testing.assert_allclose(out[i]["probability"].reshape(-1), expected(inputs[i]),
                                   rtol=1e-5, atol=1e-6)


def test_idle_selector_runs_callbacks_before_waiting_and_survives_a_failing_one() -> None:
    calls: list[str] = []

    async def scenario() -> int:
        selector = idle.selector_of(asyncio.get_running_loop())
        assert selector is not None
        woke = asyncio.Event()

        def bad() -> None:
            calls.append("bad")
            raise RuntimeError("boom")

        selector.call_when_idle(bad)
        selector.call_when_idle(lambda: (calls.append("good"), woke.set()))
        waits = selector.idle_waits
        await asyncio.wait_for(woke.wait(), timeout=10)  # the loop went idle and ran both
        await asyncio.sleep(0.01)  # a real wait for I/O (a timer): counted
        return selector.idle_waits - waits

    assert on_server_loop(scenario) >= 1
    assert calls == ["bad", "good"]
    plain = asyncio.new_event_loop()
    try:
        assert idle.selector_of(plain) is None
    finally:
        plain.close()


@pytest.mark.parametrize("per_row_us, where", [(100, "MainThread"), (100_000, "tiny-v1")])
def test_gathered_batch_runs_on_the_loop_when_it_fits_the_busy_window(tmp_path: Path, per_row_us: int,
                                                                       where: str) -> None:
    """Inline budget 150 µs, busy window 50 ms: a lone row (measured 100 µs) runs on the loop; a
    gathered batch of three runs there too when its estimate fits the busy window (3 x 100 µs), and on
    the model's thread when it does not (3 x 100 ms)."""
    model = load(tmp_path, delay_us=1)
    threads: list[str] = []
    inner = model.run

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        threads.append(threading.current_thread().name)
        return inner(feeds)

    model.run = run  # type: ignore[method-assign]

    async def scenario() -> None:
        scheduler = Scheduler(model, max_queue=64, inline_max_us=150, busy_window_us=50_000)
        for _ in range(ExecutionCost.MIN_SAMPLES):
            scheduler.cost.add(1, 100_000)
            scheduler.cost.add(4, 4 * per_row_us * 1000)
        spinner = Spinner()
        try:
            tasks = await arrive(scheduler, rows(4))
            await spinner.stop()
            await asyncio.gather(*tasks)
        finally:
            await scheduler.close()

    on_server_loop(scenario)
    assert threads[0] == "MainThread"
    assert len(threads) == 2 and threads[1].startswith(where)


def test_idle_grace_lets_a_call_that_arrives_soon_join_the_batch(tmp_path: Path) -> None:
    """The loop goes idle while a batch gathers: with a grace, a call arriving within it still joins
    (never before the grace runs out does the batch run alone); without, the batch runs at once."""
    model = load(tmp_path, delay_us=10_000_000)
    runs = Runs(model)

    async def scenario(grace_us: float) -> float:
        scheduler = scheduler_for(model, idle_grace_us=grace_us)
        loop = asyncio.get_running_loop()
        spinner = Spinner()
        try:
            tasks = await arrive(scheduler, rows(2))  # the second gathers (the loop was busy)
            await spinner.stop()  # idle from here
            started = loop.time()
            late = loop.create_future()
            loop.call_later(0.01, lambda: late.set_result(
                loop.create_task(scheduler.infer(InferRequest({"features": rows(1, seed=9)[0]})))))
            await asyncio.gather(*tasks, await late)
            return loop.time() - started
        finally:
            await scheduler.close()

    elapsed = on_server_loop(lambda: scenario(1_000_000))
    assert runs.rows == [1, 2] and elapsed >= 1.0  # the late call joined; the batch ran after the grace
    runs.rows.clear()
    on_server_loop(lambda: scenario(0))
    assert runs.rows == [1, 1, 1]  # no grace: the gathering one ran when the loop went idle


def test_busy_turns_without_new_calls_do_not_restart_the_grace(tmp_path: Path) -> None:
    """Completions of calls already answered keep waking the loop; only a new call restarts the
    grace, so a batch that everyone who could come has joined runs one grace after the loop first
    went idle, not when the trickle of wake-ups ends (with a few closed-loop callers, the old rule
    held every batch to the busy window: perf_analyzer at c = 4 lost a third of its throughput)."""
    model = load(tmp_path, delay_us=10_000_000)
    runs = Runs(model)

    async def scenario() -> tuple[float, float]:
        scheduler = scheduler_for(model, idle_grace_us=50_000)
        loop = asyncio.get_running_loop()
        spinner = Spinner()
        trickle_end = loop.time() + 1.0

        def wake() -> None:  # a busy turn (something ready to run) every 5 ms for 1 s, no new call
            if loop.time() < trickle_end:
                loop.call_soon(loop.call_later, 0.005, wake)

        try:
            tasks = await arrive(scheduler, rows(3))  # the second and third gather
            await spinner.stop()
            started = loop.time()
            wake()
            await asyncio.gather(*tasks)
            return loop.time() - started, trickle_end - started
        finally:
            await scheduler.close()

    elapsed, trickle = on_server_loop(scenario)
    assert runs.rows == [1, 2]
    assert elapsed < trickle - 0.3  # ran after its grace (50 ms), well before the trickle ended


def test_batch_as_large_as_the_recent_ones_runs_at_the_first_idle_moment(tmp_path: Path) -> None:
    """Once a gathering batch is as large as the largest recent one, the grace ends: it runs as soon
    as the loop would go idle (no caller is left to come), not a grace later."""
    model = load(tmp_path, delay_us=2_000_000)  # the busy window (2 s) ends the first gathered batch
    runs = Runs(model)

    async def scenario() -> float:
        scheduler = scheduler_for(model, idle_grace_us=5_000_000)
        loop = asyncio.get_running_loop()
        spinner = Spinner()
        try:
            await asyncio.gather(*await arrive(scheduler, rows(3)))  # 1 alone, then 2 at the window
            tasks = await arrive(scheduler, rows(2, seed=1))  # busy loop: these two gather
            await spinner.stop()
            started = loop.time()
            await asyncio.gather(*tasks)
            return loop.time() - started
        finally:
            await scheduler.close()

    elapsed = on_server_loop(scenario)
    assert runs.rows == [1, 2, 2]
    assert elapsed < 1.0  # neither the 5 s grace nor the 2 s window was waited out


def test_lone_caller_on_a_busy_loop_stops_paying_the_grace(tmp_path: Path) -> None:
    """One caller awaiting each answer before its next call, answered without the loop waiting for
    I/O in between (as when other work keeps it busy): its first gathered request finds no company
    and waits out the bound; from then on its batches stay single, so each runs at the loop's first
    idle moment instead of a grace later."""
    model = load(tmp_path, delay_us=300_000)  # the window: the first gathered request waits it out
    runs = Runs(model)

    async def scenario() -> float:
        scheduler = scheduler_for(model, idle_grace_us=5_000_000)
        loop = asyncio.get_running_loop()
        try:
            for x in rows(2):  # the first runs at once; the second gathers alone until the window
                await scheduler.infer(InferRequest({"features": x}))
            started = loop.time()
            for x in rows(8, seed=1):
                await scheduler.infer(InferRequest({"features": x}))
            return loop.time() - started
        finally:
            await scheduler.close()

    elapsed = on_server_loop(scenario)
    assert runs.rows == [1] * 10
    assert elapsed < 1.0  # not 8 x the 300 ms window (nor the 5 s grace)
