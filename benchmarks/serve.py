"""Serving benchmark (loopback only, bounded in time): three tables measured side by side in one run.

1. Risk latency floor: Diagnostics.Echo vs Risk.Score with one patient, concurrency 1, same server.
2. Risk throughput: one-patient requests at concurrency 1/8/32/64 with dynamic batching on and off,
   beside the echo at the same concurrency; 1,000-patient requests; bare in-process ONNX Runtime at
   the same batch sizes (the model's own cost).
3. Forecast: custom-op ONNX vs standard-opset ONNX vs torch eager on Japan (47), US counties
   (~3,100 nodes) and a 100,000-node graph; plus the Forecast RPC on Japan (23 quantiles, 5 horizons).

    .venv/bin/python benchmarks/serve.py --quick      # ~2 minutes
    .venv/bin/python benchmarks/serve.py              # the full run

The server runs as a real ``healthai serve`` subprocess; this process is the client. The risk tables
also give the server's CPU per call (all its threads, Linux /proc) and the load average: on a shared
machine other tenants move wall-time ratios a lot and CPU per call far less. Models come from
the model repository (``--repository``, default the package's); a model missing there is built with the
training code (untrained weights: speed does not depend on them) and the table says so.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import scipy.sparse as sp

from healthai.app.testing import process_cpu_ns, start_server_process, stop_server_process
from healthai.serving.risk.card import parse_risk_card
from healthai.serving.settings import DEFAULT_MODEL_REPOSITORY
from healthai.v1 import (
    diagnostics_pb2,
    diagnostics_pb2_grpc,
    forecast_pb2,
    forecast_pb2_grpc,
    risk_pb2,
    risk_pb2_grpc,
)

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
RISK_MODEL = "risk_readmission"
FLUSIGHT = (0.01, 0.025, 0.05, 0.10, 0.15, 0.20, 0.25, 0.30, 0.35, 0.40, 0.45, 0.50,
            0.55, 0.60, 0.65, 0.70, 0.75, 0.80, 0.85, 0.90, 0.95, 0.975, 0.99)


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def table(title: str, header: list[str], rows: list[list[object]]) -> str:
    lines = [f"\n### {title}\n", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


# -- models ---------------------------------------------------------------------------------------
def graph_japan():
    from healthai_training.forecast.graph import RegionGraph

    adj = np.loadtxt(SHARED / "epi" / "japan_prefectures" / "japan-adj.txt", delimiter=",")
    return RegionGraph.from_adjacency(adj)


def graph_counties():
    """US counties of the 50 states + DC (Census 2024 adjacency file), symmetric."""
    from healthai_training.forecast.graph import RegionGraph

    pairs = []
    with open(SHARED / "graphs" / "us_counties" / "county_adjacency2024.txt", encoding="utf-8") as f:
        next(f)
        for line in f:
            parts = line.rstrip("\n").split("|")
            if len(parts) == 4 and int(parts[1][:2]) <= 56 and int(parts[3][:2]) <= 56:
                pairs.append((parts[1], parts[3]))
    ids = sorted({a for a, _ in pairs} | {b for _, b in pairs})
    pos = {g: i for i, g in enumerate(ids)}
    r = np.array([pos[a] for a, _ in pairs])
    c = np.array([pos[b] for _, b in pairs])
    adj = sp.coo_matrix((np.ones(len(r)), (r, c)), shape=(len(ids), len(ids))).tocsr()
    adj = ((adj + adj.T) > 0).astype(np.float64)
    adj.setdiag(0)
    adj.eliminate_zeros()
    return RegionGraph.from_adjacency(adj, ids)


def graph_random(n: int, k: int = 6, seed: int = 0):
    """n nodes on the unit square, each linked to its k nearest neighbours (symmetrised)."""
    from scipy.spatial import cKDTree

    from healthai_training.forecast.graph import RegionGraph

    pts = np.random.default_rng(seed).uniform(size=(n, 2))
    _, nn = cKDTree(pts).query(pts, k=k + 1)
    r = np.repeat(np.arange(n), k)
    adj = sp.coo_matrix((np.ones(n * k), (r, nn[:, 1:].reshape(-1))), shape=(n, n)).tocsr()
    return RegionGraph.from_adjacency(((adj + adj.T) > 0).astype(np.float64))


def forecaster(graph, *, window: int = 20, steps: int = 15):
    """The training code's ST-GNN (untrained) over ``graph``; its spatial step is our kernel."""
    from healthai.ops import GraphAggregation
    from healthai_training.forecast.model import STGNNForecaster

    spatial = GraphAggregation.from_adjacency(graph.to_scipy(), normalize=graph.normalization == "sym")
    return STGNNForecaster(spatial=spatial, n_nodes=graph.n_nodes, window=window, steps=steps).eval()


