"""The ONNX Runtime op checks a graph stored in the model (constant initializers) once, when the
session is created, and afterwards only against x.shape[-2]; a graph fed as a runtime input is checked
in full on every call. Results through ORT's thread pool match the reference either way."""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from healthai.ops import build_info, ort_library_path

from .reference import random_graph, reference_forward

pytestmark = pytest.mark.skipif(
    not build_info()["ort_ops"], reason="ONNX Runtime op library not built (no ORT headers)"
)

InvalidArgument = ort.capi.onnxruntime_pybind11_state.InvalidArgument
RuntimeException = ort.capi.onnxruntime_pybind11_state.RuntimeException


def _model(indptr: np.ndarray, indices: np.ndarray, constant: bool, reduce: str = "sum") -> onnx.ModelProto:
    node = helper.make_node(
        "CsrAggregate", ["indptr", "indices", "", "x"], ["out"], domain="healthai", reduce=reduce
    )
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)]
    initializers = []
    if constant:
        initializers = [
            numpy_helper.from_array(indptr, "indptr"),
            numpy_helper.from_array(indices, "indices"),
        ]
    else:
        inputs[:0] = [
            helper.make_tensor_value_info("indptr", TensorProto.INT64, None),
            helper.make_tensor_value_info("indices", TensorProto.INT64, None),
        ]
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, None)
    graph = helper.make_graph([node], "g", inputs, [out], initializers)
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("healthai", 1)]
    )


def _session(model: onnx.ModelProto, threads: int = 1) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.register_custom_ops_library(str(ort_library_path()))
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(
    ("indptr", "indices", "msg"),
    [
        ([0, 3, 2], [0, 1, 1], "indptr must be non-decreasing: indptr[1]=3 > indptr[2]=2"),
        ([1, 2, 3], [0, 1, 1], "indptr[0] must be 0, got 1"),
        ([0, 2, 2], [0, 1, 1], "indptr[-1]=2 must equal len(indices)=3"),
        ([0, 2, 3], [0, -1, 1], "indices[1]=-1 is negative (node ids are >= 0)"),
    ],
)
def test_bad_constant_graph_fails_the_session(indptr, indices, msg) -> None:
    model = _model(np.array(indptr, np.int64), np.array(indices, np.int64), constant=True)
    with pytest.raises(RuntimeException, match=re.escape(f"CsrAggregate: {msg}")):
        _session(model)


def test_constant_graph_is_checked_against_each_x() -> None:
    indptr, indices = np.array([0, 2, 3], np.int64), np.array([0, 4, 1], np.int64)
    sess = _session(_model(indptr, indices, constant=True))
    small, big = np.ones((4, 2), np.float32), np.ones((5, 2), np.float32)
    msg = "CsrAggregate: indices[1]=4 is out of range for 4 nodes (x.shape[-2])"
    with pytest.raises(InvalidArgument, match=re.escape(msg)):
        sess.run(None, {"x": small})
    np.testing.assert_array_equal(sess.run(None, {"x": big})[0], [[2, 2], [1, 1]])
    with pytest.raises(InvalidArgument, match=re.escape(msg)):  # a good call does not vouch for fewer nodes
        sess.run(None, {"x": small})


def test_runtime_graph_is_checked_on_every_call() -> None:
    indptr, indices = np.array([0, 2, 3], np.int64), np.array([0, 3, 1], np.int64)
    sess = _session(_model(indptr, indices, constant=False))
    x = np.ones((4, 2), np.float32)
    feeds = {"indptr": indptr, "indices": indices, "x": x}
    np.testing.assert_array_equal(sess.run(None, feeds)[0], [[2, 2], [1, 1]])
    indices[1] = 9  # same buffer, same shape, new content
    with pytest.raises(InvalidArgument, match=re.escape("indices[1]=9 is out of range for 4 nodes")):
        sess.run(None, feeds)
    indices[1] = 3
    indptr[1] = 4
    with pytest.raises(
        InvalidArgument, match=re.escape("indptr must be non-decreasing: indptr[1]=4 > indptr[2]=3")
    ):
        sess.run(None, feeds)


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
@pytest.mark.parametrize("constant", [True, False])
def test_results_on_ort_threads_match_reference(reduce, constant) -> None:
    rng = np.random.default_rng(5)
    indptr, indices = random_graph(rng, 2000, 1500, 20000, power_law=True, empty_rows=40)
    sess = _session(_model(indptr, indices, constant, reduce), threads=3)
    for shape in ((1500, 24), (3, 1500, 24), (2, 1500, 1)):
        x = rng.standard_normal(shape).astype(np.float32)
        feeds = {"x": x} if constant else {"indptr": indptr, "indices": indices, "x": x}
        (out,) = sess.run(None, feeds)
        ref, _ = reference_forward(indptr, indices, None, x, reduce)
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(ref).max()))
