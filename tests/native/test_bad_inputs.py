"""Bad input never crashes: each case raises ValueError/IndexError naming the argument and value,
through the pybind11 module (NumPy and torch) and through ONNX Runtime (the custom op)."""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from healthai.ops import (
    aggregate,
    aggregate_backward,
    build_info,
    csr_transpose,
    ort_library_path,
    set_num_threads,
)

I64, F32 = np.int64, np.float32
GOOD = dict(
    indptr=np.array([0, 2, 3], dtype=I64),
    indices=np.array([0, 3, 1], dtype=I64),
    x=np.ones((4, 5), dtype=F32),
    weights=np.ones(3, dtype=F32),
)

# (case id, changes to GOOD, reduce, exception type, message regex, checked through ORT too)
CASES = [
    (
        "non-monotone indptr",
        dict(indptr=np.array([0, 3, 2], I64)),
        "sum",
        ValueError,
        r"indptr must be non-decreasing: indptr[1]=3 > indptr[2]=2",
        True,
    ),
    (
        "indptr not starting at 0",
        dict(indptr=np.array([1, 2, 3], I64)),
        "sum",
        ValueError,
        r"indptr[0] must be 0, got 1",
        True,
    ),
    (
        "negative index",
        dict(indices=np.array([0, -1, 1], I64)),
        "sum",
        IndexError,
        r"indices[1]=-1 is out of range for 4 nodes",
        True,
    ),
    (
        "index out of range",
        dict(indices=np.array([0, 3, 4], I64)),
        "mean",
        IndexError,
        r"indices[2]=4 is out of range for 4 nodes",
        True,
    ),
    (
        "indptr[-1] != len(indices)",
        dict(indptr=np.array([0, 2, 2], I64)),
        "sum",
        ValueError,
        r"indptr[-1]=2 must equal len(indices)=3",
        True,
    ),
    (
        "weights length",
        dict(weights=np.ones(2, F32)),
        "sum",
        ValueError,
        r"weights has 2 elements but indices has 3",
        True,
    ),
    ("unknown reduce", {}, "min", ValueError, r"reduce must be one of 'sum', 'mean', 'max', got 'min'", True),
    (
        "empty indptr",
        dict(indptr=np.zeros(0, I64)),
        "sum",
        ValueError,
        r"indptr must have n_rows + 1 >= 1 elements, got 0",
        True,
    ),
    (
        "x is 1-D",
        dict(x=np.ones(4, F32)),
        "sum",
        ValueError,
        r"x must have shape [N, F] or [B, N, F], got 1 dimensions with shape (4,)",
        True,
    ),
    (
        "x is 4-D",
        dict(x=np.ones((1, 1, 4, 5), F32)),
        "sum",
        ValueError,
        r"x must have shape [N, F] or [B, N, F], got 4 dimensions",
        True,
    ),
    (
        "indptr is 2-D",
        dict(indptr=np.array([[0, 2, 3]], I64)),
        "sum",
        ValueError,
        r"indptr must be 1-D, got shape (1, 3)",
        True,
    ),
    (
        "float indptr",
        dict(indptr=np.array([0, 2, 3], np.float64)),
        "sum",
        ValueError,
        r"indptr must be int32 or int64, got float64",
        False,
    ),
    (
        "mixed index dtypes",
        dict(indices=np.array([0, 3, 1], np.int32)),
        "sum",
        ValueError,
        r"indices must have the dtype of indptr (int64), got int32",
        False,
    ),
    (
        "integer x",
        dict(x=np.ones((4, 5), I64), weights=None),
        "sum",
        ValueError,
        r"x must be float32 or float64, got int64",
        False,
    ),
    (
        "uint8 x",
        dict(x=np.ones((4, 5), np.uint8), weights=None),
        "sum",
        ValueError,
        r"x must be float32 or float64, got uint8",
        False,
    ),
    (
        "weights dtype",
        dict(weights=np.ones(3, np.float64)),
        "sum",
        ValueError,
        r"weights must have the dtype of x (float32), got float64",
        False,
    ),
    (
        "non-contiguous x",
        dict(x=np.ones((4, 10), F32)[:, ::2]),
        "sum",
        ValueError,
        r"x must be C-contiguous, got a strided view of shape (4, 5)",
        False,
    ),
    (
        "non-contiguous indices",
        dict(indices=np.array([0, 9, 3, 9, 1, 9], I64)[::2]),
        "sum",
        ValueError,
        r"indices must be C-contiguous",
        False,
    ),
    (
        "non-contiguous weights",
        dict(weights=np.ones(6, F32)[::2]),
        "max",
        ValueError,
        r"weights must be C-contiguous",
        False,
    ),
    (
        "x is a list",
        dict(x=[[1.0] * 5] * 4),
        "sum",
        ValueError,
        r"x must be a numpy array or a torch tensor, got list",
        False,
    ),
]


