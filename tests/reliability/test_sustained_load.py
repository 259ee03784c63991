"""Sustained load: Risk.Score at ~80% of the capacity measured a moment before, open loop, for 60 s
against a real ``healthai serve``: no call fails and resident memory stays flat after warm-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from .loadkit import measure_capacity, open_loop, risk_workload
from .serverkit import RssSampler, log_problems, server_process

LOAD_FRACTION = 0.8
DURATION_S = 60.0
WARMUP_S = 10.0
MAX_RSS_GROWTH = 0.10


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_sustained_80_percent_of_capacity_no_errors_flat_memory(tmp_path: Path) -> None:
    with server_process(tmp_path) as server:
        capacity = measure_capacity(server.address, risk_workload, concurrency=8)
        rate = LOAD_FRACTION * capacity.floor  # the conservative estimate on a shared machine
        with RssSampler(server.proc.pid) as rss:
            # A generous deadline: a burst from the machine's other tenants may queue calls for a
            # moment; what must not happen is a call that fails.
            res = open_loop(server.address, risk_workload(), rate, DURATION_S, timeout_s=10.0)
        print(f"capacity {capacity.floor:.0f}/s (runs {[round(r) for r in capacity.runs]}); "
              f"offered {rate:.0f}/s for {DURATION_S:.0f}s: {res.to_dict()}")
        assert res.errors == {}, f"{dict(res.errors)}: {res.error_examples}\n{log_problems(server)}"
        assert res.succeeded == res.requests >= 0.9 * rate * DURATION_S  # the load really ran
        warm = rss.between(WARMUP_S - 2, WARMUP_S + 2)
        late = rss.between(DURATION_S - 10, DURATION_S + 5)
        assert warm and late, rss.samples
        baseline, peak = sorted(warm)[len(warm) // 2], max(late)
        print(f"RSS after warm-up {baseline} KiB, peak in the last 10 s {peak} KiB "
              f"({100 * (peak / baseline - 1):+.1f}%)")
        assert peak < baseline * (1 + MAX_RSS_GROWTH), rss.samples
