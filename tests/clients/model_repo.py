"""A tiny Triton-layout model repository with answers computable by hand, so every client (Python,
Node.js, C++) can check what the server returns:

- ``risk_tiny`` v1: probability = sigmoid(features · RISK_WEIGHTS + RISK_BIAS), 4 named features;
- ``risk_tiny_cohort`` v1: the same weights over a cohort spec's features (``COHORT_SPEC``: age,
  male from a "sex" column of F/M, hba1c with a missing indicator) and a card ``imputation`` block
  (a missing hba1c is ``COHORT_HBA1C_FILL`` with ``hba1c_missing`` = 1);
- ``forecast_tiny`` v1: forecast[s, region, q] = mean(last WINDOW steps of the region) · (1 + 0.1 s) ·
  (0.5 + level_q), standard ONNX opset (no custom op needed).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pyarrow as pa
from onnx import TensorProto, helper, numpy_helper

RISK_MODEL = "risk_tiny"
RISK_FEATURES = ["age", "bmi", "systolic_bp", "hba1c"]
RISK_WEIGHTS = np.array([0.03, 0.05, 0.01, 0.2], dtype=np.float32)
RISK_BIAS = -5.0
RISK_BANDS = [{"name": "low", "upper": 0.2}, {"name": "medium", "upper": 0.5}, {"name": "high", "upper": 1.0}]

COHORT_MODEL = "risk_tiny_cohort"
COHORT_FEATURES = ["age", "male", "hba1c", "hba1c_missing"]
COHORT_HBA1C_FILL = 6.25
COHORT_SPEC = """
[cohort]
name = "tiny"
target = "outcome"
rows_are_patients = true

[features.age]
type = "numeric"
min = 0
max = 120

[features.male]
type = "binary"
column = "sex"
values = ["F", "M"]
positive = "M"

[features.hba1c]
type = "numeric"
min = 3
max = 20
missing = "indicator"
"""

FORECAST_MODEL = "forecast_tiny"
REGIONS = ["US-MA", "US-NY", "US-CA"]
WINDOW, STEPS = 4, 3
QUANTILES = [0.1, 0.5, 0.9]


def blood_pressures(n: int, impossible_row: int, prefix: str, patient: str) -> pa.Table:
    """``n`` systolic pressures of one patient as an Arrow observation table; one row is impossible
    (9999 mm[Hg]) so that it alone is rejected and its outcome names its row."""
    values = [120.0] * n
    values[impossible_row] = 9999.0
    return pa.table({"observation_id": [f"{prefix}-{i}" for i in range(n)], "patient_id": [patient] * n,
                     "loinc": ["8480-6"] * n, "value": values, "unit": ["mm[Hg]"] * n})


def expected_probability(features: np.ndarray) -> np.ndarray:
    z = np.asarray(features, np.float64) @ RISK_WEIGHTS.astype(np.float64) + RISK_BIAS
    return 1 / (1 + np.exp(-z))


def expected_forecast(history: np.ndarray) -> np.ndarray:
    """history [steps x regions] -> [STEPS x regions x QUANTILES]."""
    mean = np.asarray(history, np.float64)[-WINDOW:].mean(axis=0)
    s = np.arange(STEPS)[:, None, None]
    return mean[None, :, None] * (1 + 0.1 * s) * (0.5 + np.asarray(QUANTILES))[None, None, :]


def _risk_model() -> onnx.ModelProto:
    f = len(RISK_FEATURES)  # risk_tiny_cohort has as many
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "w"], ["z0"]),
         helper.make_node("Add", ["z0", "b"], ["z"]),
         helper.make_node("Sigmoid", ["z"], ["probability"])],
        "risk_tiny",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", f])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["batch", 1])],
        initializer=[numpy_helper.from_array(RISK_WEIGHTS.reshape(f, 1), "w"),
                     numpy_helper.from_array(np.array([RISK_BIAS], np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _forecast_model() -> onnx.ModelProto:
    n, q = len(REGIONS), len(QUANTILES)
    s = np.arange(STEPS, dtype=np.float32)[:, None]
    factors = ((1 + 0.1 * s) * (0.5 + np.asarray(QUANTILES, np.float32))[None, :])[None, :, None, :]
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["history"], ["mean"], axes=[1], keepdims=1),  # [B, 1, N]
         helper.make_node("Unsqueeze", ["mean", "axis3"], ["mean4"]),  # [B, 1, N, 1]
         helper.make_node("Mul", ["mean4", "factors"], ["forecast"])],  # [B, S, N, Q]
        "forecast_tiny",
        [helper.make_tensor_value_info("history", TensorProto.FLOAT, ["batch", WINDOW, n])],
        [helper.make_tensor_value_info("forecast", TensorProto.FLOAT, ["batch", STEPS, n, q])],
        initializer=[numpy_helper.from_array(factors.astype(np.float32), "factors"),
                     numpy_helper.from_array(np.array([3], np.int64), "axis3")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_repository(root: Path) -> Path:
    """Writes the models under ``root`` (version 1 each) and returns ``root``."""
    risk = root / RISK_MODEL
    (risk / "1").mkdir(parents=True)
    (risk / "config.pbtxt").write_text(
        f'name: "{RISK_MODEL}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 64\n'
        f'input [ {{ name: "features" data_type: TYPE_FP32 dims: [ {len(RISK_FEATURES)} ] }} ]\n'
        'output [ { name: "probability" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
        "dynamic_batching { max_queue_delay_microseconds: 200 }\n")
    onnx.save(_risk_model(), str(risk / "1" / "model.onnx"))
    card = {"features": [{"name": n, "description": n, "unit": "1", "baseline": 0.0} for n in RISK_FEATURES],
            "risk_bands": RISK_BANDS}
    (risk / "1" / "model_card.json").write_text(json.dumps(card))
    cohort = root / COHORT_MODEL
    (cohort / "1").mkdir(parents=True)
    config = (risk / "config.pbtxt").read_text()
    (cohort / "config.pbtxt").write_text(config.replace(f'"{RISK_MODEL}"', f'"{COHORT_MODEL}"'))
    onnx.save(_risk_model(), str(cohort / "1" / "model.onnx"))
    features = [{"name": n, "description": n, "unit": "1", "baseline": 0.0} for n in COHORT_FEATURES]
    card = {"features": features, "risk_bands": RISK_BANDS,
            "imputation": {"values": {"hba1c": COHORT_HBA1C_FILL}, "indicators": {"hba1c": "hba1c_missing"}}}
    (cohort / "1" / "model_card.json").write_text(json.dumps(card))

    fc = root / FORECAST_MODEL
    (fc / "1").mkdir(parents=True)
    n, q = len(REGIONS), len(QUANTILES)
    (fc / "config.pbtxt").write_text(
        f'name: "{FORECAST_MODEL}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
        f'input [ {{ name: "history" data_type: TYPE_FP32 dims: [ {WINDOW}, {n} ] }} ]\n'
        f'output [ {{ name: "forecast" data_type: TYPE_FP32 dims: [ {STEPS}, {n}, {q} ] }} ]\n')
    onnx.save(_forecast_model(), str(fc / "1" / "model.onnx"))
    (fc / "1" / "graph.json").write_text(json.dumps({"region_ids": REGIONS}))
    (fc / "1" / "model_card.json").write_text(json.dumps(
        {"window": WINDOW, "output_steps": STEPS, "quantile_levels": QUANTILES, "step": "W"}))
    return root
