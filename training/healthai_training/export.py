"""Write models into a Triton-layout repository: ``<repo>/<name>/config.pbtxt`` and
``<repo>/<name>/<version>/model.onnx`` + ``model_card.json``.

Risk contract (what the server relies on): ONNX input ``features`` FP32 [-1, F] of raw feature
values in the card's order (standardisation is in the graph), output ``probability`` FP32 [-1, 1]
(Platt-calibrated in the graph). Card: ``features`` = [{name, description, unit, baseline, domain}]
with baseline = training mean (occlusion baseline for top contributing features), ``domains`` (valid
input domains, ``risk.domains``), ``risk_bands``,
``metrics``, ``privacy``, ``data``, ``split``, ``date``, ``code_version``.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from healthai.ops.onnx_export import QUIET_TORCH_LOGGERS  # noqa: F401  (silences torchvision notices)
from healthai_training.common import code_version, utc_now, write_json
from healthai_training.risk.model import CalibratedRisk

logger = logging.getLogger(__name__)
OPSET = 17
CARD_FIELDS = (
    "name",
    "version",
    "task",
    "inputs",
    "outputs",
    "metrics",
    "privacy",
    "data",
    "split",
    "date",
    "code_version",
)


def tensor_block(kind: str, name: str, dims: list[int]) -> str:
    shape = ", ".join(map(str, dims))
    return f'{kind} [\n  {{\n    name: "{name}"\n    data_type: TYPE_FP32\n    dims: [ {shape} ]\n  }}\n]\n'


def write_config(
    path: Path,
    *,
    name: str,
    input_name: str,
    input_dims: list[int],
    output_name: str,
    output_dims: list[int],
    max_batch_size: int,
    max_queue_delay_us: int | None,
    extra: str = "",
    extra_outputs: tuple[tuple[str, list[int]], ...] = (),
) -> None:
    """A Triton ``config.pbtxt`` (dims exclude the batch dimension, as Triton expects)."""
    text = (
        f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: {max_batch_size}\n'
        + tensor_block("input", input_name, input_dims)
        + tensor_block("output", output_name, output_dims)
        + "".join(tensor_block("output", n, d) for n, d in extra_outputs)
    )
    if max_queue_delay_us is not None:
        text += f"dynamic_batching {{\n  max_queue_delay_microseconds: {max_queue_delay_us}\n}}\n"
    text += "instance_group [\n  {\n    kind: KIND_CPU\n    count: 1\n  }\n]\n" + extra
    path.write_text(text)


def export_onnx(
    module: torch.nn.Module, example: torch.Tensor, path: Path, *, input_name: str, output_name: str
) -> None:
    """Standard-opset export with a dynamic batch dimension (torch.export-based exporter)."""
    module = module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            (example,),
            None,
            input_names=[input_name],
            output_names=[output_name],
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1 << 20)},),
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
            optimize=True,
        )
    model = program.model_proto
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def max_relative_error(reference: np.ndarray, other: np.ndarray) -> float:
    """max |a - b| / max(|a|, 1e-3 · max|a|, 1e-6): relative, robust to exact zeros."""
    ref, oth = np.asarray(reference, np.float64), np.asarray(other, np.float64)
    floor = max(1e-3 * float(np.abs(ref).max(initial=0.0)), 1e-6)
    return float(np.max(np.abs(ref - oth) / np.maximum(np.abs(ref), floor)))


def run_onnx(
    path: Path, inputs: dict[str, np.ndarray], *, custom_op_library: str | None = None
) -> np.ndarray:
    opts = ort.SessionOptions()
    if custom_op_library:
        opts.register_custom_ops_library(custom_op_library)
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return session.run(None, inputs)[0]


def base_card(
    *,
    name: str,
    task: str,
    metrics: dict[str, Any],
    privacy: dict[str, Any],
    data: dict[str, Any],
    split: dict[str, Any],
    inputs: list[dict[str, Any]],
    outputs: list[dict[str, Any]],
    **extra: Any,
) -> dict[str, Any]:
    return {
        "name": name,
        "version": 1,
        "task": task,
        "inputs": inputs,
        "outputs": outputs,
        "metrics": metrics,
        "privacy": privacy,
        "data": data,
        "split": split,
        "date": utc_now(),
        "code_version": code_version(),
        **extra,
    }


def export_risk(
    *,
    model: torch.nn.Module,
    features: list[dict[str, Any]],
    card: dict[str, Any],
    repo: Path,
    name: str,
    version: int = 1,
    max_batch_size: int = 4096,
    max_queue_delay_us: int = 500,
) -> Path:
    """Export a calibrated risk model into ``repo/name``; returns the version folder."""
    n = len(features)
    vdir = Path(repo) / name / str(version)
    vdir.mkdir(parents=True, exist_ok=True)
    exported = model.folded() if isinstance(model, CalibratedRisk) else model
    export_onnx(
        exported, torch.zeros(2, n), vdir / "model.onnx", input_name="features", output_name="probability"
    )
    rng = np.random.default_rng(0)
    baseline = np.array([f["baseline"] for f in features], np.float32)
    probe = (baseline + rng.normal(size=(64, n)) * (np.abs(baseline) + 1)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.tensor(probe)).numpy()
    err = max_relative_error(expected, run_onnx(vdir / "model.onnx", {"features": probe}))
    write_config(
        Path(repo) / name / "config.pbtxt",
        name=name,
        input_name="features",
        input_dims=[n],
        output_name="probability",
        output_dims=[1],
        max_batch_size=max_batch_size,
        max_queue_delay_us=max_queue_delay_us,
    )
    write_json(
        vdir / "model_card.json",
        {
            **card,
            "version": version,
            "features": features,
            "onnx": {"opset": OPSET, "parity_max_rel_err": err},
        },
    )
    logger.info("exported %s v%d (parity max rel err %.2e)", name, version, err)
    return vdir