def _args(changes: dict) -> dict:
    args = dict(GOOD)
    args.update(changes)
    return args


@pytest.mark.parametrize(
    ("changes", "reduce", "exc", "msg"), [c[1:5] for c in CASES], ids=[c[0] for c in CASES]
)
def test_numpy_path(changes, reduce, exc, msg) -> None:
    a = _args(changes)
    with pytest.raises(exc, match=re.escape(msg)):
        aggregate(a["indptr"], a["indices"], a["x"], a["weights"], reduce)


TORCH_CASES = [c for c in CASES if c[0] not in ("uint8 x", "x is a list")]


@pytest.mark.parametrize(
    ("changes", "reduce", "exc", "msg"), [c[1:5] for c in TORCH_CASES], ids=[c[0] for c in TORCH_CASES]
)
def test_torch_path(changes, reduce, exc, msg) -> None:
    a = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in _args(changes).items()}
    with pytest.raises(exc, match=re.escape(msg)):
        aggregate(a["indptr"], a["indices"], a["x"], a["weights"], reduce)


def test_num_threads_must_be_positive() -> None:
    with pytest.raises(ValueError, match=r"num_threads must be >= 1, got 0"):
        aggregate(GOOD["indptr"], GOOD["indices"], GOOD["x"], num_threads=0)
    with pytest.raises(ValueError, match=r"num_threads must be >= 1, got -2"):
        set_num_threads(-2)


def test_backward_rejects_bad_argmax_transpose_and_grad() -> None:
    g = np.ones((2, 5), F32)
    ip, ix, x = GOOD["indptr"], GOOD["indices"], GOOD["x"]
    bad_arg = np.full((2, 5), 7, dtype=I64)
    with pytest.raises(IndexError, match=re.escape("argmax[0]=7 is not an edge id in [-1, 3)")):
        aggregate_backward(ip, ix, x, g, None, "max", argmax=bad_arg)
    with pytest.raises(ValueError, match=re.escape("argmax (from the forward pass) is required")):
        aggregate_backward(ip, ix, x, g, None, "max")
    with pytest.raises(ValueError, match=re.escape("grad_out must have shape (2, 5), got (3, 5)")):
        aggregate_backward(ip, ix, x, np.ones((3, 5), F32), None, "sum")
    tp, ti, te = csr_transpose(ip, ix, 4)
    te = te.copy()
    te[0] = 99
    with pytest.raises(IndexError, match=re.escape("transpose (t_indptr, t_indices, t_edge_ids) is invalid")):
        aggregate_backward(ip, ix, x, g, None, "sum", transpose=(tp, ti, te))
    with pytest.raises(ValueError, match=re.escape("need_grad_w=True but weights is None")):
        aggregate_backward(ip, ix, x, g, None, "sum", need_grad_w=True)


# ---- the same checks through ONNX Runtime ----


def _ort_session(reduce: str, x_rank: int, weighted: bool) -> ort.InferenceSession:
    node = helper.make_node(
        "CsrAggregate",
        ["indptr", "indices", "weights" if weighted else "", "x"],
        ["out"],
        domain="healthai",
        reduce=reduce,
    )
    inputs = [
        helper.make_tensor_value_info("indptr", TensorProto.INT64, None),
        helper.make_tensor_value_info("indices", TensorProto.INT64, None),
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [None] * x_rank),
    ]
    if weighted:
        inputs.insert(2, helper.make_tensor_value_info("weights", TensorProto.FLOAT, None))
    graph = helper.make_graph(
        [node], "g", inputs, [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)]
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("healthai", 1)]
    )
    so = ort.SessionOptions()
    so.register_custom_ops_library(str(ort_library_path()))
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


ORT_CASES = [c for c in CASES if c[5]]


@pytest.mark.skipif(not build_info()["ort_ops"], reason="ONNX Runtime op library not built (no ORT headers)")
@pytest.mark.parametrize(
    ("changes", "reduce", "msg"), [(c[1], c[2], c[4]) for c in ORT_CASES], ids=[c[0] for c in ORT_CASES]
)
def test_onnxruntime_path(changes, reduce, msg) -> None:
    a = _args(changes)
    sess = _ort_session(reduce, a["x"].ndim, weighted=True)
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument, match=re.escape(msg)):
        sess.run(None, {"indptr": a["indptr"], "indices": a["indices"], "weights": a["weights"], "x": a["x"]})


def test_onnx_checker_accepts_the_custom_node() -> None:
    import healthai.ops.onnx_export  # noqa: F401  (registers the schema)

    node = helper.make_node("CsrAggregate", ["p", "i", "", "x"], ["o"], domain="healthai", reduce="max")
    schema = onnx.defs.get_schema("CsrAggregate", 1, "healthai")
    assert node.op_type == schema.name and [a for a in schema.attributes] == ["reduce"]
