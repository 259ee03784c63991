"""What KServe's ModelStatistics reports per model version, with Triton's meanings."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

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
    """Per model version, with Triton's meanings:

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

    def record_execution(self, rows: int, succeeded: int, timing: Timing) -> None:
        """Triton's accounting of one execution: every successful request is credited the whole
        execution's input/infer/output durations; the batch statistics count the execution once."""
        start, first, last, end = timing
        self.execution_count += 1
        self.inference_count += rows
        self.last_inference_ms = int(time.time() * 1000)
        self.compute_input.add((first - start) * succeeded, succeeded)
        self.compute_infer.add((last - first) * succeeded, succeeded)
        self.compute_output.add((end - last) * succeeded, succeeded)
        b = self.batch_stats.get(rows)
        if b is None:
            b = self.batch_stats[rows] = BatchStatistics()
        b.compute_input.add(first - start)
        b.compute_infer.add(last - first)
        b.compute_output.add(end - last)
