"""Registering the custom-op library costs no memory per registration (one domain per library, shared
by every session), so re-creating sessions on a hot reload does not grow the process; sessions that
share the domain work side by side and after one of them is gone."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import statistics

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from healthai.ops import build_info, ort_library_path

pytestmark = pytest.mark.skipif(
    not build_info()["ort_ops"], reason="ONNX Runtime op library not built (no ORT headers)"
)


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _malloc_in_use() -> int | None:
    """Bytes the C heap has handed out (glibc mallinfo2), or None where that is not available."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if not hasattr(libc, "mallinfo2"):
        return None
    libc.mallinfo2.restype = _MallInfo2
    gc.collect()
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd


def _register(times: int) -> None:
    for _ in range(times):
        so = ort.SessionOptions()
        so.register_custom_ops_library(str(ort_library_path()))
        del so


@pytest.mark.skipif(_malloc_in_use() is None, reason="needs glibc's mallinfo2 to measure the C heap")
def test_registration_does_not_grow_the_heap() -> None:
    _register(200)  # warm up ORT's and Python's own one-time allocations
    rounds = []
    for _ in range(5):
        before = _malloc_in_use()
        _register(1000)
        rounds.append(_malloc_in_use() - before)
    # a domain per registration (the old behaviour) kept ~100 bytes each: ~100 kB in every round; the
    # median ignores a one-time allocation elsewhere in the process landing in one of the rounds
    assert statistics.median(rounds) < 1000 * 16, f"C heap growth per 1000 registrations: {rounds}"


def _session() -> ort.InferenceSession:
    node = helper.make_node("CsrAggregate", ["indptr", "indices", "", "x"], ["out"], domain="healthai")
    inputs = [
        helper.make_tensor_value_info("indptr", TensorProto.INT64, None),
        helper.make_tensor_value_info("indices", TensorProto.INT64, None),
        helper.make_tensor_value_info("x", TensorProto.FLOAT, None),
    ]
    graph = helper.make_graph(
        [node], "g", inputs, [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)]
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("healthai", 1)]
    )
    so = ort.SessionOptions()
    so.register_custom_ops_library(str(ort_library_path()))
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def test_sessions_share_the_domain() -> None:
    feeds = {
        "indptr": np.array([0, 2, 3], np.int64),
        "indices": np.array([0, 1, 1], np.int64),
        "x": np.arange(6, dtype=np.float32).reshape(2, 3),
    }
    sessions = [_session() for _ in range(3)]
    del sessions[0]
    gc.collect()
    sessions.append(_session())
    for sess in sessions:
        np.testing.assert_array_equal(sess.run(None, feeds)[0], [[3, 5, 7], [3, 4, 5]])
