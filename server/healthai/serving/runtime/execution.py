"""Where and how fast a model version's executions run: the scheduler's threads and the measured
cost that decides whether a batch may run on the event loop instead (``scheduler.Scheduler``)."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["ExecutionCost", "ExecutionThreads"]


class ExecutionThreads:
    """The threads that run ``runtime.execute``: a plain queue in, one ``call_soon_threadsafe`` out
    per execution (no concurrent.futures chain, no future to wake a waiting task through)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, count: int, name: str) -> None:
        self._loop = loop
        self._jobs: queue.SimpleQueue[tuple[Callable[[Any], Any], Any,
                                            Callable[[Any, BaseException | None], None]] | None] = \
            queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._serve, name=f"{name}-{i}", daemon=True)
                         for i in range(count)]
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable[[Any], Any], arg: Any,
               done: Callable[[Any, BaseException | None], None]) -> None:
        """Runs ``fn(arg)`` on a thread, then ``done(result, error)`` on the loop."""
        self._jobs.put((fn, arg, done))

    def shutdown(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        for t in self._threads:
            t.join()

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, arg, done = job
            try:
                result, error = fn(arg), None
            except BaseException as exc:  # reported to the scheduler, which logs it
                result, error = None, exc
            self._loop.call_soon_threadsafe(done, result, error)


class ExecutionCost:
    """Moving averages of measured execute times: one-row executions, and ns per row of larger ones."""

    MIN_SAMPLES = 8  # executions measured (on the threads) before an estimate is given
    WEIGHT = 0.2

    def __init__(self) -> None:
        self.one_row_ns = 0.0
        self.one_row_samples = 0
        self.per_row_ns = 0.0
        self.per_row_samples = 0

    def add(self, rows: int, ns: int) -> None:
        """One measured execution. A sample counts for at most twice the current average: a run
        preempted on a busy machine (wall time, not the run's cost) moves it by 20 % at most,
        while a model that really got slower is followed within a few executions."""
        # races between instance threads only blur the averages
        if rows == 1:
            self.one_row_ns = self._update(self.one_row_ns, self.one_row_samples, ns)
            self.one_row_samples += 1
        else:
            self.per_row_ns = self._update(self.per_row_ns, self.per_row_samples, ns / rows)
            self.per_row_samples += 1

    def _update(self, average: float, samples: int, value: float) -> float:
        if not samples:
            return value
        return average + self.WEIGHT * (min(value, 2 * average) - average)

    def estimate_ns(self, rows: int) -> float | None:
        """Expected execute time of ``rows`` rows (per-row cost includes the fixed cost: an
        overestimate for small batches), or None while too few were measured."""
        if rows == 1:
            return self.one_row_ns if self.one_row_samples >= self.MIN_SAMPLES else None
        return self.per_row_ns * rows if self.per_row_samples >= self.MIN_SAMPLES else None
