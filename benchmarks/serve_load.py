"""Load generation and table helpers of the serving benchmark (``benchmarks/serve.py``): blocking
latency pairs and interleaved closed-loop throughput against a real ``healthai serve`` subprocess,
with the server's CPU per call from /proc."""

from __future__ import annotations

import asyncio
import itertools
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import numpy as np

from healthai.app.testing import process_cpu_ns, start_server_process


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def table(title: str, header: list[str], rows: list[list[object]]) -> str:
    lines = [f"\n### {title}\n", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def rpc_cycle(stub_cls: type, method: str,
              requests: list[object]) -> Callable[[grpc.Channel], Callable[[], object]]:
    """channel -> a no-argument call of ``stub.method``, each call sending the next of ``requests``
    (blocking or aio, as the channel). Distinct patients in turn: batches then hold distinct rows,
    which the risk task's de-duplication cannot fold into one."""
    def bind(channel: grpc.Channel) -> Callable[[], object]:
        call = getattr(stub_cls(channel), method)
        cycle = itertools.cycle(requests)
        return lambda: call(next(cycle))

    return bind


def rpc(stub_cls: type, method: str, request: object) -> Callable[[grpc.Channel], Callable[[], object]]:
    """:func:`rpc_cycle` of one request."""
    return rpc_cycle(stub_cls, method, [request])


def latency_pairs(port: int, calls: dict[str, Callable[[grpc.Channel], Callable[[], object]]],
                  n: int, pid: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Concurrency 1, blocking stub; the calls alternate in blocks of 50 so drift hits all alike.
    Returns the latencies (µs) and, given the server's pid, its CPU µs per call (median over blocks):
    unlike wall time, hardly moved by other processes on a shared machine."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        fns = {k: make(channel) for k, make in calls.items()}
        for fn in fns.values():
            for _ in range(50):
                fn()
        times: dict[str, list[float]] = {k: [] for k in fns}
        cpu: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(max(n // 50, 1)):
            for k, fn in fns.items():
                c0 = process_cpu_ns(pid) if pid else 0
                for _ in range(50):
                    t = time.perf_counter()
                    fn()
                    times[k].append(time.perf_counter() - t)
                if pid:
                    cpu[k].append((process_cpu_ns(pid) - c0) / 50 / 1e3)
    return ({k: np.array(v) * 1e6 for k, v in times.items()},
            {k: float(np.median(v)) if v else float("nan") for k, v in cpu.items()})


async def _closed_loop(port: int, make: Callable[[grpc.aio.Channel], Callable[[], Awaitable[object]]],
                       concurrency: int, seconds: float, pid: int | None = None) -> tuple[float, float]:
    """(requests/s, server CPU µs per request — NaN without the server's pid)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = make(channel)
        for _ in range(20):
            await call()
        done = 0
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                await call()
                done += 1

        c0 = process_cpu_ns(pid) if pid else 0
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        rate = done / (time.perf_counter() - start)
        cpu = (process_cpu_ns(pid) - c0) / max(done, 1) / 1e3 if pid else float("nan")
        return rate, cpu


def interleaved(loads: dict[tuple[str, int], tuple[int, object, int, int | None]], seconds: float,
                slices: int = 4) -> dict[tuple[str, int], tuple[float, float]]:
    """(requests/s, server CPU µs/request) of each (port, call, concurrency, server pid) load, run in
    alternating slices of seconds/slices."""
    rates: dict[tuple[str, int], list[tuple[float, float]]] = {k: [] for k in loads}
    for _ in range(slices):
        for key, (port, make, c, pid) in loads.items():
            rates[key].append(asyncio.run(_closed_loop(port, make, c, seconds / slices, pid)))
    return {k: (float(np.mean([r for r, _ in v])), float(np.median([u for _, u in v])))
            for k, v in rates.items()}


def start(repo: Path, work: Path, *, batching: bool, threads: int) -> tuple[object, int]:
    env = {"HEALTHAI_SERVING__MODEL_REPOSITORY": str(repo), "HEALTHAI_SERVING__RELOAD_POLL_S": "0",
           "HEALTHAI_SERVING__DYNAMIC_BATCHING": str(batching).lower(),
           "HEALTHAI_SERVING__INTRA_OP_THREADS": str(threads), "HEALTHAI_LOG_LEVEL": "WARNING"}
    store = tempfile.mkdtemp(dir=work)
    return start_server_process(["--dev", "--store-uri", store], env=env, timeout=180)


def timed(fn: Callable[[], object], budget_s: float, min_reps: int = 3) -> float:
    """Median wall time (ms) of fn over at least min_reps runs or budget_s seconds."""
    fn()
    times = []
    end = time.perf_counter() + budget_s
    while len(times) < min_reps or time.perf_counter() < end:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e3
