"""Capacity and overload benchmark (loopback only, bounded in time), measured side by side in one run.

1. Capacity: closed-loop throughput and latency of Diagnostics.Echo, Risk.Score (one patient) and
   Forecast (Japan, 47 regions, 3 quantiles) at concurrency 1, 8 and 16 against one real
   ``healthai serve`` on the default model repository.
2. Overload: Forecast offered open-loop at 2x its concurrency-16 capacity, 1 s deadlines, against
   three servers: no admission limits; ``--max-concurrent-rpcs 8``; and that plus
   ``--max-pending-rpcs 32``. Goodput, errors by status, latency of refusals and of served calls.

    .venv/bin/python benchmarks/capacity.py --quick    # ~1 minute
    .venv/bin/python benchmarks/capacity.py            # ~3 minutes

This process is the load generator (``healthai_client.loadtest``); on a 2-core machine it competes
with the server for CPU, which caps the one-patient Risk numbers more than the Forecast ones.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from healthai.app.testing import start_server_process, stop_server_process
from healthai.serving.risk.card import example_patient
from healthai.serving.settings import DEFAULT_MODEL_REPOSITORY, newest_version_dir
from healthai_client.connection import ConnectionConfig
from healthai_client.loadtest import LoadConfig, LoadResult, run_load
from healthai_client.loadtest.workloads import Workload, echo, forecast, score

DEADLINE_S = 1.0
OVERLOAD = 2.0
CONFIGS = {"no limits": [], "max_concurrent_rpcs 8": ["--max-concurrent-rpcs", "8"],
           "+ max_pending_rpcs 32": ["--max-concurrent-rpcs", "8", "--max-pending-rpcs", "32"]}


def risk_workload() -> Workload:
    card = json.loads((newest_version_dir("risk_heart") / "model_card.json").read_text())
    return score("risk_heart", example_patient(card))


def forecast_workload() -> Workload:
    folder = DEFAULT_MODEL_REPOSITORY / "forecast_japan" / "1"
    regions = json.loads((folder / "graph.json").read_text())["region_ids"]
    window = json.loads((folder / "model_card.json").read_text())["window"]
    rng = np.random.default_rng(7)
    return forecast("japan", None, {r: rng.poisson(20, window).astype(float).tolist() for r in regions}, None,
                    [0.1, 0.5, 0.9])


WORKLOADS: dict[str, Callable[[], Workload]] = {"Echo": echo, "Risk.Score (1 patient)": risk_workload,
                                               "Forecast (Japan)": forecast_workload}


class Server:
    def __init__(self, folder: Path, args: Sequence[str]) -> None:
        self.log = open(folder / "server.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc, port = start_server_process(
            ["--dev", "--store-uri", str(folder / "store"), "--log-level", "WARNING", *args],
            {"HEALTHAI_SERVING__RELOAD_POLL_S": "0"}, stderr=self.log.fileno())
        self.conn = ConnectionConfig((f"127.0.0.1:{port}",))

    def stop(self) -> None:
        code = stop_server_process(self.proc)
        self.log.close()
        if code != 0:
            raise SystemExit(f"server exited with {code}")


def closed(conn: ConnectionConfig, workload: Workload, concurrency: int, seconds: float) -> LoadResult:
    return run_load(conn, workload, LoadConfig(mode="closed", concurrency=concurrency, max_requests=None,
                                               duration_s=seconds, timeout_s=10.0))


def capacity_table(folder: Path, seconds: float) -> dict[str, float]:
    server = Server(folder, [])
    print("\n## Capacity (closed loop)\n")
    print("| RPC | concurrency | calls/s | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|")
    at16: dict[str, float] = {}
    try:
        for name, make in WORKLOADS.items():
            closed(server.conn, make(), 4, 0.5)  # warm-up
            for concurrency in (1, 8, 16):
                res = closed(server.conn, make(), concurrency, seconds)
                h = res.histogram
                print(f"| {name} | {concurrency} | {res.throughput():.0f} | {h.percentile(50) / 1e3:.2f} | "
                      f"{h.percentile(99) / 1e3:.2f} | {dict(res.errors) or 0} |")
                at16[name] = res.throughput()
    finally:
        server.stop()
    return at16


def overload_table(folder: Path, capacity: float, seconds: float) -> None:
    rate = OVERLOAD * capacity
    print(f"\n## Overload: Forecast at {rate:.0f}/s (2x {capacity:.0f}/s) for {seconds:.0f} s, "
          f"deadline {DEADLINE_S:.0f} s\n")
    print("| server | goodput/s | served p50 / p99 ms | refusals p50 / p99 ms | errors by status |")
    print("|---|---|---|---|---|")
    for name, args in CONFIGS.items():
        sub = folder / name.replace(" ", "_").replace("+", "plus")
        sub.mkdir()
        server = Server(sub, args)
        try:
            res = run_load(server.conn, forecast_workload(),
                           LoadConfig(mode="open", rate=rate, max_requests=None, duration_s=seconds,
                                      timeout_s=DEADLINE_S))
        finally:
            server.stop()
        ok = np.asarray(res.ok)
        lat = np.asarray(res.latencies_us) / 1e3
        print(f"| {name} | {ok.sum() / seconds:.0f} | {_p50_p99(lat[ok])} | {_p50_p99(lat[~ok])} | "
              f"{dict(res.errors)} |")


def _p50_p99(values: np.ndarray) -> str:
    return f"{np.percentile(values, 50):.1f} / {np.percentile(values, 99):.1f}" if values.size else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (~1 minute in all)")
    args = parser.parse_args()
    seconds, overload_s = (1.0, 3.0) if args.quick else (3.0, 5.0)
    with tempfile.TemporaryDirectory(prefix="healthai-capacity-") as tmp:
        capacity = capacity_table(Path(tmp), seconds)
        overload_table(Path(tmp), capacity["Forecast (Japan)"], overload_s)


if __name__ == "__main__":
    main()
