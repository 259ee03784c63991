"""healthai.ops: the native CSR graph-aggregation kernel for NumPy, torch and ONNX Runtime.

NumPy-level API (no torch import): ``aggregate``, ``aggregate_backward``, ``csr_transpose``,
``CsrGraph``, ``set_num_threads`` / ``get_num_threads``, ``build_info``, ``ort_library_path``.
torch-level API (imported on first use): ``GraphAggregation`` (``nn.Module``), ``csr_aggregate``
(the ``torch.ops.healthai.csr_aggregate`` custom op with autograd), and ``export_onnx`` in
``healthai.ops.onnx_export``.
"""

from __future__ import annotations

import importlib
from typing import Any

from healthai.ops.aggregate import (
    REDUCTIONS,
    CsrGraph,
    CsrTranspose,
    Reduce,
    aggregate,
    aggregate_backward,
    build_info,
    csr_transpose,
    get_num_threads,
    ort_library_path,
    set_num_threads,
)

_LAZY = {
    "GraphAggregation": "healthai.ops.modules",
    "symmetric_normalized_weights": "healthai.ops.modules",
    "csr_aggregate": "healthai.ops.torch_ops",
    "export_onnx": "healthai.ops.onnx_export",
}

__all__ = [
    "REDUCTIONS",
    "CsrGraph",
    "CsrTranspose",
    "GraphAggregation",
    "Reduce",
    "aggregate",
    "aggregate_backward",
    "build_info",
    "csr_aggregate",
    "csr_transpose",
    "export_onnx",
    "get_num_threads",
    "ort_library_path",
    "set_num_threads",
    "symmetric_normalized_weights",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'healthai.ops' has no attribute {name!r}")
