"""The forecast tables of the serving benchmark (``benchmarks/serve.py``): the ST-GNN as custom-op
ONNX, standard-opset ONNX and torch eager on Japan, the US counties and a 100,000-node graph, and the
Forecast RPC's latency beside an echo of the same size."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import scipy.sparse as sp
from serve_load import latency_pairs, rpc, start, table, timed, verdict

from healthai.app.testing import stop_server_process
from healthai.v1 import diagnostics_pb2, diagnostics_pb2_grpc, forecast_pb2, forecast_pb2_grpc

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
FLUSIGHT = (0.01, 0.025, 0.05, 0.10, 0.15, 0.20, 0.25, 0.30, 0.35, 0.40, 0.45, 0.50,
            0.55, 0.60, 0.65, 0.70, 0.75, 0.80, 0.85, 0.90, 0.95, 0.975, 0.99)


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


def session(path: Path, variant: str, threads: int) -> ort.InferenceSession:
    """A CPU session on ``path``; the custom variant with our op library registered."""
    from healthai.ops import ort_library_path

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    if variant == "custom":
        opts.register_custom_ops_library(str(ort_library_path()))
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def forecast_speed(name: str, graph, work: Path, args: argparse.Namespace) -> list[object]:
    import torch

    from healthai.ops import set_num_threads
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
        sess = session(path, variant, args.threads)
        ms[variant] = timed(lambda s=sess: s.run(None, {"history": x}), args.budget)
        path.unlink()
    with torch.inference_mode():
        xt = torch.from_numpy(x)
        ms["torch"] = timed(lambda: model(xt), args.budget)
    agg = aggregation_alone(model.spatial, graph.n_nodes, work, args)
    soft = softplus_alone(graph.n_nodes, work, args)
    print(f"  forecast {name}: built, exported and timed in {time.perf_counter() - t0:.0f} s", flush=True)
    ratio = ms["standard"] / ms["custom"]
    needs = graph.n_nodes > 1000
    return [name, f"{graph.n_nodes:,}", f"{graph.n_edges:,}", f"{ms['custom']:.2f}", f"{ms['standard']:.2f}",
            f"{ms['torch']:.2f}", f"{ratio:.1f}×", "≥ 3×" if needs else "",
            verdict(ratio >= 3) if needs else "",
            f"{agg['custom']:.3f} / {agg['standard']:.3f} ({agg['standard'] / agg['custom']:.1f}×)",
            f"{soft['custom']:.3f} / {soft['standard']:.3f} ({soft['standard'] / soft['custom']:.1f}×)"]


def aggregation_alone(layer, n: int, work: Path, args: argparse.Namespace) -> dict[str, float]:
    """The forecaster's graph-aggregation node by itself on [1, N, 32] (its hidden width), both variants."""
    x = np.random.default_rng(1).normal(size=(1, n, 32)).astype(np.float32)
    return node_alone(layer, x, f"agg-{n}", work, args)


def softplus_alone(n: int, work: Path, args: argparse.Namespace) -> dict[str, float]:
    """The quantile head's softplus by itself on [1, N, 15, 22] (steps x gaps): our library's
    healthai.Softplus (custom) against its decomposition into vectorised standard ops (standard)."""
    import torch

    x = np.random.default_rng(2).normal(scale=3.0, size=(1, n, 15, 22)).astype(np.float32)
    return node_alone(torch.nn.Softplus().eval(), x, f"softplus-{n}", work, args)


