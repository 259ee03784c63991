"""The load harness: histogram percentiles against numpy, open-loop latency counted from the
scheduled time, and short closed- and open-loop runs against a real server (JSON + PNG written)."""

from __future__ import annotations

import asyncio
import json
import os
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from healthai_client import RetryPolicy
from healthai_client.cli import main
from healthai_client.connection import ConnectionConfig
from healthai_client.loadtest import LoadConfig, LogLinearHistogram, run_load
from healthai_client.loadtest.multiproc import child_configs, run_load_processes
from healthai_client.loadtest.rss import RssSampler, summarize
from healthai_client.loadtest.workloads import Workload, echo, forecast, ingest, score
from tests.conftest import free_port

from .model_repo import FORECAST_MODEL, REGIONS, RISK_FEATURES, RISK_MODEL

PERCENTILES = (0, 1, 25, 50, 90, 99, 99.9, 99.99, 100)


@pytest.mark.parametrize("dist", ["lognormal", "uniform", "bimodal"])
def test_histogram_percentiles_match_numpy(dist: str) -> None:
    rng = np.random.default_rng(42)
    values = {"lognormal": lambda: rng.lognormal(7, 1.5, 300_000),
              "uniform": lambda: rng.uniform(0, 5e6, 300_000),
              "bimodal": lambda: np.concatenate([rng.normal(500, 20, 200_000),
                                                 rng.normal(2e5, 1e4, 1000)])}[dist]()
    values = np.rint(np.clip(values, 0, None))
    h = LogLinearHistogram(significant_digits=3)
    for chunk in np.array_split(values, 7):
        h.record_many(chunk)
    assert h.total == values.size and h.mean == pytest.approx(values.mean())
    for p in PERCENTILES:
        exact = np.percentile(values, p, method="inverted_cdf")  # nearest rank, like the histogram
        assert h.percentile(p) == pytest.approx(exact, rel=1e-3, abs=0.5), p


def test_histogram_buckets_exact_small_values_and_merge() -> None:
    h, other = LogLinearHistogram(significant_digits=2), LogLinearHistogram(significant_digits=2)
    h.record_many([1, 2, 3, 4])
    other.record_many([5, 6, 7, 8, 9, 10])
    h.merge(other)
    assert [h.percentile(p) for p in (10, 50, 100)] == [1, 5, 10]
    for v in [0, 1, 255, 256, 257, 1000, 4095, 4096, 10**6, 123_456_789]:  # bucket holds its value
        lo, hi = h.bucket_bounds(h._index(v))
        assert lo <= v <= hi and (hi - lo) <= max(1, v / h.half)
    with pytest.raises(ValueError, match="finite"):
        h.record_many([1.0, float("nan")])
    with pytest.raises(ValueError, match="same significant_digits"):
        h.merge(LogLinearHistogram(significant_digits=3))
    assert np.isnan(LogLinearHistogram().percentile(50))


def test_open_loop_counts_queueing_from_the_scheduled_time() -> None:
    """A server that handles one call at a time in 10 ms, offered 200/s: a closed loop at concurrency 1
    sees ~10 ms; the open loop must see the queue grow (the k-th call waits ~k·5 ms)."""
    lock = asyncio.Lock()

    async def serial_call(request: Any, timeout: float, metadata: Any) -> None:
        async with lock:
            await asyncio.sleep(0.01)

    fake = Workload("fake", lambda ch: serial_call, lambda: None)
    conn = ConnectionConfig(("127.0.0.1:9",))  # channels are never used by the fake call
    closed = run_load(conn, fake, LoadConfig(mode="closed", concurrency=1, max_requests=20))
    opened = run_load(conn, fake, LoadConfig(mode="open", rate=200, max_requests=40))
    assert closed.histogram.percentile(99) < 40_000  # µs
    assert opened.histogram.percentile(99) > 120_000  # last call: ~40·10 ms served, 40·5 ms scheduled
    assert opened.to_dict()["achieved_send_rate_per_s"] == pytest.approx(200, rel=0.25)  # not 1/latency