def stand_in_risk(repo: Path, n_features: int = 24) -> None:
    """A risk model with the training code's architecture and export, random weights."""
    import torch

    from healthai_training.export import export_risk
    from healthai_training.risk.model import CalibratedRisk, RiskNet

    torch.manual_seed(0)
    net = CalibratedRisk(RiskNet(mean=np.zeros(n_features), std=np.ones(n_features)))
    features = [{"name": f"f{i}", "description": "stand-in", "unit": "1", "baseline": 0.0}
                for i in range(n_features)]
    card = {"risk_bands": [{"name": "low", "upper": 0.1}, {"name": "medium", "upper": 0.3},
                           {"name": "high", "upper": 1.0}], "note": "benchmark stand-in, untrained"}
    export_risk(model=net.eval(), features=features, card=card, repo=repo, name=RISK_MODEL)


def prepare_repository(source: Path, work: Path, names: list[str]) -> tuple[Path, dict[str, str]]:
    """A repository for the server: the real models where present, stand-ins otherwise."""
    repo = work / "models"
    repo.mkdir()
    origin = {}
    for name in names:
        if (source / name).is_dir():
            shutil.copytree(source / name, repo / name)
            origin[name] = f"{source / name}"
    if RISK_MODEL in names and RISK_MODEL not in origin:
        stand_in_risk(repo)
        origin[RISK_MODEL] = "stand-in (training code, untrained)"
    if "forecast_japan" in names and "forecast_japan" not in origin:
        from healthai_training.forecast.export import export_forecaster

        model = forecaster(graph_japan())
        export_forecaster(model, graph_japan(), repo / "forecast_japan", check_parity=False,
                          card={"note": "benchmark stand-in, untrained"})
        origin["forecast_japan"] = "stand-in (training code, untrained)"
    return repo, origin


# -- load generation ------------------------------------------------------------------------------
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