def node_alone(layer, x: np.ndarray, stem: str, work: Path, args: argparse.Namespace) -> dict[str, float]:
    """Median ms of ``layer`` exported alone in both variants, on input ``x``."""
    import torch

    from healthai.ops.onnx_export import export_onnx

    ms = {}
    for variant in ("custom", "standard"):
        path = work / f"{stem}-{variant}.onnx"
        export_onnx(layer, (torch.from_numpy(x),), path, variant=variant, input_names=["x"],
                    output_names=["y"])
        sess = session(path, variant, args.threads)
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
    counties = county_request(repo)
    proc, port = start(repo, work, batching=True, threads=args.threads)
    try:
        lat, _ = latency_pairs(port, {"echo": rpc(diagnostics_pb2_grpc.DiagnosticsStub, "Echo", echo),
                                      "forecast": rpc(forecast_pb2_grpc.ForecastStub, "Forecast", req),
                                      "counties": rpc(forecast_pb2_grpc.ForecastStub, "Forecast", counties)},
                               args.latency_n // 4)
    finally:
        stop_server_process(proc)
    f50, f99 = np.percentile(lat["forecast"], [50, 99]) / 1e3
    e50, e99 = np.percentile(lat["echo"], [50, 99]) / 1e3
    c50, c99 = np.percentile(lat["counties"], [50, 99]) / 1e3
    return [["Diagnostics.Echo (same payload size)", f"{e50:.2f}", f"{e99:.2f}", "", ""],
            [f"Forecast.Forecast japan, {len(FLUSIGHT)} quantiles, horizons {horizons}", f"{f50:.2f}",
             f"{f99:.2f}", "p50 ≤ 5 ms", verdict(f50 <= 5.0)],
            ["Forecast.Forecast US counties (untrained ST-GNN, every region, the model's 23 quantiles, "
             "horizons 2, 3, 5, 10, 15: 1.5 MB out)", f"{c50:.2f}", f"{c99:.2f}", "", ""]]


def county_request(repo: Path) -> forecast_pb2.ForecastRequest:
    """Exports an untrained county-scale ST-GNN (random weights) into ``repo`` as forecast_us_counties
    and returns a request for all its regions (20 weeks of history)."""
    import torch

    from healthai_training.forecast.build import build_forecaster
    from healthai_training.forecast.export import export_forecaster

    graph = graph_counties()
    model = build_forecaster(graph, window=20, steps=15, seasonal=False, base="last", hidden=32,
                             scale_min=np.zeros(graph.n_nodes), scale_max=np.full(graph.n_nodes, 500.0))
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.05)
    export_forecaster(model, graph, repo / "forecast_us_counties", variants=("custom",))
    counts = np.random.default_rng(1).uniform(0, 500, size=(20, graph.n_nodes))
    return forecast_pb2.ForecastRequest(
        model_name="forecast_us_counties", horizons=[2, 3, 5, 10, 15],
        history=forecast_pb2.History(region_ids=list(graph.region_ids), counts=counts.reshape(-1).tolist()))


def response_building(args: argparse.Namespace) -> list[list[object]]:
    """The county response's two float arrays (point [5, 3144], quantiles [5, 3144, 23]) put into a
    ForecastResponse the old way (extend with Python floats) and the served way (packed bytes)."""
    from healthai.serving.wire import extend_float32

    rng = np.random.default_rng(2)
    point = rng.uniform(0, 500, (5, 3144)).astype(np.float32)
    quantiles = rng.uniform(0, 500, (5, 3144, 23)).astype(np.float32)

    def python_floats() -> None:
        out = forecast_pb2.ForecastResponse()
        out.point.extend(point.reshape(-1).tolist())
        out.quantiles.extend(quantiles.reshape(-1).tolist())

    def packed_bytes() -> None:
        out = forecast_pb2.ForecastResponse()
        extend_float32(out, "point", point)
        extend_float32(out, "quantiles", quantiles)

    slow, fast = timed(python_floats, args.budget), timed(packed_bytes, args.budget)
    return [["Forecast response, US counties: 5 × 3,144 points + 5 × 3,144 × 23 quantiles",
             f"{slow:.2f}", f"{fast:.3f}", f"{slow / fast:.0f}×"]]


def forecast_tables(repo: Path, work: Path, args: argparse.Namespace) -> list[str]:
    graphs = [("Japan prefectures", graph_japan), ("US counties (Census 2024)", graph_counties),
              (f"random kNN graph, {args.big_nodes:,} nodes", lambda: graph_random(args.big_nodes))]
    rows = [forecast_speed(name, make(), work, args) for name, make in graphs]
    out = [table(f"Forecast model, one window of 20 steps → 15 steps × 23 quantiles (ms, median; "
                 f"{args.threads} threads)",
                 ["graph", "nodes", "edges (CSR, incl. self-loops)", "custom-op ONNX", "standard-opset ONNX",
                  "torch eager", "standard / custom", "target", "verdict",
                  "aggregation node alone: custom / standard ms",
                  "softplus alone: custom / standard ms"], rows)]
    out.append(table("Forecast RPC latency, concurrency 1 (ms)", ["RPC", "p50", "p99", "target", "verdict"],
                     forecast_rpc(repo, work, args)))
    out.append(table("Forecast response building (ms, median)",
                     ["arrays", "extend(array.tolist())", "packed bytes (served)", "ratio"],
                     response_building(args)))
    return out
