"""Sustained load: Risk.Score at ~80% of the capacity measured a moment before, open loop, for 60 s
against a real ``healthai serve``: no call fails and resident memory stays flat after warm-up."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest

from .loadkit import measure_capacity, open_loop, risk_workload
from .serverkit import RssSampler, log_problems, rss_kib, server_process

LOAD_FRACTION = 0.8
DURATION_S = 60.0
WARMUP_S = 10.0
MAX_RSS_GROWTH = 0.10


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_sustained_80_percent_of_capacity_no_errors_flat_memory(tmp_path: Path) -> None:
    # gRPC core refuses (CANCELLED) calls beyond ~1000 waiting to be picked up; a stall of a second
    # or two caused by the machine's other tenants reaches that at this rate. Let the queue absorb
    # such stalls here: the deadline still bounds every call, and any refusal still fails the test.
    with server_process(tmp_path, ["--max-pending-rpcs", "20000"]) as server:
        capacity = measure_capacity(server.address, risk_workload, concurrency=8)
        rate = LOAD_FRACTION * capacity.floor  # the conservative estimate on a shared machine
        with RssSampler(server.proc.pid) as rss:
            # A generous deadline: a burst from the machine's other tenants may queue calls for a
            # moment; what must not happen is a call that fails.
            res = open_loop(server.address, risk_workload(), rate, DURATION_S, timeout_s=10.0)
        d = res.to_dict()
        summary = (f"capacity {capacity.floor:.0f}/s (closed-loop runs {[round(r) for r in capacity.runs]}); "
                   f"offered {rate:.0f}/s for {DURATION_S:.0f}s: {d['requests']} calls, "
                   f"{d['throughput_per_s']}/s, latency ms {d['latency_ms']}, errors {d['errors']}, "
                   f"max send lag {d['max_schedule_lag_ms']} ms")
        print(summary)
        failed_at = sorted({int(t) for t, ok in zip(res.send_offsets_s, res.ok, strict=True) if not ok})
        assert res.errors == {}, (f"{summary}; failures sent in seconds {failed_at}: {res.error_examples}\n"
                                  f"{log_problems(server)}")
        assert res.succeeded == res.requests >= 0.9 * rate * DURATION_S  # the load really ran
        # Medians, not peaks: a moment of backlog (requests buffered while the machine's other tenants
        # hold the CPU) is not a leak; a leak moves the median of the last 10 s and the idle value.
        time.sleep(1.0)
        after = rss_kib(server.proc.pid)  # the load is over and drained
        warm = rss.between(WARMUP_S - 2, WARMUP_S + 2)
        late = rss.between(DURATION_S - 10, DURATION_S + 5)
        assert warm and late, rss.samples
        baseline, late_median = statistics.median(warm), statistics.median(late)
        print(f"RSS after warm-up {baseline:.0f} KiB; median of the last 10 s {late_median:.0f} KiB "
              f"({100 * (late_median / baseline - 1):+.1f}%), peak {max(late)} KiB, "
              f"after the load {after} KiB "
              f"({100 * (after / baseline - 1):+.1f}%)")
        # A leak stays after the load has drained. While calls back up (the machine's other tenants
        # took CPU: median latency of seconds, sends behind schedule) the buffered calls are in RSS
        # too: the median of the last 10 s counts only when the load was served as it came.
        kept_up = d["latency_ms"]["p50"] < 100 and d["max_schedule_lag_ms"] < 1000
        assert after < baseline * (1 + MAX_RSS_GROWTH), (after, rss.samples)
        if kept_up:
            assert late_median < baseline * (1 + MAX_RSS_GROWTH), rss.samples
