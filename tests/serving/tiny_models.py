"""Tiny ONNX models and Triton-layout repositories built with ``onnx.helper`` for the serving tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from healthai.serving.runtime.onnx import OnnxModel
from healthai.serving.runtime.repository import read_config, scan_versions

RISK_FEATURES = ["age", "bmi", "systolic_bp", "hba1c"]


def logistic_model(weights: np.ndarray, bias: float, *, input_name: str = "features",
                   output_name: str = "probability") -> onnx.ModelProto:
    """probability = sigmoid(features @ weights + bias), features FP32 [-1, F] -> [-1, 1]."""
    f = len(weights)
    w = numpy_helper.from_array(np.asarray(weights, np.float32).reshape(f, 1), "w")
    b = numpy_helper.from_array(np.asarray([bias], np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", [input_name, "w"], ["z0"]),
         helper.make_node("Add", ["z0", "b"], ["z"]),
         helper.make_node("Sigmoid", ["z"], [output_name])],
        "logistic",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", f])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", 1])],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def risk_config(name: str, f: int, *, max_batch_size: int = 64, delay_us: int = 200,
                batching: bool = True) -> str:
    text = f"""name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: {max_batch_size}
input [ {{ name: "features" data_type: TYPE_FP32 dims: [ {f} ] }} ]
output [ {{ name: "probability" data_type: TYPE_FP32 dims: [ 1 ] }} ]
"""
    if batching:
        text += f"dynamic_batching {{ max_queue_delay_microseconds: {delay_us} }}\n"
    return text


def risk_card(features: list[str] = RISK_FEATURES) -> dict:
    return {
        "features": [{"name": n, "description": n, "unit": "1", "baseline": 0.0} for n in features],
        "risk_bands": [{"name": "low", "upper": 0.2}, {"name": "medium", "upper": 0.5},
                       {"name": "high", "upper": 1.0}],
    }


def write_risk_version(root: Path, name: str, version: int, weights: np.ndarray, bias: float = 0.0,
                       **config: object) -> Path:
    """Writes config.pbtxt (if absent) and ``<version>/model.onnx`` + model card; returns the folder."""
    model_dir = root / name
    model_dir.mkdir(parents=True, exist_ok=True)
    if not (model_dir / "config.pbtxt").exists():
        (model_dir / "config.pbtxt").write_text(risk_config(name, len(weights), **config))  # type: ignore[arg-type]
    vdir = model_dir / str(version)
    tmp = root / f".{name}-{version}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    onnx.save(logistic_model(weights, bias), str(tmp / "model.onnx"))
    names = [*RISK_FEATURES, *(f"x{i}" for i in range(len(RISK_FEATURES), len(weights)))][: len(weights)]
    (tmp / "model_card.json").write_text(json.dumps(risk_card(names)))
    tmp.rename(vdir)  # appears atomically, like a real deployment would publish it
    return vdir


def load_risk_runtime(root: Path, weights: np.ndarray, bias: float = 0.0, **config: object) -> OnnxModel:
    """Writes model "tiny" v1 (``write_risk_version``) and loads it into a CPU OnnxModel."""
    write_risk_version(root, "tiny", 1, weights, bias=bias, **config)
    runtime = OnnxModel(scan_versions(root / "tiny")[1], read_config(root / "tiny"), use_cuda=False)
    runtime.load()
    return runtime


QUANTILES = [0.1, 0.25, 0.5, 0.75, 0.9]


def forecast_factors(steps: int, levels: list[float] = QUANTILES) -> np.ndarray:
    """[S, Q]: the tiny forecaster predicts mean(window) * (1 + 0.1 s) * (0.5 + level)."""
    s = np.arange(steps, dtype=np.float32)[:, None]
    return ((1 + 0.1 * s) * (0.5 + np.asarray(levels, np.float32))[None, :]).astype(np.float32)


def forecast_model(window: int, n: int, steps: int, *, custom_node: bool = False,
                   adjacency: np.ndarray | None = None) -> onnx.ModelProto:
    """history [-1, W, N] -> forecast [-1, S, N, Q]: aggregate over the graph (A @ x per step), average the
    window, scale by :func:`forecast_factors`. ``custom_node`` aggregates with our op library's
    ``healthai::CsrAggregate`` (CSR of A); otherwise with a standard MatMul by A^T."""
    a = np.eye(n, dtype=np.float32) if adjacency is None else np.asarray(adjacency, np.float32)
    factors = forecast_factors(steps)[None, :, None, :]  # [1, S, 1, Q]
    inits = [numpy_helper.from_array(factors, "factors"),
             numpy_helper.from_array(np.array([3], np.int64), "axis3")]
    opsets = [helper.make_opsetid("", 17)]
    if custom_node:
        rows, cols = np.nonzero(a)
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))]).astype(np.int64)
        inits += [numpy_helper.from_array(indptr, "indptr"),
                  numpy_helper.from_array(cols.astype(np.int64), "indices"),
                  numpy_helper.from_array(a[rows, cols], "weights")]
        aggregate = [helper.make_node("Transpose", ["history"], ["x_nw"], perm=[0, 2, 1]),
                     helper.make_node("CsrAggregate", ["indptr", "indices", "weights", "x_nw"], ["agg_nw"],
                                      domain="healthai", reduce="sum"),
                     helper.make_node("Transpose", ["agg_nw"], ["agg"], perm=[0, 2, 1])]
        opsets.append(helper.make_opsetid("healthai", 1))
    else:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(a.T), "a_t"))
        aggregate = [helper.make_node("MatMul", ["history", "a_t"], ["agg"])]
    nodes = [*aggregate,
             helper.make_node("ReduceMean", ["agg"], ["mean"], axes=[1], keepdims=1),  # [B, 1, N]
             helper.make_node("Unsqueeze", ["mean", "axis3"], ["mean4"]),  # [B, 1, N, 1]
             helper.make_node("Mul", ["mean4", "factors"], ["forecast"])]
    graph = helper.make_graph(
        nodes, "tiny_forecaster",
        [helper.make_tensor_value_info("history", TensorProto.FLOAT, ["batch", window, n])],
        [helper.make_tensor_value_info("forecast", TensorProto.FLOAT, ["batch", steps, n, len(QUANTILES)])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model


def write_forecast_version(root: Path, name: str, version: int, region_ids: list[str], *, window: int = 4,
                           steps: int = 3, custom_variant: bool = False,
                           adjacency: np.ndarray | None = None) -> Path:
    model_dir = root / name
    vdir = model_dir / str(version)
    vdir.mkdir(parents=True)
    n = len(region_ids)
    (model_dir / "config.pbtxt").write_text(f"""name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ {{ name: "history" data_type: TYPE_FP32 dims: [ {window}, {n} ] }} ]
output [ {{ name: "forecast" data_type: TYPE_FP32 dims: [ {steps}, {n}, {len(QUANTILES)} ] }} ]
""")
    if custom_variant:
        onnx.save(forecast_model(window, n, steps, custom_node=True, adjacency=adjacency),
                  str(vdir / "model.onnx"))
        onnx.save(forecast_model(window, n, steps, adjacency=adjacency), str(vdir / "model.standard.onnx"))
    else:
        onnx.save(forecast_model(window, n, steps, adjacency=adjacency), str(vdir / "model.onnx"))
    (vdir / "graph.json").write_text(json.dumps({"region_ids": region_ids}))
    (vdir / "model_card.json").write_text(json.dumps(
        {"window": window, "output_steps": steps, "quantile_levels": QUANTILES, "step": "W"}))
    return vdir
