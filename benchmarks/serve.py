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
Helpers: ``serve_load.py`` (load generation, tables), ``serve_forecast.py`` (the forecast tables).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from serve_forecast import forecast_tables, forecaster, graph_japan
from serve_load import interleaved, latency_pairs, rpc, rpc_cycle, start, table, verdict

from healthai.app.testing import stop_server_process
from healthai.serving.risk.card import parse_risk_card
from healthai.serving.risk.task import occlusions, top_features
from healthai.serving.settings import DEFAULT_MODEL_REPOSITORY, newest_version_dir
from healthai.v1 import diagnostics_pb2, diagnostics_pb2_grpc, risk_pb2, risk_pb2_grpc

RISK_MODEL = "risk_readmission"


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


def risk_tables(repo: Path, work: Path, args: argparse.Namespace) -> list[str]:
    card = json.loads((newest_version_dir(RISK_MODEL, repo) / "model_card.json").read_text())
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
    bare = bare_ort(newest_version_dir(RISK_MODEL, repo) / "model.onnx", f, args.threads)
    rows_big = [[label, f"{results[(label, 0)]:,.0f}", "≥ 200,000", verdict(results[(label, 0)] >= 200_000)]
                for label in big]
    for b, v in bare.items():
        what = f"bare ORT in-process, {b:,} rows"
        what += f" (1000 patients × {f + 1}, top features)" if b > 1000 else ""
        rows_big.append([what, f"{v:,.0f}", "(model's own cost)", ""])
    slow, fast = occlusion_pair(x, risk.baseline)
    rows_big.append([f"occlusion feed + top 3, 1000 patients in-process: NumPy {slow:.2f} ms, "
                     f"native {fast:.2f} ms", f"{slow / fast:.1f}× faster", "(native batch path)", ""])
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


def occlusion_pair(x: np.ndarray, baseline: np.ndarray, k: int = 3, reps: int = 30) -> tuple[float, float]:
    """Milliseconds to build the occluded feed and pick each patient's top k from a contribution
    matrix: the NumPy formulation (repeat and scatter, full stable argsort) and the native batch path
    that Risk.Score runs (csrc/occlusion.h), interleaved; the results are identical (tests/native)."""
    def numpy_path() -> None:
        moved = x != baseline
        _, feature = np.nonzero(moved)
        occluded = np.repeat(x, moved.sum(axis=1), axis=0)
        occluded[np.arange(len(feature)), feature] = baseline[feature]
        np.concatenate([x, occluded])
        np.argsort(-np.abs(contribution), axis=1, kind="stable")[:, :k]

    def native_path() -> None:
        occlusions(x, baseline)
        top_features(contribution, k)

    contribution = np.random.default_rng(1).normal(size=x.shape).astype(np.float32)
    spent = {numpy_path: 0.0, native_path: 0.0}
    for _ in range(reps):
        for fn in spent:
            t = time.perf_counter()
            fn()
            spent[fn] += time.perf_counter() - t
    return spent[numpy_path] / reps * 1e3, spent[native_path] / reps * 1e3


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
