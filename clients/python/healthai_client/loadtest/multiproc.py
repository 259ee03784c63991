"""Load from several processes (``healthai-client load --processes N``): one Python process tops out
at a few thousand calls/s (the GIL), so a fast server needs several generators. Each child runs its
share — callers (closed loop) or rate (open loop, phase-shifted so the merged arrivals stay evenly
spaced) and requests — from the same wall-clock start; results are merged (histograms add exactly).

Children are started with ``spawn`` (gRPC does not survive ``fork``) and rebuild the workload from
a picklable factory, since workloads hold closures.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from functools import partial

from healthai_client.connection import ConnectionConfig
from healthai_client.loadtest.runner import LoadConfig, LoadResult, run_load
from healthai_client.loadtest.workloads import Workload

STARTUP_S = 3.0  # time the children get to import and connect before the common start


def _share(total: int, parts: int, i: int) -> int:
    return total // parts + (1 if i < total % parts else 0)


def child_configs(cfg: LoadConfig, processes: int) -> list[tuple[LoadConfig, float]]:
    """(config, start delay in seconds) per child."""
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    if cfg.mode == "closed" and processes > cfg.concurrency:
        raise ValueError(f"processes ({processes}) must not exceed concurrency ({cfg.concurrency})")
    out = []
    for i in range(processes):
        changes: dict[str, object] = {"seed": cfg.seed + i}
        if cfg.max_requests is not None:
            if cfg.max_requests < processes:
                raise ValueError(f"requests ({cfg.max_requests}) must be >= processes ({processes})")
            changes["max_requests"] = _share(cfg.max_requests, processes, i)
        delay = 0.0
        if cfg.mode == "closed":
            changes["concurrency"] = _share(cfg.concurrency, processes, i)
        else:
            changes["rate"] = cfg.rate / processes
            delay = 0.0 if cfg.poisson else i / cfg.rate  # child i sends at (i + kN) / rate
        out.append((dataclasses.replace(cfg, **changes), delay))  # type: ignore[arg-type]
    return out


def _child(conn: ConnectionConfig, make_workload: Callable[[], Workload], cfg: LoadConfig,
           start_at: float) -> LoadResult:
    return run_load(conn, make_workload(), cfg, start_at=start_at)


def merge(cfg: LoadConfig, parts: list[LoadResult], delays: list[float]) -> LoadResult:
    first = parts[0]
    merged = LoadResult(cfg, first.rpc, first.addresses, first.histogram,
                        errors=Counter(), records_per_request=first.records_per_request,
                        processes=len(parts))
    for part, delay in zip(parts, delays, strict=True):
        if part is not first:
            merged.histogram.merge(part.histogram)
        merged.errors.update(part.errors)
        for code, message in part.error_examples.items():
            merged.error_examples.setdefault(code, message)
        merged.send_offsets_s.extend(t + delay for t in part.send_offsets_s)
        merged.latencies_us.extend(part.latencies_us)
        merged.ok.extend(part.ok)
        merged.elapsed_s = max(merged.elapsed_s, part.elapsed_s + delay)
        merged.send_window_s = max(merged.send_window_s, part.send_window_s + delay)
        merged.max_lag_ms = max(merged.max_lag_ms, part.max_lag_ms)
    return merged


def run_load_processes(conn: ConnectionConfig, make_workload: Callable[[], Workload], cfg: LoadConfig,
                       processes: int) -> LoadResult:
    """Like ``run_load`` over ``processes`` child processes; ``make_workload`` must be picklable
    (a module-level function or a ``functools.partial`` of one)."""
    plan = child_configs(cfg, processes)
    start = time.time() + STARTUP_S
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=processes, mp_context=ctx) as pool:
        futures = [pool.submit(partial(_child, conn, make_workload, c, start + delay)) for c, delay in plan]
        parts = [f.result() for f in futures]
    return merge(cfg, parts, [delay for _, delay in plan])
