"""Workloads and capacity measurement on top of the clients' load harness
(``healthai_client.loadtest``: closed/open loop, histogram percentiles, errors by status)."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from healthai.serving.risk.card import example_patient
from healthai.serving.settings import DEFAULT_MODEL_REPOSITORY, newest_version_dir
from healthai_client.connection import ConnectionConfig
from healthai_client.loadtest import LoadConfig, LoadResult, run_load
from healthai_client.loadtest.workloads import Workload, forecast, score

RISK_MODEL = "risk_heart"
FORECAST_GRAPH = "japan"
FORECAST_MODEL = "forecast_japan"


def risk_workload() -> Workload:
    """Risk.Score, one patient per call (a valid patient near the model's baseline)."""
    card = json.loads((newest_version_dir(RISK_MODEL) / "model_card.json").read_text())
    return score(RISK_MODEL, example_patient(card))


def forecast_workload() -> Workload:
    """Forecast on the Japan graph (47 regions, full history window, three quantiles): several
    times more server work per call than client work, so the server — not the load generator —
    is what saturates on a 2-core machine."""
    folder = DEFAULT_MODEL_REPOSITORY / FORECAST_MODEL / "1"
    regions = json.loads((folder / "graph.json").read_text())["region_ids"]
    window = json.loads((folder / "model_card.json").read_text())["window"]
    rng = np.random.default_rng(7)
    history = {r: rng.poisson(20, window).astype(float).tolist() for r in regions}
    return forecast(FORECAST_GRAPH, None, history, None, [0.1, 0.5, 0.9])


@dataclass(frozen=True)
class Capacity:
    per_s: float  # median throughput of the runs
    runs: tuple[float, ...]
    p50_ms: float  # median of the runs' p50 latency
    concurrency: int

    @property
    def floor(self) -> float:
        """The slowest run: what the server managed while the machine's other tenants were busiest."""
        return min(self.runs)


def measure_capacity(address: str, make_workload: Callable[[], Workload], *, concurrency: int = 8,
                     runs: int = 3, run_s: float = 2.0) -> Capacity:
    """Closed-loop throughput at ``concurrency``: the median of ``runs`` short runs (the machine is
    shared and noisy; one run can be off by 2x). Every call must succeed."""
    conn = ConnectionConfig((address,))
    results: list[LoadResult] = []
    for _ in range(runs):
        res = run_load(conn, make_workload(),
                       LoadConfig(mode="closed", concurrency=concurrency, max_requests=None,
                                  duration_s=run_s, timeout_s=10.0))
        assert not res.errors, f"errors while measuring capacity: {dict(res.errors)} {res.error_examples}"
        results.append(res)
    rates = tuple(r.throughput() for r in results)
    return Capacity(statistics.median(rates), rates,
                    statistics.median(r.histogram.percentile(50) / 1000 for r in results), concurrency)


def open_loop(address: str, workload: Workload, rate: float, duration_s: float,
              timeout_s: float) -> LoadResult:
    return run_load(ConnectionConfig((address,)), workload,
                    LoadConfig(mode="open", rate=rate, max_requests=None, duration_s=duration_s,
                               timeout_s=timeout_s))


def closed_p50_ms(address: str, workload: Workload, duration_s: float = 1.0) -> float:
    res = run_load(ConnectionConfig((address,)), workload,
                   LoadConfig(mode="closed", concurrency=1, max_requests=None, duration_s=duration_s,
                              timeout_s=10.0))
    assert not res.errors, dict(res.errors)
    return res.histogram.percentile(50) / 1000
