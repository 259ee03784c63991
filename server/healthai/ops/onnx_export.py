"""Export models containing ``GraphAggregation`` (``torch.ops.healthai.csr_aggregate``) to ONNX.

Two variants of the aggregation node:

- ``variant="custom"``: one ``healthai.CsrAggregate`` node (domain ``healthai``, opset 1) served by
  our ONNX Runtime library (which also serves each softplus, as ``healthai.Softplus``); run it with::

      so = onnxruntime.SessionOptions()
      so.register_custom_ops_library(str(healthai.ops.ort_library_path()))
      sess = onnxruntime.InferenceSession(path, so)

- ``variant="standard"``: standard ONNX ops only (opset 18: Gather, Mul, ScatterND with
  reduction add/max, CumSum, ...), sparse — memory is O(edges x features), never a dense N x N
  matrix — so any ONNX runtime can serve it, at the cost of per-edge intermediates.

The graph (indptr/indices/weights) becomes initializers of the model. Custom node semantics:
inputs ``(indptr int64[R+1], indices int64[E], weights T[E] (optional, empty = unweighted),
x T[N, F] or T[B, N, F])``, attribute ``reduce`` (``sum``/``mean``/``max``), output ``out``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import onnx
import onnxscript
import torch
from onnx.defs import OpSchema
from onnxscript import opset18 as op

import healthai.ops.quantile_head  # registers torch.ops.healthai.quantile_head
import healthai.ops.torch_ops  # noqa: F401  (registers torch.ops.healthai.csr_aggregate)
from healthai.ops.onnx_passes import rewrite_softplus

# torch's exporter warns about each torchvision op when torchvision is absent (we never use it): four
# lines per export that buried the CLI's output.
QUIET_TORCH_LOGGERS = ("torch.onnx._internal.exporter._registration",)
for _name in QUIET_TORCH_LOGGERS:
    logging.getLogger(_name).setLevel(logging.ERROR)

__all__ = ["CUSTOM_DOMAIN", "CUSTOM_OPSET_VERSION", "OP_NAME", "STANDARD_OPSET", "export_onnx"]

OP_NAME = "CsrAggregate"
CUSTOM_DOMAIN = "healthai"
CUSTOM_OPSET_VERSION = 1
STANDARD_OPSET = 18
Variant = Literal["custom", "standard"]


def _register_schema() -> None:
    """Declare healthai.CsrAggregate, healthai.Softplus and healthai.QuantileHead to onnx (shape/type
    checks; onnxscript needs a schema)."""
    param = OpSchema.FormalParameter
    if not onnx.defs.has("QuantileHead", CUSTOM_DOMAIN):
        onnx.defs.register_schema(
            OpSchema(
                "QuantileHead",
                CUSTOM_DOMAIN,
                CUSTOM_OPSET_VERSION,
                doc="median = base + raw[..., median_index]; max((median + signed cumulative softplus(raw) "
                "outwards from it) * scale + shift, 0), steps first (healthai.ops.quantile_head)",
                inputs=[
                    param("raw", "T", "[B, N, S, Q] head outputs"),
                    param("base", "T", "[B, N, S] the median's other terms (model scale)"),
                    param("scale", "T", "[N] per-region scale"),
                    param("shift", "T", "[N] per-region shift"),
                ],
                outputs=[param("out", "T", "[B, S, N, Q] counts")],
                type_constraints=[("T", ["tensor(float)", "tensor(double)"], "element type")],
                attributes=[OpSchema.Attribute("median_index", OpSchema.AttrType.INT, "the median's level")],
            )
        )
    if not onnx.defs.has("Softplus", CUSTOM_DOMAIN):
        onnx.defs.register_schema(
            OpSchema(
                "Softplus",
                CUSTOM_DOMAIN,
                CUSTOM_OPSET_VERSION,
                doc="y = log(1 + exp(x)), elementwise (ONNX Softplus, vectorised)",
                inputs=[param("X", "T", "any shape")],
                outputs=[param("Y", "T", "the shape of X")],
                type_constraints=[("T", ["tensor(float)", "tensor(double)"], "element type")],
            )
        )
    if onnx.defs.has(OP_NAME, CUSTOM_DOMAIN):
        return
    optional = OpSchema.FormalParameterOption.Optional
    onnx.defs.register_schema(
        OpSchema(
            OP_NAME,
            CUSTOM_DOMAIN,
            CUSTOM_OPSET_VERSION,
            doc="out[..., i, :] = reduce over e in indptr[i]:indptr[i+1] of w[e] * x[..., indices[e], :]",
            inputs=[
                param("indptr", "tensor(int64)", "[n_rows + 1] row starts"),
                param("indices", "tensor(int64)", "[nnz] source node of each edge"),
                param("weights", "T", "[nnz] edge weights; empty/omitted: all 1", param_option=optional),
                param("x", "T", "[N, F] or [B, N, F] node features"),
            ],
            outputs=[param("out", "T", "[n_rows, F] or [B, n_rows, F]")],
            type_constraints=[("T", ["tensor(float)", "tensor(double)"], "feature type")],
            attributes=[
                OpSchema.Attribute("reduce", onnx.helper.make_attribute("reduce", "sum"), "sum | mean | max")
            ],
        )
    )


_register_schema()
_healthai = onnxscript.values.Opset(CUSTOM_DOMAIN, CUSTOM_OPSET_VERSION)


def _custom_translation(
    indptr: Any,
    indices: Any,
    weights: Any,
    x: Any,
    reduce: str,
    t_indptr: Any = None,
    t_indices: Any = None,
    t_edge_ids: Any = None,
    num_threads: int = 0,
) -> tuple[Any, Any]:
    indptr64 = op.Cast(indptr, to=onnx.TensorProto.INT64)
    indices64 = op.Cast(indices, to=onnx.TensorProto.INT64)
    out = _healthai.CsrAggregate(indptr64, indices64, weights, x, reduce=reduce)
    return out, op.Constant(value_ints=[0])  # argmax only matters for training


def _scalar_like(value: float, like: Any) -> Any:
    return op.CastLike(op.Constant(value_float=value), like)


def _standard_translation(
    indptr: Any,
    indices: Any,
    weights: Any,
    x: Any,
    reduce: str,
    t_indptr: Any = None,
    t_indices: Any = None,
    t_edge_ids: Any = None,
    num_threads: int = 0,
) -> tuple[Any, Any]:
    batched = len(x.shape) == 3
    indptr64 = op.Cast(indptr, to=onnx.TensorProto.INT64)
    indices64 = op.Cast(indices, to=onnx.TensorProto.INT64)
    zero, one, minus_one = (op.Constant(value_ints=[v]) for v in (0, 1, -1))
    nnz = op.Shape(indices64)
    # row of every edge: cumulative count of the row starts indptr[1:-1] at or before the edge
    starts = op.Slice(indptr64, one, minus_one)
    marks = op.ScatterElements(
        op.Expand(op.Constant(value_int=0), op.Add(nnz, one)),
        starts,
        op.Add(op.Mul(starts, zero), one),
        axis=0,
        reduction="add",
    )
    rows = op.Slice(op.CumSum(marks, op.Constant(value_int=0)), zero, nnz)
    counts = op.Sub(op.Slice(indptr64, one, op.Shape(indptr64)), op.Slice(indptr64, zero, minus_one))
    xt = op.Transpose(x, perm=[1, 0, 2]) if batched else x  # nodes first: [N, (B,) F]
    msgs = op.Gather(xt, indices64, axis=0)  # [E, (B,) F] per-edge messages
    trailing = op.Constant(value_ints=[1, 2] if batched else [1])
    if weights is not None:
        msgs = op.Mul(msgs, op.Unsqueeze(weights, trailing))
    out_shape = op.Concat(op.Shape(counts), op.Slice(op.Shape(xt), one, op.Constant(value_ints=[3])), axis=0)
    cnt = op.Unsqueeze(op.CastLike(counts, x), trailing)  # [R, 1(, 1)]
    where = op.Unsqueeze(rows, one)  # [E, 1]
    if reduce == "max":
        lowest = op.Expand(_scalar_like(float("-inf"), x), out_shape)
        agg = op.ScatterND(lowest, where, msgs, reduction="max")
        agg = op.Where(op.Greater(cnt, _scalar_like(0.0, x)), agg, _scalar_like(0.0, x))
    else:
        agg = op.ScatterND(op.Expand(_scalar_like(0.0, x), out_shape), where, msgs, reduction="add")
        if reduce == "mean":
            agg = op.Div(agg, op.Max(cnt, _scalar_like(1.0, x)))
    out = op.Transpose(agg, perm=[1, 0, 2]) if batched else agg
    return out, op.Constant(value_ints=[0])


def _quantile_head_custom(raw: Any, base: Any, scale: Any, shift: Any, median_index: int) -> Any:
    return _healthai.QuantileHead(raw, base, scale, shift, median_index=median_index)


def _quantile_head_standard(raw: Any, base: Any, scale: Any, shift: Any, median_index: int) -> Any:
    """Standard ops: cumulative sums of the softplus increments outwards from the median."""
    m, levels = median_index, op.Constant(value_int=3)

    def ints(*values: int) -> Any:
        return op.Constant(value_ints=list(values))

    lower = op.Slice(raw, ints(0), ints(m), ints(3))
    upper = op.Slice(raw, ints(m + 1), ints(2**62), ints(3))
    mid = op.Add(op.Unsqueeze(base, ints(3)), op.Slice(raw, ints(m), ints(m + 1), ints(3)))
    below = op.Sub(mid, op.CumSum(op.Softplus(lower), levels, reverse=1))
    above = op.Add(mid, op.CumSum(op.Softplus(upper), levels))
    q = op.Transpose(op.Concat(below, mid, above, axis=3), perm=[0, 2, 1, 3])
    per_region = ints(1, 1, -1, 1)
    counts = op.Add(op.Mul(q, op.Reshape(scale, per_region)), op.Reshape(shift, per_region))
    return op.Clip(counts, _scalar_like(0.0, counts))


def export_onnx(
    model: torch.nn.Module,
    example_args: Sequence[Any],
    path: str | Path,
    *,
    variant: Variant = "custom",
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_shapes: Any = None,
    dynamic_axes: Mapping[str, Any] | None = None,
    opset_version: int = STANDARD_OPSET,
    fast_softplus: bool = True,
) -> Path:
    """Export ``model`` (which may contain ``GraphAggregation``) to ``path``; returns the path.

    Uses the dynamo exporter of ``torch.onnx.export`` with a translation of
    ``torch.ops.healthai.csr_aggregate`` chosen by ``variant`` ("custom": one ``healthai.CsrAggregate``
    node; "standard": standard opset-18 ops only). ``input_names``, ``output_names``,
    ``dynamic_shapes`` (``torch.export`` style) or ``dynamic_axes`` (legacy style) are passed through.
    With ``fast_softplus`` (default) the saved graph goes through ``onnx_passes.rewrite_softplus``
    (same function; ONNX Runtime's Softplus kernel is scalar): "custom" gets our vectorised
    ``healthai.Softplus`` node, "standard" a decomposition into vectorised standard ops.
    """
    if variant not in ("custom", "standard"):
        raise ValueError(f"variant must be 'custom' or 'standard', got {variant!r}")
    if opset_version < STANDARD_OPSET:
        raise ValueError(f"opset_version must be >= {STANDARD_OPSET} (ScatterND max), got {opset_version}")
    custom = variant == "custom"
    ops = torch.ops.healthai
    table = {
        ops.csr_aggregate.default: _custom_translation if custom else _standard_translation,
        ops.quantile_head.default: _quantile_head_custom if custom else _quantile_head_standard,
    }
    program = torch.onnx.export(
        model,
        tuple(example_args),
        dynamo=True,
        custom_translation_table=table,
        opset_version=opset_version,
        input_names=list(input_names) if input_names is not None else None,
        output_names=list(output_names) if output_names is not None else None,
        dynamic_shapes=dynamic_shapes,
        dynamic_axes=dict(dynamic_axes) if dynamic_axes is not None else None,
        verbose=False,
    )
    if program is None:  # pragma: no cover - only without dynamo
        raise RuntimeError("torch.onnx.export returned no program")
    path = Path(path)
    program.save(str(path))
    if fast_softplus:
        proto = onnx.load(str(path))
        if rewrite_softplus(proto, custom_domain=CUSTOM_DOMAIN if variant == "custom" else None):
            onnx.save(proto, str(path))
    return path