# -- the three tables -----------------------------------------------------------------------------
def risk_tables(repo: Path, work: Path, args: argparse.Namespace) -> list[str]:
    card = json.loads((repo / RISK_MODEL / "1" / "model_card.json").read_text())
    f = len(card["features"])
    risk = parse_risk_card(card, n_inputs=f, where=RISK_MODEL)
    one = risk_pb2.ScoreRequest(model_name=RISK_MODEL, features=[0.5] * f)
    rng = np.random.default_rng(0)
    x = (risk.baseline * rng.uniform(0.5, 1.5, size=(1000, f))).astype("<f4")
    if risk.domains is not None:  # valid patients (the card's feature domains), most features off baseline
        x = risk.domains.project(x).astype("<f4")
        one = risk_pb2.ScoreRequest(model_name=RISK_MODEL, features=x[0].tolist())
    big = {  # label -> request: raw float32 bytes (the documented fast form) and packed floats
        "1000 patients, features_raw, top 3": risk_pb2.ScoreRequest(model_name=RISK_MODEL,
                                                                    features_raw=x.tobytes()),
        "1000 patients, features_raw, top 0": risk_pb2.ScoreRequest(model_name=RISK_MODEL,
                                                                    features_raw=x.tobytes(), top_features=0),
        "1000 patients, packed floats, top 0": risk_pb2.ScoreRequest(model_name=RISK_MODEL,
                                                                     features=x.reshape(-1).tolist(),
                                                                     top_features=0)}
    echo = diagnostics_pb2.EchoRequest(payload=b"x" * one.ByteSize())  # same wire size as one Score
    # the throughput loads: 64 distinct valid patients in turn (identical ones would be scored once)
    many = [risk_pb2.ScoreRequest(model_name=RISK_MODEL, features=row.tolist()) for row in x[:64]]

    out = []
    rows_tp: list[list[object]] = []
    on, port_on = start(repo, work, batching=True, threads=args.threads)
    off, port_off = start(repo, work, batching=False, threads=args.threads)
    try:
        load = os.getloadavg()[0]
        lat, cpu = latency_pairs(port_on, {"echo": rpc(diagnostics_pb2_grpc.DiagnosticsStub, "Echo", echo),
                                           "risk": rpc(risk_pb2_grpc.RiskStub, "Score", one)},
                                 args.latency_n, pid=on.pid)
        e50, e99 = np.percentile(lat["echo"], [50, 99])
        r50, r99 = np.percentile(lat["risk"], [50, 99])
        out.append(table(
            "Risk latency floor (concurrency 1, µs; echo payload = one Score request's size; "
            f"load average {load:.1f} → {os.getloadavg()[0]:.1f})",
            ["RPC", "p50", "p99", "p50 ratio", "p99 ratio", "server CPU µs/call", "target", "verdict"],
            [["Diagnostics.Echo", f"{e50:.0f}", f"{e99:.0f}", "1.00", "1.00", f"{cpu['echo']:.0f}", "", ""],
             ["Risk.Score, 1 patient, top 3 features", f"{r50:.0f}", f"{r99:.0f}", f"{r50 / e50:.2f}",
              f"{r99 / e99:.2f}", f"{cpu['risk']:.0f} ({cpu['risk'] - cpu['echo']:+.0f})",
              "p50 ≤ 1.3×, p99 ≤ 1.5×", verdict(r50 <= 1.3 * e50 and r99 <= 1.5 * e99)]]))
        results: dict[tuple[str, int], float] = {}
        cpu_tp: dict[tuple[str, int], float] = {}
        load = os.getloadavg()[0]
        for c in args.concurrency:  # the three loads alternate in short slices: drift hits all alike
            measured = interleaved({
                ("echo", c): (port_on, rpc(diagnostics_pb2_grpc.DiagnosticsStub, "Echo", echo), c, on.pid),
                ("on", c): (port_on, rpc_cycle(risk_pb2_grpc.RiskStub, "Score", many), c, on.pid),
                ("off", c): (port_off, rpc_cycle(risk_pb2_grpc.RiskStub, "Score", many), c, off.pid)},
                args.seconds)
            results.update({k: rate for k, (rate, _) in measured.items()})
            cpu_tp.update({k: cpu for k, (_, cpu) in measured.items()})
        load = f"{load:.1f} → {os.getloadavg()[0]:.1f}"
        big_loads = {(label, 0): (port_on, rpc(risk_pb2_grpc.RiskStub, "Score", req), 2, None)
                     for label, req in big.items()}
        results.update({k: 1000 * rate for k, (rate, _) in interleaved(big_loads, args.seconds).items()})
    finally:
        stop_server_process(on)
        stop_server_process(off)
    for c in args.concurrency:
        ratio = results[("on", c)] / results[("echo", c)]
        target = "≥ 0.80 × echo" if c == 32 else ""
        rows_tp.append([c, f"{results[('echo', c)]:.0f}", f"{results[('on', c)]:.0f}",
                        f"{results[('off', c)]:.0f}", f"{ratio:.2f}",
                        f"{cpu_tp[('echo', c)]:.0f} / {cpu_tp[('on', c)]:.0f} / {cpu_tp[('off', c)]:.0f}",
                        target, verdict(ratio >= 0.8) if c == 32 else ""])
    out.append(table(f"Risk throughput, one-patient requests, 64 distinct patients in turn (requests/s; "
                     f"load average {load})",
                     ["concurrency", "echo", "Score, batching on", "Score, batching off", "on / echo",
                      "server CPU µs/request: echo / on / off", "target", "verdict"], rows_tp))
    bare = bare_ort(repo / RISK_MODEL / "1" / "model.onnx", f, args.threads)
    rows_big = [[label, f"{results[(label, 0)]:,.0f}", "≥ 200,000", verdict(results[(label, 0)] >= 200_000)]
                for label in big]
    for b, v in bare.items():
        what = f"bare ORT in-process, {b:,} rows"
        what += f" (1000 patients × {f + 1}, top features)" if b > 1000 else ""
        rows_big.append([what, f"{v:,.0f}", "(model's own cost)", ""])
    out.append(table(f"Risk batched requests (patients/s; {f} features; client concurrency 2)",
                     ["what", "patients/s", "target", "verdict"], rows_big))
    return out


