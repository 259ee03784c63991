"""Closed-loop and open-loop load generation on grpc.aio.

- closed loop: ``concurrency`` callers, each sending its next request when the previous one answers;
  latency = answer time - send time. Measures capacity at a given concurrency.
- open loop: requests are *scheduled* at a fixed rate (or Poisson arrivals at that mean rate)
  whatever the server does; latency = answer time - scheduled time, so queueing — in the server and
  in this client when it falls behind — shows up instead of being hidden (no coordinated omission).

Both stop at ``max_requests`` or ``duration_s``, whichever comes first. Calls go round-robin over the
addresses; with ``retry`` set, UNAVAILABLE is retried on the next address (backoff with jitter).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import grpc
import numpy as np

from healthai_client.connection import ConnectionConfig
from healthai_client.loadtest.histogram import LogLinearHistogram
from healthai_client.loadtest.rss import summarize
from healthai_client.loadtest.workloads import Workload
from healthai_client.retry import RetryPolicy

US = 1e6


@dataclass(frozen=True)
class LoadConfig:
    mode: Literal["closed", "open"] = "closed"
    concurrency: int = 8  # closed loop: callers
    rate: float = 100.0  # open loop: requests per second
    poisson: bool = False  # open loop: exponential gaps instead of a fixed interval
    max_requests: int | None = 1000
    duration_s: float | None = 30.0
    timeout_s: float = 10.0  # deadline per request
    max_in_flight: int = 10_000  # open loop: a send beyond this is not made and counted "CLIENT_OVERLOAD"
    retry: RetryPolicy | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("closed", "open"):
            raise ValueError(f"mode must be 'closed' or 'open', got {self.mode!r}")
        if self.max_requests is None and self.duration_s is None:
            raise ValueError("bound the run: give max_requests and/or duration_s")
        if self.max_requests is not None and self.max_requests < 1:
            raise ValueError(f"max_requests must be >= 1, got {self.max_requests}")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError(f"duration_s must be > 0, got {self.duration_s}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.rate <= 0:
            raise ValueError(f"rate must be > 0 requests/s, got {self.rate}")


@dataclass
class LoadResult:
    config: LoadConfig
    rpc: str
    addresses: tuple[str, ...]
    histogram: LogLinearHistogram  # latency of successful calls, microseconds
    errors: Counter[str] = field(default_factory=Counter)  # status code name -> count
    error_examples: dict[str, str] = field(default_factory=dict)  # status code name -> a message
    send_offsets_s: list[float] = field(default_factory=list)  # per call: scheduled/sent time
    latencies_us: list[float] = field(default_factory=list)  # per call (errors included)
    ok: list[bool] = field(default_factory=list)
    elapsed_s: float = 0.0
    max_lag_ms: float = 0.0  # open loop: how far behind schedule a send was made
    send_window_s: float = 0.0  # first to last send (open loop: the last send, not the last answer)
    records_per_request: int = 1
    processes: int = 1  # load generator processes merged into this result
    rss_samples: list[tuple[float, int]] = field(default_factory=list)  # server (s, bytes), if watched

    @property
    def requests(self) -> int:
        return len(self.ok)

    @property
    def succeeded(self) -> int:
        return self.histogram.total

    def throughput(self) -> float:
        return self.succeeded / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        lat = {k: (v / 1000 if k != "count" else int(v)) for k, v in self.histogram.summary().items()}
        c = self.config
        out: dict[str, Any] = {
            "rpc": self.rpc, "mode": c.mode, "addresses": list(self.addresses), "processes": self.processes,
            "concurrency": c.concurrency if c.mode == "closed" else None,
            "target_rate_per_s": c.rate if c.mode == "open" else None,
            "arrivals": ("poisson" if c.poisson else "fixed") if c.mode == "open" else None,
            "elapsed_s": round(self.elapsed_s, 4), "requests": self.requests, "succeeded": self.succeeded,
            "throughput_per_s": round(self.throughput(), 2),
            "records_per_s": round(self.throughput() * self.records_per_request, 2),
            "achieved_send_rate_per_s": round(self.requests / self.send_window_s, 2)
            if self.send_window_s else 0,
            "latency_ms": {k.replace("count", "samples"): (round(v, 4) if isinstance(v, float) else v)
                           for k, v in lat.items()},
            "errors": dict(self.errors),
            "error_examples": {k: v[:300] for k, v in self.error_examples.items()},
            "histogram": {"kind": "log-linear (HDR-style)", "significant_digits":
                          self.histogram.significant_digits, "unit": "us"},
        }
        if c.mode == "open":
            out["max_schedule_lag_ms"] = round(self.max_lag_ms, 3)
        if self.rss_samples:
            out["server_rss"] = summarize(self.rss_samples)
        return out


class _Target:
    """Round-robin over one channel per address; optional UNAVAILABLE retry on the next one."""

    def __init__(self, conn: ConnectionConfig, workload: Workload, retry: RetryPolicy | None,
                 seed: int) -> None:
        self.channels = [conn.aio_channel(a) for a in conn.addresses]
        self.calls = [workload.method(ch) for ch in self.channels]
        self.metadata = conn.metadata() or None
        self.retry = retry
        self.rng = random.Random(seed)
        self.i = 0
        self.examples: dict[str, str] = {}  # status code -> first message seen

    async def call(self, request: Any, deadline: float) -> str:
        """Returns "OK" or the final status code name."""
        attempt = 0
        self.i = start = (self.i + 1) % len(self.calls)  # this call's first address; retries walk on
        while True:
            attempt += 1
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return grpc.StatusCode.DEADLINE_EXCEEDED.name
            try:
                call = self.calls[(start + attempt - 1) % len(self.calls)]
                await call(request, timeout=remaining, metadata=self.metadata)
                return "OK"
            except grpc.aio.AioRpcError as e:
                code = e.code()
                self.examples.setdefault(code.name, e.details() or "")
                if (self.retry is None or code != grpc.StatusCode.UNAVAILABLE
                        or attempt >= self.retry.max_attempts):
                    return code.name
            if attempt >= len(self.calls):
                await asyncio.sleep(self.retry.backoff_s(attempt - len(self.calls) + 1, self.rng))

    async def close(self) -> None:
        for ch in self.channels:
            await ch.close()


async def _closed(cfg: LoadConfig, target: _Target, workload: Workload, res: LoadResult, t0: float) -> None:
    end = t0 + cfg.duration_s if cfg.duration_s else float("inf")
    budget = [cfg.max_requests if cfg.max_requests is not None else float("inf")]

    async def caller() -> None:
        while budget[0] > 0 and time.perf_counter() < end:
            budget[0] -= 1
            request = workload.next_request()
            sent = time.perf_counter()
            status = await target.call(request, sent + cfg.timeout_s)
            _record(res, sent - t0, (time.perf_counter() - sent) * US, status)

    await asyncio.gather(*(caller() for _ in range(cfg.concurrency)))


async def _open(cfg: LoadConfig, target: _Target, workload: Workload, res: LoadResult, t0: float) -> None:
    rng = np.random.default_rng(cfg.seed)
    limit = cfg.max_requests if cfg.max_requests is not None else float("inf")
    end = cfg.duration_s if cfg.duration_s else float("inf")
    tasks: set[asyncio.Task[None]] = set()

    async def one(scheduled: float) -> None:
        status = await target.call(workload.next_request(), scheduled + cfg.timeout_s)
        _record(res, scheduled - t0, (time.perf_counter() - scheduled) * US, status)

    offset, n = 0.0, 0
    while n < limit and offset < end:
        scheduled = t0 + offset
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        res.max_lag_ms = max(res.max_lag_ms, (time.perf_counter() - scheduled) * 1e3)
        if len(tasks) >= cfg.max_in_flight:
            _record(res, offset, (time.perf_counter() - scheduled) * US, "CLIENT_OVERLOAD")
        else:
            task = asyncio.create_task(one(scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        n += 1
        offset = offset + rng.exponential(1 / cfg.rate) if cfg.poisson else n / cfg.rate
    # n sends over n intervals: the window ends one interval after the last send was due
    res.send_window_s = max(time.perf_counter() - t0, offset)
    if tasks:
        await asyncio.gather(*tasks)


def _record(res: LoadResult, offset_s: float, latency_us: float, status: str) -> None:
    res.send_offsets_s.append(offset_s)
    res.latencies_us.append(latency_us)
    res.ok.append(status == "OK")
    if status != "OK":
        res.errors[status] += 1


async def run_load_async(conn: ConnectionConfig, workload: Workload, cfg: LoadConfig, *,
                         start_at: float | None = None) -> LoadResult:
    """Run one load test; ``start_at`` (a ``time.time()`` value) delays the start so that several
    processes begin together."""
    target = _Target(conn, workload, cfg.retry, cfg.seed)
    res = LoadResult(cfg, workload.name, conn.addresses, LogLinearHistogram(),
                     records_per_request=workload.records_per_request)
    try:
        if start_at is not None:
            await asyncio.sleep(max(0.0, start_at - time.time()))
        t0 = time.perf_counter()
        await (_closed if cfg.mode == "closed" else _open)(cfg, target, workload, res, t0)
        res.elapsed_s = time.perf_counter() - t0
        res.send_window_s = res.send_window_s or res.elapsed_s
        ok = np.asarray(res.ok, dtype=bool)
        res.histogram.record_many(np.asarray(res.latencies_us, dtype=np.float64)[ok])
    finally:
        res.error_examples = dict(target.examples)
        await target.close()
    return res


def run_load(conn: ConnectionConfig, workload: Workload, cfg: LoadConfig, *,
             start_at: float | None = None) -> LoadResult:
    return asyncio.run(run_load_async(conn, workload, cfg, start_at=start_at))