def test_closed_loop_echo_against_server_writes_json_and_png(server: str, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "echo-c4"
    args = ["load", "--address", server, "--rpc", "echo", "-c", "4", "-n", "300", "--out", str(out)]
    assert main(args) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["requests"] == report["succeeded"] == 300 and report["errors"] == {}
    lat = report["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]
    assert report["throughput_per_s"] > 0
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "echo closed-loop" in capsys.readouterr().out


def test_concurrency_sweep_prints_a_table(server: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sweep"
    assert main(["load", "--address", server, "-c", "1,4", "-n", "80", "--out", str(out)]) == 0
    table = capsys.readouterr().out.splitlines()[-3:]
    assert table[0].split()[:2] == ["concurrency", "ok/s"]
    assert [row.split()[0] for row in table[1:]] == ["1", "4"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep-c1.json", "sweep-c1.png", "sweep-c4.json",
                                                          "sweep-c4.png"]
    assert main(["load", "--address", server, "-c", "1,x"]) == 2


def test_open_loop_score_and_ingest_against_server(server: str) -> None:
    conn = ConnectionConfig((server,))
    features = dict(zip(RISK_FEATURES, [70.0, 28.0, 140.0, 7.5], strict=True))
    res = run_load(conn, score(RISK_MODEL, features, patients=4),
                   LoadConfig(mode="open", rate=100, max_requests=60, duration_s=10))
    d = res.to_dict()
    assert d["errors"] == {} and d["succeeded"] == 60 and d["records_per_s"] > 0
    assert d["achieved_send_rate_per_s"] == pytest.approx(100, rel=0.4)
    res = run_load(conn, ingest(records=5), LoadConfig(mode="closed", concurrency=2, max_requests=20))
    assert res.errors == {} and res.succeeded == 20 and res.to_dict()["records_per_s"] > 0
    history = {r: [1.0, 2.0, 3.0, 4.0] for r in REGIONS}
    res = run_load(conn, forecast(None, FORECAST_MODEL, history, None, [0.5]),
                   LoadConfig(mode="closed", concurrency=2, max_requests=20))
    assert res.errors == {} and res.succeeded == 20


def test_time_bound_and_errors_by_code(server: str) -> None:
    conn = ConnectionConfig((server,))
    res = run_load(conn, score("no_such_model", {"x": 1.0}),
                   LoadConfig(mode="closed", concurrency=2, max_requests=None, duration_s=0.3))
    assert res.elapsed_s < 5 and res.succeeded == 0
    assert set(res.errors) == {"NOT_FOUND"} and res.errors["NOT_FOUND"] == res.requests > 0
    res = run_load(conn, echo(16), LoadConfig(max_requests=5, duration_s=None))
    assert res.succeeded == 5


def test_spawned_server_open_loop_poisson(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["load", "--spawn", "--rpc", "echo", "--mode", "open", "--poisson", "--rate", "200",
                 "-n", "100", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["arrivals"] == "poisson" and report["succeeded"] == 100
    assert report["achieved_send_rate_per_s"] == pytest.approx(200, rel=0.5)  # 100 exponential gaps
    assert report["server_rss"]["samples"] >= 1 and report["server_rss"]["max_mb"] > 10  # a real process


def test_dead_address_counts_unavailable_unless_retried(server: str) -> None:
    conn = ConnectionConfig((f"127.0.0.1:{free_port()}", server))
    bare = run_load(conn, echo(), LoadConfig(concurrency=2, max_requests=40))
    assert bare.errors["UNAVAILABLE"] == 20 and bare.succeeded == 20  # round-robin: half hit the dead one
    retried = run_load(conn, echo(), LoadConfig(concurrency=2, max_requests=40,
                                                retry=RetryPolicy(max_attempts=3, initial_backoff_s=0.01)))
    assert retried.errors == {} and retried.succeeded == 40


def test_child_configs_split_the_load() -> None:
    closed = child_configs(LoadConfig(concurrency=5, max_requests=11), 2)
    assert [(c.concurrency, c.max_requests, d) for c, d in closed] == [(3, 6, 0.0), (2, 5, 0.0)]
    opened = child_configs(LoadConfig(mode="open", rate=100, max_requests=None, duration_s=2), 4)
    assert [c.rate for c, _ in opened] == [25] * 4
    assert [d for _, d in opened] == pytest.approx([0, 0.01, 0.02, 0.03])  # merged gaps stay 10 ms
    with pytest.raises(ValueError, match="concurrency"):
        child_configs(LoadConfig(concurrency=2), 3)


def test_two_processes_merge_into_one_report(server: str) -> None:
    conn = ConnectionConfig((server,))
    res = run_load_processes(conn, partial(echo, 8), LoadConfig(concurrency=4, max_requests=200), 2)
    d = res.to_dict()
    assert (d["processes"], d["requests"], d["succeeded"], d["errors"]) == (2, 200, 200, {})
    assert res.histogram.total == 200 and len(res.send_offsets_s) == 200


def test_rss_sampler_and_growth_summary() -> None:
    with RssSampler(os.getpid(), interval_s=0.01) as sampler:
        pass  # the sampler always takes its first sample, however short the run
    assert len(sampler.samples) >= 1 and all(b > 10 * 2**20 for _, b in sampler.samples)
    mib = 2**20
    summary = summarize([(0.0, 100 * mib), (1.0, 200 * mib), (5.0, 210 * mib)])
    assert summary["after_warmup_mb"] == 200 and summary["growth_after_warmup_pct"] == 5.0
    with pytest.raises(ValueError, match="cannot read the memory"):
        RssSampler(2**22 + 12345)