def bare_ort(path: Path, f: int, threads: int) -> dict[int, float]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    out = {}
    for rows in (1, 1000, 1000 * (f + 1)):
        x = np.random.default_rng(0).normal(size=(rows, f)).astype(np.float32)
        sess.run(None, {"features": x})
        reps = max(int(20000 / rows), 5)
        t = time.perf_counter()
        for _ in range(reps):
            sess.run(None, {"features": x})
        per = (time.perf_counter() - t) / reps
        out[rows] = (rows if rows <= 1000 else 1000) / per
    return out


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


def forecast_speed(name: str, graph, work: Path, args: argparse.Namespace) -> list[object]:
    import torch

    from healthai.ops import ort_library_path, set_num_threads
    from healthai_training.forecast.export import export_variant

    torch.set_num_threads(args.threads)
    set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = forecaster(graph)
    x = np.random.default_rng(0).uniform(0, 500, size=(1, 20, graph.n_nodes)).astype(np.float32)
    ms = {}
    for variant in ("custom", "standard"):
        path = work / f"{name.split()[0]}-{graph.n_nodes}-{variant}.onnx"
        export_variant(model, path, variant=variant)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        if variant == "custom":
            opts.register_custom_ops_library(str(ort_library_path()))
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        ms[variant] = timed(lambda s=sess: s.run(None, {"history": x}), args.budget)
        path.unlink()
    with torch.inference_mode():
        xt = torch.from_numpy(x)
        ms["torch"] = timed(lambda: model(xt), args.budget)
    agg = aggregation_alone(model.spatial, graph.n_nodes, work, args)
    print(f"  forecast {name}: built, exported and timed in {time.perf_counter() - t0:.0f} s", flush=True)
    ratio = ms["standard"] / ms["custom"]
    needs = graph.n_nodes > 1000
    return [name, f"{graph.n_nodes:,}", f"{graph.n_edges:,}", f"{ms['custom']:.2f}", f"{ms['standard']:.2f}",
            f"{ms['torch']:.2f}", f"{ratio:.1f}×", "≥ 3×" if needs else "",
            verdict(ratio >= 3) if needs else "",
            f"{agg['custom']:.3f} / {agg['standard']:.3f} ({agg['standard'] / agg['custom']:.1f}×)"]


def aggregation_alone(layer, n: int, work: Path, args: argparse.Namespace) -> dict[str, float]:
    """The forecaster's graph-aggregation node by itself on [1, N, 32] (its hidden width), both variants."""
    import torch

    from healthai.ops import ort_library_path
    from healthai.ops.onnx_export import export_onnx

    x = np.random.default_rng(1).normal(size=(1, n, 32)).astype(np.float32)
    ms = {}
    for variant in ("custom", "standard"):
        path = work / f"agg-{n}-{variant}.onnx"
        export_onnx(layer, (torch.from_numpy(x),), path, variant=variant, input_names=["x"],
                    output_names=["y"])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        if variant == "custom":
            opts.register_custom_ops_library(str(ort_library_path()))
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        ms[variant] = timed(lambda s=sess: s.run(None, {"x": x}), args.budget)
        path.unlink()
    return ms


