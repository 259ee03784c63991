"""Per-model-version scheduler: a bounded queue in front of ``runtime.execute``, with dynamic batching.

Like Triton's dynamic batcher: requests coalesce up to ``max_batch_size`` rows, and the first of a
batch waits at most ``max_queue_delay_microseconds`` for company. Unlike a fixed timer, the wait
lasts only while requests keep arriving (checked every event-loop turn): a lone or closed-loop caller
is never held back for company that cannot come, and a request that finds the model idle, with no
other arrival within the delay, executes at once without queueing.
Batches form from everything that queued while the previous batch ran.

A lone one-row request on an idle ONNX Runtime model whose one-row executions are measured to take
at most ``inline_max_us`` (moving average) runs right on the event loop: on a small model the hand-off
to a worker thread and back costs more (CPU and latency) than the run itself, and the loop is held for
no longer than that hand-off would take. Everything else — batches, large or slow models, other
runtimes — executes on the scheduler's threads, never on the loop.

A full queue answers RESOURCE_EXHAUSTED at once; a request whose deadline passed is not executed; a
cancelled request leaves the queue immediately. Execution runs on the scheduler's own threads.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from healthai.errors import DeadlineExceeded, HealthAIError, InternalError, NotReady, Overloaded
from healthai.serving.runtime.contract import InferRequest, InferResult, ModelRuntime
from healthai.serving.runtime.executor import RUN_CLOCK
from healthai.serving.runtime.onnx import OnnxModel

log = logging.getLogger(__name__)

# (execute start, first model run start, last model run end, execute end), perf_counter ns
Timing = tuple[int, int, int, int]


@dataclass
class Counter:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, n: int = 1) -> None:
        self.count += n
        self.ns += ns


@dataclass
class BatchStatistics:
    """Executions of one batch size: each counter counts executions, with their durations."""

    compute_input: Counter = field(default_factory=Counter)
    compute_infer: Counter = field(default_factory=Counter)
    compute_output: Counter = field(default_factory=Counter)


@dataclass
class Statistics:
    """What KServe's ModelStatistics reports, per model version, with Triton's meanings:

    - ``success``: requests that succeeded, with their time from arrival at the scheduler to their
      result; ``fail``: requests that failed (refused when queued, expired, cancelled, or failed
      in execution), with their time to failure;
    - ``queue``, ``compute_input``, ``compute_infer``, ``compute_output``: one count per successful
      request, with the durations of its wait and of the execution that ran it (input assembly,
      model run, output split) — so all four counts equal ``success.count``;
    - ``inference_count``: rows (batch size) of the successful requests; ``execution_count``:
      executions that produced at least one success; ``batch_stats``: those executions by the
      rows they ran, each counter counting executions.
    """

    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    success: Counter = field(default_factory=Counter)
    fail: Counter = field(default_factory=Counter)
    queue: Counter = field(default_factory=Counter)
    compute_input: Counter = field(default_factory=Counter)
    compute_infer: Counter = field(default_factory=Counter)
    compute_output: Counter = field(default_factory=Counter)
    batch_stats: dict[int, BatchStatistics] = field(default_factory=dict)

    def record_failure(self, enqueued_ns: int) -> None:
        self.fail.add(time.perf_counter_ns() - enqueued_ns)


def _resolve(future: asyncio.Future[object], result: object, error: BaseException | None) -> None:
    if not future.done():  # the awaiting caller may have been cancelled meanwhile
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)


class ExecutionThreads:
    """The threads that run ``runtime.execute``: a plain queue in, ``call_soon_threadsafe`` out —
    about half the hand-off cost of ``loop.run_in_executor`` (no concurrent.futures chain)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, count: int, name: str) -> None:
        self._loop = loop
        self._jobs: queue.SimpleQueue[tuple[Callable[[Any], Any], Any, asyncio.Future[Any]] | None] = \
            queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._serve, name=f"{name}-{i}", daemon=True)
                         for i in range(count)]
        for t in self._threads:
            t.start()

    def run(self, fn: Callable[[Any], Any], arg: Any) -> asyncio.Future[Any]:
        future = self._loop.create_future()
        self._jobs.put((fn, arg, future))
        return future

    def shutdown(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        for t in self._threads:
            t.join()

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, arg, future = job
            try:
                result, error = fn(arg), None
            except BaseException as exc:  # delivered to the awaiting coroutine, which logs it
                result, error = None, exc
            self._loop.call_soon_threadsafe(_resolve, future, result, error)


@dataclass(eq=False)
class _Pending:
    request: InferRequest
    future: asyncio.Future[InferResult]
    deadline: float | None
    enqueued_ns: int = field(default_factory=time.perf_counter_ns)


class Scheduler:
    """Queues requests for one runtime and executes them in batches on worker threads."""

    INLINE_MIN_SAMPLES = 8  # one-row executions measured on the threads before any runs inline
    EWMA_WEIGHT = 0.2

    def __init__(self, runtime: ModelRuntime, *, max_queue: int, batching: bool = True,
                 instances: int = 1, inline_max_us: float = 0.0) -> None:
        cfg = runtime.config
        self.runtime = runtime
        self.batching = batching and cfg.HasField("dynamic_batching") and cfg.max_batch_size > 0
        self.max_batch_size = max(cfg.max_batch_size, 1)
        self.max_delay_s = cfg.dynamic_batching.max_queue_delay_microseconds / 1e6 if self.batching else 0.0
        self.max_queue = max_queue
        self.stats = Statistics()
        self._queue: collections.deque[_Pending] = collections.deque()
        self._wakeup = asyncio.Event()
        self._closed = False
        self._instances = instances
        self._free = instances  # execution slots not in use
        self._arrivals = 0
        self._last_arrival = float("-inf")
        self._inline_max_ns = inline_max_us * 1000 if isinstance(runtime, OnnxModel) else 0.0
        self._one_row_ns = 0.0  # moving average of one-row execute times (worker or loop)
        self._one_row_samples = 0
        self._threads = ExecutionThreads(asyncio.get_running_loop(), instances,
                                         f"{runtime.name}-v{runtime.version}")
        self._workers = [asyncio.get_running_loop().create_task(self._work()) for _ in range(instances)]

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def infer(self, request: InferRequest, *, timeout: float | None = None) -> InferResult:
        """Queues one request and waits for its result; raises HealthAIError (incl. Overloaded)."""
        if self._closed:
            self.stats.fail.add(0)
            raise NotReady(f"model {self.runtime.name!r} version {self.runtime.version} is unloading")
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        pending = _Pending(request, loop.create_future(), deadline)
        self._arrivals += 1
        now = loop.time()
        quiet = now - self._last_arrival > self.max_delay_s  # no other caller within the batching delay
        self._last_arrival = now
        if quiet and not self._queue and self._free > 0:  # idle: execute now, no hop through a worker
            self._free -= 1
            try:  # if the caller is cancelled mid-run, the instance threads still serialize runs
                await self._execute(loop, [pending], inline=request.batch_size == 1 and self._inline_ok())
            finally:
                self._release()
            return pending.future.result()
        if len(self._queue) >= self.max_queue:
            self.stats.record_failure(pending.enqueued_ns)
            raise Overloaded(f"model {self.runtime.name!r} version {self.runtime.version}: queue is full "
                             f"({self.max_queue} requests waiting); retry later")
        self._queue.append(pending)
        self._wakeup.set()
        try:
            return await pending.future
        except asyncio.CancelledError:
            with contextlib.suppress(ValueError):  # still queued: free the slot now
                self._queue.remove(pending)
                self.stats.record_failure(pending.enqueued_ns)
            raise

    async def close(self) -> None:
        """Stops accepting, lets queued and running requests finish, then stops the workers."""
        self._closed = True
        while self._queue or self._free < self._instances:
            self._wakeup.set()
            await asyncio.sleep(0.005)
        for w in self._workers:
            w.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        await asyncio.to_thread(self._threads.shutdown)

    # -- worker ---------------------------------------------------------------------------------
    def _release(self) -> None:
        self._free += 1
        if self._queue:
            self._wakeup.set()

    def _pop_live(self, now: float) -> _Pending | None:
        """The next queued request still wanted; expired ones are answered DEADLINE_EXCEEDED."""
        while self._queue:
            p = self._queue.popleft()
            if p.future.done():
                continue
            if p.deadline is not None and now >= p.deadline:
                p.future.set_exception(DeadlineExceeded("deadline passed while queued; not executed"))
                self.stats.record_failure(p.enqueued_ns)
                continue
            return p
        return None

    async def _collect(self) -> list[_Pending]:
        """The next batch: what is queued (up to max_batch_size rows), then — while requests keep
        arriving, up to max_queue_delay after the first — what arrives."""
        loop = asyncio.get_running_loop()
        first = self._pop_live(loop.time())
        if first is None:
            return []
        batch, rows = [first], first.request.batch_size
        if not self.batching:
            return batch
        give_up = loop.time() + self.max_delay_s
        while rows < self.max_batch_size:
            while self._queue and rows + self._queue[0].request.batch_size <= self.max_batch_size:
                p = self._pop_live(loop.time())
                if p is not None:
                    batch.append(p)
                    rows += p.request.batch_size
            if (self._queue and rows < self.max_batch_size) or loop.time() >= give_up:
                break  # the next request does not fit, or waited long enough
            before = self._arrivals
            await asyncio.sleep(0)  # let requests already received by the server reach the queue
            if self._arrivals == before:
                break  # nobody else is coming right now: waiting longer only adds latency
        return batch

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not (self._queue and self._free > 0):
                self._wakeup.clear()
                await self._wakeup.wait()
            self._free -= 1
            try:
                batch = await self._collect()
                if batch:
                    await self._execute(loop, batch)
            finally:
                self._release()

    def _inline_ok(self) -> bool:
        """Whether a one-row run may execute on the loop: measured cheap, and our own ONNX Runtime
        execute (a wrapped or replaced one may block for any time)."""
        return (self._one_row_samples >= self.INLINE_MIN_SAMPLES and self._one_row_ns <= self._inline_max_ns
                and getattr(self.runtime.execute, "__func__", None) is OnnxModel.execute)

    def _timed_execute(self, requests: list[InferRequest]) -> tuple[list[InferResult | HealthAIError],
                                                                     Timing]:
        clock = RUN_CLOCK  # the executor marks when this thread's model runs start and end
        clock.first_ns = clock.last_ns = 0
        start = time.perf_counter_ns()
        results = self.runtime.execute(requests)
        end = time.perf_counter_ns()
        if self._inline_max_ns and len(requests) == 1 and requests[0].batch_size == 1:
            ns = end - start  # races between instance threads only blur the average
            w = self.EWMA_WEIGHT if self._one_row_samples else 1.0
            self._one_row_ns += w * (ns - self._one_row_ns)
            self._one_row_samples += 1
        # a runtime that bypasses the executor: its whole execute counts as the model run
        return results, (start, clock.first_ns or start, clock.last_ns or end, end)

    async def _execute(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending], *,
                       inline: bool = False) -> None:
        requests = [p.request for p in batch]
        timing: Timing | None = None
        try:
            if inline:
                results, timing = self._timed_execute(requests)
            else:
                results, timing = await self._threads.run(self._timed_execute, requests)
        except Exception as exc:  # a runtime bug: fail this batch, keep serving
            log.exception("%s v%d: execute raised", self.runtime.name, self.runtime.version)
            results = [InternalError(f"model execution failed ({type(exc).__name__})")] * len(batch)
        done = time.perf_counter_ns()
        s = self.stats
        rows = succeeded = 0
        for p, result in zip(batch, results, strict=True):
            if p.future.done():  # cancelled while running: nobody gets the result
                s.fail.add(done - p.enqueued_ns)
            elif isinstance(result, HealthAIError):
                s.fail.add(done - p.enqueued_ns)
                p.future.set_exception(result)
            else:
                s.success.add(done - p.enqueued_ns)
                s.queue.add((timing[0] if timing else done) - p.enqueued_ns)
                rows += p.request.batch_size
                succeeded += 1
                p.future.set_result(result)
        if succeeded and timing is not None:
            self._record_execution(rows, succeeded, timing)

    def _record_execution(self, rows: int, succeeded: int, timing: Timing) -> None:
        """Triton's accounting of one execution: every successful request is credited the whole
        execution's input/infer/output durations; the batch statistics count the execution once."""
        start, first, last, end = timing
        s = self.stats
        s.execution_count += 1
        s.inference_count += rows
        s.last_inference_ms = int(time.time() * 1000)
        s.compute_input.add((first - start) * succeeded, succeeded)
        s.compute_infer.add((last - first) * succeeded, succeeded)
        s.compute_output.add((end - last) * succeeded, succeeded)
        b = s.batch_stats.get(rows)
        if b is None:
            b = s.batch_stats[rows] = BatchStatistics()
        b.compute_input.add(first - start)
        b.compute_infer.add(last - first)
        b.compute_output.add(end - last)
