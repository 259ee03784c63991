"""Per-model-version scheduler: a bounded queue in front of ``runtime.execute``, with dynamic batching.

Like Triton's dynamic batcher: requests coalesce up to ``max_batch_size`` rows, and the first of a
batch waits at most ``max_queue_delay_microseconds`` for company. Unlike a fixed timer, the wait
lasts only while requests keep arriving (checked every event-loop turn): a lone or closed-loop caller
is never held back for company that cannot come. A request that finds the model idle (nothing
queued, an instance free) starts at once, itself, without a hop through a worker task: with
closed-loop callers (each sends its next request after its answer) a loop turn of waiting was
measured to find no company even at concurrency 32, so it only added latency. Requests that find
every instance busy queue; a batch forms from everything that queued while the previous one ran.

On a busy event loop (the server's loop, ``idle.new_event_loop``, has had no moment with nothing to
run since the previous request arrived) a request that would run inline waits for company instead:
grpc.aio hands the loop one new call per turn, so company only comes over many turns. It runs once
the loop has been idle for ``idle_grace_us`` (a loaded server's loop pauses while its callers are
between calls; a new call restarts the grace, other busy turns do not, and a batch as large as the
largest recent one ends it: with a few closed-loop callers nobody is left to come), when the batch is
full, or after ``busy_window_us`` (at least the model's max_queue_delay), whichever comes first.
The wait costs no throughput — the loop has other calls to serve — and one execution serves many
calls. A loop that waited for I/O since the previous arrival (a lone caller, light load) never
holds a request back. Such a batch runs on the loop when its estimate fits ``busy_window_us`` (not
only ``inline_max_us``): on a saturated loop, handing it to a thread cost more loop CPU than running
it (measured with Risk.Score at concurrency 32).

Where a batch executes (adaptive, per model version): on the event loop when it is small enough —
our own ONNX Runtime execute, and its rows' measured cost (moving averages of one-row executions and
of the per-row cost of larger ones) at most ``inline_max_us`` — else on the scheduler's threads. For a
small model, handing a run to a thread and back costs more than the run (two thread wake-ups, a GIL
hand-over, an extra loop wake-up, each a context switch that a busy machine makes slow), and the loop
is held for no longer than that hand-off would take. Large batches, slow models, wrapped executes and
other runtimes (Triton) always run on the threads; the first executions of each kind are measured
there before anything runs inline.

A full queue answers RESOURCE_EXHAUSTED at once; a request whose deadline passed is not executed; a
cancelled request leaves the queue immediately; a cancelled caller never loses the other requests of
a batch it started (a thread reports completion to the scheduler, not to the caller).

Metrics: every execution's rows go to ``healthai_batch_size{model}``; the queue's length is read at
each scrape as ``healthai_queue_depth{queue="<model>-v<version>"}`` (the series goes when it closes).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from healthai.errors import DeadlineExceeded, HealthAIError, InternalError, NotReady, Overloaded
from healthai.observability import metrics
from healthai.serving.runtime import idle
from healthai.serving.runtime.contract import InferRequest, InferResult, ModelRuntime
from healthai.serving.runtime.execution import ExecutionCost, ExecutionThreads
from healthai.serving.runtime.executor import RUN_CLOCK
from healthai.serving.runtime.onnx import OnnxModel
from healthai.serving.runtime.statistics import BatchStatistics, Counter, Statistics, Timing

log = logging.getLogger(__name__)

__all__ = ["BatchStatistics", "Counter", "ExecutionCost", "ExecutionThreads", "Scheduler", "Statistics"]

Outcome = tuple[list[InferResult | HealthAIError], Timing]


@dataclass(eq=False)
class _Pending:
    request: InferRequest
    future: asyncio.Future[InferResult]
    deadline: float | None
    enqueued_ns: int = field(default_factory=time.perf_counter_ns)


class Scheduler:
    """Queues requests for one runtime and executes them in batches, on the loop or on threads."""

    def __init__(self, runtime: ModelRuntime, *, max_queue: int, batching: bool = True,
                 instances: int = 1, inline_max_us: float = 0.0, busy_window_us: float = 0.0,
                 idle_grace_us: float = 0.0) -> None:
        cfg = runtime.config
        self.runtime = runtime
        self.batching = batching and cfg.HasField("dynamic_batching") and cfg.max_batch_size > 0
        self.max_batch_size = max(cfg.max_batch_size, 1)
        self.max_delay_s = cfg.dynamic_batching.max_queue_delay_microseconds / 1e6 if self.batching else 0.0
        # how long a request may wait for company on a busy loop (0: never; see _start_gather)
        self.busy_window_s = max(self.max_delay_s, busy_window_us / 1e6) if busy_window_us > 0 else 0.0
        self.idle_grace_s = idle_grace_us / 1e6  # a gathering batch waits this long on an idle loop
        self.max_queue = max_queue
        self.stats = Statistics()
        self.cost = ExecutionCost()
        self._queue: collections.deque[_Pending] = collections.deque()
        self._wakeup = asyncio.Event()
        self._closed = False
        self._instances = instances
        self._free = instances  # execution slots not in use
        self._arrivals = 0
        self._inline_max_ns = inline_max_us * 1000 if isinstance(runtime, OnnxModel) else 0.0
        self._loop = loop = asyncio.get_running_loop()
        self._idle = idle.selector_of(loop)  # None: never hold a request back for company
        self._idle_seen = -1  # the loop's idle-wait count at the previous arrival
        self._gather: asyncio.TimerHandle | None = None  # a batch is gathering (its delay bound)
        self._gather_rows = 0  # rows queued for it (the queue holds exactly its requests)
        self._recent_sizes: collections.deque[int] = collections.deque(maxlen=8)  # requests per gather
        self._idle_hook = False  # our flush is registered to run when the loop goes idle
        self._threads = ExecutionThreads(loop, instances, f"{runtime.name}-v{runtime.version}")
        self._workers = [loop.create_task(self._work()) for _ in range(instances)]
        self._depth = self._queue.__len__  # what healthai_queue_depth reads (one object: untracked by it)
        self._observe_rows, self._depth_queue = _metrics(self, f"{runtime.name}-v{runtime.version}")

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def infer(self, request: InferRequest, *, timeout: float | None = None) -> InferResult:
        """Queues one request and waits for its result; raises HealthAIError (incl. Overloaded)."""
        if self._closed:
            self.stats.fail.add(0)
            raise NotReady(f"model {self.runtime.name!r} version {self.runtime.version} is unloading")
        if len(self._queue) >= self.max_queue:
            self.stats.record_failure(time.perf_counter_ns())
            raise Overloaded(f"model {self.runtime.name!r} version {self.runtime.version}: queue is full "
                             f"({self.max_queue} requests waiting); retry later")
        self._arrivals += 1
        busy = self._busy_since_last_arrival()
        gather = busy and self.batching and self.busy_window_s
        if not self._queue and self._free > 0 and not gather and (timeout is None or timeout > 0) \
                and self._inline_ok(request.batch_size):
            return self._run_now(request, time.perf_counter_ns())  # idle and cheap: here and now
        loop = asyncio.get_running_loop()
        pending = _Pending(request, loop.create_future(), None if timeout is None else loop.time() + timeout)
        self._queue.append(pending)
        try:
            if self._gather is not None:  # joins the batch being gathered
                self._join_gather(request.batch_size)
            elif self._free > 0 and len(self._queue) == 1 and gather and self._inline_ok(request.batch_size):
                self._free -= 1  # the loop is busy: wait for company until it would go idle
                self._start_gather(loop, request.batch_size)
            elif self._free > 0 and len(self._queue) == 1:  # idle: start at once, no worker task hop
                self._free -= 1
                batch: list[_Pending] = []
                self._take(loop, batch, 0)  # itself, unless its deadline already passed
                if batch:
                    self._start(batch)
                else:
                    self._release()
            else:
                self._wakeup.set()
            return await pending.future  # done already when the batch ran inline
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
        if self._depth_queue is not None:
            metrics.untrack_queue_depth(self._depth_queue, self._depth)

    # -- batches --------------------------------------------------------------------------------
    def _busy_since_last_arrival(self) -> bool:
        """Whether the event loop has not once had nothing to run since the previous request
        arrived (always False on a loop without an IdleSelector)."""
        if self._idle is None:
            return False
        waits = self._idle.idle_waits
        busy, self._idle_seen = waits == self._idle_seen, waits
        return busy

    def _start_gather(self, loop: asyncio.AbstractEventLoop, rows: int) -> None:
        """With a slot taken: the queued request waits for company while the loop is busy — until
        the loop would go idle, the batch is full, or the busy window passed, whichever comes first."""
        self._gather = loop.call_at(loop.time() + self.busy_window_s, self._flush)
        self._gather_rows = rows
        if self._idle is not None:
            if not self._idle_hook:
                self._idle_hook = True
                self._idle.call_when_idle(self._on_idle, self.idle_grace_s)
            self._pace_grace(self._idle)

    def _join_gather(self, rows: int) -> None:
        """A request joined the gathering batch: it runs when full, else see ``_pace_grace``."""
        self._gather_rows += rows
        if self._gather_rows >= self.max_batch_size:
            self._flush()
        elif self._idle is not None:
            self._pace_grace(self._idle)

    def _pace_grace(self, selector: idle.IdleSelector) -> None:
        """The idle grace ends once the gathering batch is as large as the largest of the recent ones
        (with a few closed-loop callers everyone who could come has come; a lone caller on a loop kept
        busy by other work finds no company), else it starts again (a new call came)."""
        if len(self._queue) >= max(self._recent_sizes, default=self.max_batch_size):
            selector.end_grace()
        else:
            selector.restart_grace()

    def _on_idle(self) -> None:
        self._idle_hook = False
        self._flush()

    def _flush(self) -> None:
        """Ends the gathering: starts what is queued (up to max_batch_size rows) with the slot taken."""
        if self._gather is None:
            return
        self._gather.cancel()
        self._gather = None
        batch: list[_Pending] = []
        self._take(self._loop, batch, 0)
        if batch:  # on a busy loop a thread hand-off costs the loop more than running it here
            self._recent_sizes.append(len(batch))
            self._start(batch, budget_ns=self.busy_window_s * 1e9)
        else:
            self._release()

    async def _lead(self, loop: asyncio.AbstractEventLoop) -> None:
        """With a slot taken: collect a batch, waiting for company, and start it. If the task is
        cancelled while waiting, what it took goes back to the front of the queue."""
        batch: list[_Pending] = []
        try:
            await self._collect(loop, batch)
        except BaseException:
            self._queue.extendleft(reversed(batch))
            self._release()
            raise
        if batch:
            self._start(batch)
        else:
            self._release()

    async def _work(self) -> None:
        """Starts batches from the queue whenever requests wait and an instance is free."""
        loop = asyncio.get_running_loop()
        while True:
            while not (self._queue and self._free > 0):
                self._wakeup.clear()
                await self._wakeup.wait()
            self._free -= 1
            await self._lead(loop)

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

    def _take(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending], rows: int) -> int:
        """Moves queued live requests into ``batch`` while they fit (the first always); returns rows."""
        while self._queue and (not batch or rows + self._queue[0].request.batch_size <= self.max_batch_size):
            p = self._pop_live(loop.time())
            if p is not None:
                batch.append(p)
                rows += p.request.batch_size
            if not self.batching:
                break
        return rows

    async def _collect(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        """Fills ``batch``: what is queued (up to max_batch_size rows), then — while requests keep
        arriving, up to max_queue_delay after the first — what arrives."""
        rows = self._take(loop, batch, 0)
        if not batch or not self.batching:
            return
        give_up = loop.time() + self.max_delay_s
        while rows < self.max_batch_size:
            if (self._queue and rows < self.max_batch_size) or loop.time() >= give_up:
                break  # the next request does not fit, or waited long enough
            before = self._arrivals
            await asyncio.sleep(0)  # let requests already received by the server reach the queue
            if self._arrivals == before:
                break  # nobody else is coming right now: waiting longer only adds latency
            rows = self._take(loop, batch, rows)

    def _start(self, batch: list[_Pending], budget_ns: float = 0.0) -> None:
        """Executes the batch inline (all its futures are done on return) or hands it to a thread;
        either way the slot is released when the execution ends. ``budget_ns`` raises the inline
        budget (a batch gathered on a busy loop)."""
        requests = [p.request for p in batch]
        if self._inline_ok(sum(r.batch_size for r in requests), budget_ns):
            try:
                outcome: Outcome | None = self._timed_execute(requests)
                error = None
            except Exception as exc:
                outcome, error = None, exc
            self._finish(batch, outcome, error)
        else:
            self._threads.submit(self._timed_execute, requests, functools.partial(self._finish, batch))

    def _inline_ok(self, rows: int, budget_ns: float = 0.0) -> bool:
        """Whether ``rows`` rows may execute on the loop: measured cheap (within the inline budget,
        or ``budget_ns`` if larger), and our own ONNX Runtime execute (a wrapped or replaced one may
        block for any time)."""
        own = getattr(self.runtime.execute, "__func__", None) is OnnxModel.execute
        if not (self._inline_max_ns and own):
            return False
        estimate = self.cost.estimate_ns(rows)
        return estimate is not None and estimate <= max(self._inline_max_ns, budget_ns)

    def _timed_execute(self, requests: list[InferRequest]) -> Outcome:
        clock = RUN_CLOCK  # the executor marks when this thread's model runs start and end
        clock.first_ns = clock.last_ns = 0
        start = time.perf_counter_ns()
        results = self.runtime.execute(requests)
        end = time.perf_counter_ns()
        rows = sum(r.batch_size for r in requests)
        self._observe_rows(rows)
        if self._inline_max_ns:
            self.cost.add(rows, end - start)
        # a runtime that bypasses the executor: its whole execute counts as the model run
        return results, (start, clock.first_ns or start, clock.last_ns or end, end)

    def _run_now(self, request: InferRequest, enqueued_ns: int) -> InferResult:
        """A lone request on an idle model, measured cheap: executed on the loop at once, answered
        by return or raise (the latency floor: no future, no queue hop), counted as ``_finish``."""
        try:
            outcome: Outcome | None = self._timed_execute([request])
            error = None
        except Exception as exc:
            outcome, error = None, exc
        [result], timing = self._results(outcome, error, 1)
        done = time.perf_counter_ns()
        s = self.stats
        if isinstance(result, HealthAIError) or timing is None:
            s.fail.add(done - enqueued_ns)
            raise result
        s.success.add(done - enqueued_ns)
        s.queue.add(timing[0] - enqueued_ns)
        s.record_execution(request.batch_size, 1, timing)
        return result

    def _results(self, outcome: Outcome | None, error: BaseException | None,
                 n: int) -> tuple[list[InferResult | HealthAIError], Timing | None]:
        """One result per request of an execution; a runtime bug fails them all (logged), and the
        server keeps serving."""
        if error is None and outcome is not None and len(outcome[0]) != n:
            error = InternalError(f"execute answered {len(outcome[0])} results for {n} requests")
        if error is None and outcome is not None:
            return outcome
        log.error("%s v%d: execute raised %s", self.runtime.name, self.runtime.version,
                  type(error).__name__, exc_info=error)
        return [InternalError(f"model execution failed ({type(error).__name__})")] * n, None

    def _finish(self, batch: list[_Pending], outcome: Outcome | None, error: BaseException | None) -> None:
        """On the loop, once per execution: answers the batch's requests, counts, frees the slot."""
        try:
            results, timing = self._results(outcome, error, len(batch))
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
                s.record_execution(rows, succeeded, timing)
        finally:
            self._release()


def _metrics(scheduler: Scheduler, queue: str) -> tuple[Callable[[float], None], str | None]:
    """(the batch-size observer, the tracked queue name) of a scheduler; a model name that cannot be
    a metric label (``metrics._label``) reports nothing rather than refusing the model."""
    observe: Callable[[float], None] = _no_observer
    try:
        observe = metrics.batch_size_observer(scheduler.runtime.name)
        metrics.track_queue_depth(queue, scheduler._depth)
    except ValueError:
        log.debug("model %r: no batch size / queue depth metrics (not a label value)", scheduler.runtime.name)
        return observe, None
    return observe, queue


def _no_observer(rows: float) -> None:
    return None