def forecast_rpc(repo: Path, work: Path, args: argparse.Namespace) -> list[list[object]]:
    card = json.loads((repo / "forecast_japan" / "1" / "model_card.json").read_text())
    graph = json.loads((repo / "forecast_japan" / "1" / "graph.json").read_text())
    steps = int(card.get("output_steps", 15))
    horizons = [h for h in (2, 3, 5, 10, 15) if h <= steps] or list(range(1, min(steps, 5) + 1))
    counts = np.random.default_rng(0).uniform(0, 500, size=(int(card["window"]), len(graph["region_ids"])))
    req = forecast_pb2.ForecastRequest(
        graph="japan", horizons=horizons, quantile_levels=FLUSIGHT,
        history=forecast_pb2.History(region_ids=graph["region_ids"], counts=counts.reshape(-1).tolist()))
    echo = diagnostics_pb2.EchoRequest(payload=b"x" * req.ByteSize())
    proc, port = start(repo, work, batching=True, threads=args.threads)
    try:
        lat, _ = latency_pairs(port, {"echo": rpc(diagnostics_pb2_grpc.DiagnosticsStub, "Echo", echo),
                                      "forecast": rpc(forecast_pb2_grpc.ForecastStub, "Forecast", req)},
                               args.latency_n // 4)
    finally:
        stop_server_process(proc)
    f50, f99 = np.percentile(lat["forecast"], [50, 99]) / 1e3
    e50, e99 = np.percentile(lat["echo"], [50, 99]) / 1e3
    return [["Diagnostics.Echo (same payload size)", f"{e50:.2f}", f"{e99:.2f}", "", ""],
            [f"Forecast.Forecast japan, {len(FLUSIGHT)} quantiles, horizons {horizons}", f"{f50:.2f}",
             f"{f99:.2f}", "p50 ≤ 5 ms", verdict(f50 <= 5.0)]]


def forecast_tables(repo: Path, work: Path, args: argparse.Namespace) -> list[str]:
    graphs = [("Japan prefectures", graph_japan), ("US counties (Census 2024)", graph_counties),
              (f"random kNN graph, {args.big_nodes:,} nodes", lambda: graph_random(args.big_nodes))]
    rows = [forecast_speed(name, make(), work, args) for name, make in graphs]
    out = [table(f"Forecast model, one window of 20 steps → 15 steps × 23 quantiles (ms, median; "
                 f"{args.threads} threads)",
                 ["graph", "nodes", "edges (CSR, incl. self-loops)", "custom-op ONNX", "standard-opset ONNX",
                  "torch eager", "standard / custom", "target", "verdict",
                  "aggregation node alone: custom / standard ms"], rows)]
    out.append(table("Forecast RPC latency, concurrency 1 (ms)", ["RPC", "p50", "p99", "target", "verdict"],
                     forecast_rpc(repo, work, args)))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="shorter runs (same tables, noisier numbers)")
    p.add_argument("--repository", type=Path, default=DEFAULT_MODEL_REPOSITORY)
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime / torch / kernel threads")
    p.add_argument("--only", choices=["risk", "forecast"], help="run one part")
    args = p.parse_args(argv)
    args.seconds = 1.5 if args.quick else 5.0
    args.latency_n = 1000 if args.quick else 5000
    args.budget = 0.5 if args.quick else 3.0
    args.concurrency = [1, 8, 32, 64]
    args.big_nodes = 100_000
    with tempfile.TemporaryDirectory(prefix="healthai-bench-") as tmp:
        work = Path(tmp)
        names = [n for part, n in (("risk", RISK_MODEL), ("forecast", "forecast_japan"))
                 if args.only in (None, part)]
        repo, origin = prepare_repository(args.repository, work, names)
        print("models: " + "; ".join(f"{k}: {v}" for k, v in origin.items()))
        mode = "quick" if args.quick else "full"
        print(f"machine: {os.cpu_count()} CPUs, onnxruntime {ort.__version__}, mode {mode}")
        tables = []
        if args.only in (None, "risk"):
            tables += risk_tables(repo, work, args)
        if args.only in (None, "forecast"):
            tables += forecast_tables(repo, work, args)
        print("\n".join(tables))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
