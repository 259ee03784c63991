"""Export a forecaster into a Triton-layout folder, in two ONNX variants, with its region graph.

``<out_dir>/config.pbtxt``, ``<out_dir>/1/model.onnx`` (aggregation and each ST-GNN's quantile head as
the custom-domain nodes ``healthai::CsrAggregate`` and ``healthai::QuantileHead``, needs
``healthai.ops.ort_library_path()``),
``<out_dir>/1/model.standard.onnx`` (standard opset only), ``<out_dir>/1/graph.json`` and
``<out_dir>/1/model_card.json``.
ONNX input ``history`` FP32 [-1, W, N] raw weekly counts; output ``forecast`` FP32 [-1, S, N, Q]; the
stacked default (``StackedForecaster``) also outputs ``point`` FP32 [-1, S, N] (the stacked point forecast).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from healthai_training.common import write_json
from healthai_training.export import max_relative_error, write_config
from healthai_training.forecast.graph import RegionGraph
from healthai_training.forecast.model import STGNNForecaster
from healthai_training.forecast.stacked_model import StackedForecaster

logger = logging.getLogger(__name__)
VARIANT_FILES = {"custom": "model.onnx", "standard": "model.standard.onnx"}


def output_names(model: torch.nn.Module) -> list[str]:
    return ["forecast", "point"] if isinstance(model, StackedForecaster) else ["forecast"]


@contextlib.contextmanager
def fused_heads(model: torch.nn.Module, on: bool) -> Iterator[None]:
    """Every ST-GNN in ``model`` ends in one ``healthai::quantile_head`` op while exporting (``on``)."""
    nets = [m for m in model.modules() if isinstance(m, STGNNForecaster)]
    before = [net.fused_head for net in nets]
    for net in nets:
        net.fused_head = on
    try:
        yield
    finally:
        for net, was in zip(nets, before, strict=True):
            net.fused_head = was


def export_variant(model: STGNNForecaster, path: Path, *, variant: str) -> None:
    from healthai.ops.onnx_export import export_onnx

    example = torch.zeros(2, model.window, model.n_nodes)
    with warnings.catch_warnings(), fused_heads(model, variant == "custom"):
        warnings.simplefilter("ignore")
        export_onnx(
            model.eval(),
            (example,),
            path,
            variant=variant,
            input_names=["history"],
            output_names=output_names(model),
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1 << 16)},),
        )
    onnx.checker.check_model(str(path))


def parity(model: STGNNForecaster, path: Path, *, variant: str, batch: int = 3, seed: int = 0) -> float:
    """Max relative error of ONNX vs torch on fresh random counts in the model's scale range."""
    rng = np.random.default_rng(seed)
    lo = model.scale_min.numpy()
    span = model.scale_range.numpy()
    x = (lo + rng.uniform(0, 1.2, size=(batch, model.window, model.n_nodes)) * span).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.tensor(x))
    expected = [t.numpy() for t in (expected if isinstance(expected, tuple) else (expected,))]
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if variant == "custom":
        from healthai.ops import ort_library_path

        opts.register_custom_ops_library(str(ort_library_path()))
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    got = session.run(output_names(model), {"history": x})
    return max(max_relative_error(e, g) for e, g in zip(expected, got, strict=True))


def export_forecaster(
    model: STGNNForecaster | StackedForecaster,
    graph: RegionGraph,
    out_dir: Path | str,
    *,
    variants: tuple[str, ...] = ("custom", "standard"),
    card: dict[str, Any] | None = None,
    version: int = 1,
    max_batch_size: int = 64,
    check_parity: bool = True,
) -> dict[str, float]:
    """Write the model folder; returns {variant: parity max rel err} (empty when ``check_parity`` is off)."""
    unknown = set(variants) - set(VARIANT_FILES)
    if unknown or not variants:
        raise ValueError(f"variants must be a non-empty subset of {sorted(VARIANT_FILES)}, got {variants}")
    if graph.n_nodes != model.n_nodes:
        raise ValueError(f"graph has {graph.n_nodes} nodes but the model {model.n_nodes}")
    out = Path(out_dir)
    vdir = out / str(version)
    vdir.mkdir(parents=True, exist_ok=True)
    errors: dict[str, float] = {}
    for variant in variants:
        path = vdir / VARIANT_FILES[variant]
        export_variant(model, path, variant=variant)
        if check_parity:
            errors[variant] = parity(model, path, variant=variant)
    graph.save(vdir / "graph.json")
    q = len(model.quantiles)
    extra = ""
    if "custom" in variants:
        extra += (
            "# model.onnx holds our custom nodes healthai::CsrAggregate and QuantileHead (load\n"
            "# the op library of `healthai info` via model_operations { op_library_filename: ... }); stock\n"
            "# Triton: default_model_filename: "
            '"model.standard.onnx"\n'
        )
    write_config(
        out / "config.pbtxt",
        name=out.name,
        input_name="history",
        input_dims=[model.window, model.n_nodes],
        output_name="forecast",
        output_dims=[model.steps, model.n_nodes, q],
        max_batch_size=max_batch_size,
        max_queue_delay_us=None,
        extra=extra,
        extra_outputs=(("point", [model.steps, model.n_nodes]),) if len(output_names(model)) > 1 else (),
    )
    meta = {
        "window": model.window,
        "recent": model.recent,
        "seasonal": model.seasonal,
        "season_length": int(getattr(model, "season", 52)),
        "base": model.base,
        "seasonal_inputs": model.seasonal_inputs,
        "anomaly_lags": model.anomaly_lags,
        "output_steps": model.steps,
        "output_names": output_names(model),
        "quantile_levels": list(model.quantiles),
        "n_regions": model.n_nodes,
        "variants": {v: VARIANT_FILES[v] for v in variants},
        "onnx_parity_max_rel_err": errors,
    }
    write_json(vdir / "model_card.json", {**(card or {}), **meta, "version": version})
    checked = ", ".join(f"{v} {e:.1e}" for v, e in errors.items()) or "not checked"
    logger.info("exported %s to the run folder as v%d (variants %s; parity max rel err: %s)", out.name,
                version, "/".join(variants), checked)
    return errors
