"""healthai.Softplus, the op library's vectorised softplus: accuracy against the exact function in
ONNX Runtime, the same bits on any number of threads, and the custom export variant using it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from healthai.ops import build_info, ort_library_path
from healthai.ops.onnx_export import export_onnx

pytestmark = [
    pytest.mark.skipif(
        not build_info()["ort_ops"], reason="ONNX Runtime op library not built (no ORT headers)"
    ),
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning"),  # torch.onnx internals (pytree)
]

TINY = 1.7e-38  # beyond |x| = 87 the op drops e^-|x|: the exact value there is below this


def _softplus_model(elem: int) -> bytes:
    node = helper.make_node("Softplus", ["x"], ["y"], domain="healthai")
    graph = helper.make_graph(
        [node], "softplus", [helper.make_tensor_value_info("x", elem, None)],
        [helper.make_tensor_value_info("y", elem, None)],
    )
    ops = [helper.make_opsetid("", 18), helper.make_opsetid("healthai", 1)]
    return helper.make_model(graph, opset_imports=ops).SerializeToString()


def _run(x: np.ndarray, threads: int = 1) -> np.ndarray:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.register_custom_ops_library(str(ort_library_path()))
    elem = TensorProto.FLOAT if x.dtype == np.float32 else TensorProto.DOUBLE
    sess = ort.InferenceSession(_softplus_model(elem), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def _exact(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x.astype(np.float64))


def test_float32_within_two_ulp_of_the_exact_value() -> None:
    bits = np.arange(0, 2**32, 4093, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    x = x[np.isfinite(x)]
    got = _run(x)
    exact = _exact(x)
    near = np.abs(x) < 87.0
    ulp = np.spacing(exact[near].astype(np.float32)).astype(np.float64)
    err_ulp = np.abs(got[near] - exact[near]) / ulp
    assert err_ulp.max() <= 2.0, (err_ulp.max(), x[near][err_ulp.argmax()])
    assert np.abs(got[~near] - exact[~near]).max() <= TINY
    assert (got >= 0).all()


def test_special_values_and_shapes() -> None:
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, -1e-30, 20.0, 1e30, -1e30], np.float32)
    got = _run(x)
    assert np.isnan(got[0]) and got[1] == np.inf and got[2] == 0.0
    np.testing.assert_allclose(got[3:7], np.log(2.0), rtol=1.2e-7)
    np.testing.assert_allclose(got[7:], [20.0, 1e30, 0.0], rtol=1.2e-7)
    assert _run(np.zeros((0, 3), np.float32)).shape == (0, 3)
    scalar = _run(np.array(1.5, np.float32))
    assert scalar.shape == () and abs(float(scalar) - np.logaddexp(0, 1.5)) < 2.4e-7


def test_float64_is_libm_exact() -> None:
    x = np.concatenate([np.linspace(-800, 800, 20001), [0.0, 1e-300, -1e-300, np.inf, -np.inf]])
    got = _run(x)
    np.testing.assert_allclose(got, _exact(x), rtol=4.5e-16, atol=0)


def test_same_bits_on_any_number_of_threads() -> None:
    x = np.random.default_rng(3).normal(0.0, 8.0, size=(15, 3144, 22)).astype(np.float32)  # ~1M: chunks
    one, three = _run(x, threads=1), _run(x, threads=3)
    np.testing.assert_array_equal(one, three)
    np.testing.assert_allclose(one, _exact(x), rtol=2.4e-7, atol=TINY)


class _Head(torch.nn.Module):
    """A quantile-gap head in miniature: softplus of a linear map, then a cumulative sum."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(torch.nn.functional.softplus(self.linear(x) * 8.0), dim=-1)


@pytest.mark.parametrize("variant", ["custom", "standard"])
def test_export_variants_serve_the_same_softplus(variant: str, tmp_path: Path) -> None:
    model = _Head().eval()
    x = torch.randn(64, 6, generator=torch.Generator().manual_seed(1))
    path = export_onnx(model, (x,), tmp_path / f"{variant}.onnx", variant=variant, input_names=["x"])
    proto = onnx.load(str(path))
    softplus = [(n.domain, n.op_type) for n in proto.graph.node if "Softplus" in n.op_type]
    ops = {n.op_type for n in proto.graph.node}
    assert "Where" not in ops and "Greater" not in ops  # torch's threshold guard is folded in
    if variant == "custom":
        assert softplus == [("healthai", "Softplus")]
        assert any(o.domain == "healthai" for o in proto.opset_import)
    else:
        assert softplus == [] and all(n.domain in ("", "ai.onnx") for n in proto.graph.node)
    so = ort.SessionOptions()
    if variant == "custom":
        so.register_custom_ops_library(str(ort_library_path()))
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {"x": x.numpy()})
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
