"""CUDA path: the same results as the CPU kernel (needs a GPU; skipped with the reason otherwise)."""

from __future__ import annotations

import re

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto

from healthai.ops import (
    GraphAggregation,
    aggregate,
    aggregate_backward,
    build_info,
    csr_aggregate,
    csr_transpose,
    ort_library_path,
)

from .reference import random_graph

cuda_available = torch.cuda.is_available() and build_info()["cuda"]
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        not cuda_available, reason="needs a CUDA GPU, a CUDA torch and a CUDA build of healthai"
    ),
]


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
def test_cuda_forward_backward_match_cpu(reduce, dtype, index_dtype) -> None:
    indptr, indices = random_graph(
        np.random.default_rng(0), 500, 400, 5000, power_law=True, empty_rows=20, index_dtype=index_dtype
    )
    m = GraphAggregation(
        indptr,
        indices,
        np.random.default_rng(1).random(len(indices)),
        reduce=reduce,
        learn_weights=True,
        dtype=dtype,
    )
    x = torch.randn(3, 400, 37, dtype=dtype, requires_grad=True)
    out = m(x)
    out.backward(torch.ones_like(out))
    mc = GraphAggregation(
        indptr, indices, m.weights.detach().numpy(), reduce=reduce, learn_weights=True, dtype=dtype
    ).cuda()
    xc = x.detach().cuda().requires_grad_()
    outc = mc(xc)
    outc.backward(torch.ones_like(outc))
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(outc.cpu(), out, **tol)
    torch.testing.assert_close(xc.grad.cpu(), x.grad, **tol)
    torch.testing.assert_close(mc.weights.grad.cpu(), m.weights.grad, **tol)


def test_cuda_bad_index_raises() -> None:
    indptr = torch.tensor([0, 2], device="cuda")
    indices = torch.tensor([0, 9], device="cuda")
    with pytest.raises(IndexError, match=r"indices\[1\]=9 is out of range for 3 nodes"):
        csr_aggregate(indptr, indices, None, torch.ones(3, 2, device="cuda"), "sum")


def test_cuda_backward_checks_argmax() -> None:
    # the same check as on the CPU (test_argmax_checks.py), before any kernel writes grad_weights
    indptr = torch.tensor([0, 2, 2, 4], device="cuda")
    indices = torch.tensor([1, 2, 0, 0], device="cuda")
    x = torch.ones(4, 2, dtype=torch.float64, device="cuda")
    w = torch.ones(4, dtype=torch.float64, device="cuda")
    g = torch.ones(3, 2, dtype=torch.float64, device="cuda")
    arg = torch.tensor([[0, 2], [-1, -1], [2, 3]], device="cuda")
    with pytest.raises(IndexError, match=re.escape("argmax[1]=2 is not an edge of its row 0: expected -1")):
        aggregate_backward(indptr, indices, x, g, w, "max", argmax=arg, need_grad_w=True)
    arg[0, 1] = 1 << 40  # would write far outside grad_weights
    with pytest.raises(IndexError, match=re.escape(f"argmax[1]={1 << 40} is not an edge id in [-1, 4)")):
        aggregate_backward(indptr, indices, x, g, w, "max", argmax=arg, need_grad_w=True)


def _late_write_on(stream: torch.cuda.Stream, t: torch.Tensor, index: tuple, value: int) -> None:
    """Enqueues t[index] = value on `stream` behind ~0.1 s of GPU work: only work ordered on `stream`
    sees the new value; a read on another (non-blocking) stream sees the old one."""
    with torch.cuda.stream(stream):
        torch.cuda._sleep(200_000_000)
        t[index] = value


def test_checks_run_on_the_callers_stream() -> None:
    side = torch.cuda.Stream()  # non-blocking: not ordered with the default stream
    indptr = torch.tensor([0, 2], device="cuda")
    x = torch.ones(3, 2, dtype=torch.float64, device="cuda")
    g = torch.ones(1, 2, dtype=torch.float64, device="cuda")
    msg = re.escape("indices[1]=9 is out of range for 3 nodes")
    # csr_transpose: a check on the default stream would pass the old value, and the transpose, on
    # the caller's stream, would then be built from indices[1] = 9
    indices = torch.tensor([0, 1], device="cuda")
    torch.cuda.synchronize()
    _late_write_on(side, indices, (1,), 9)
    with torch.cuda.stream(side), pytest.raises(IndexError, match=msg):
        csr_transpose(indptr, indices, 3)
    torch.cuda.synchronize()
    # aggregate_backward: graph, transpose and argmax checks
    indices = torch.tensor([0, 1], device="cuda")
    t = csr_transpose(indptr, indices, 3)
    _, arg = aggregate(indptr, indices, x, None, "max")
    torch.cuda.synchronize()
    _late_write_on(side, indices, (1,), 9)
    with torch.cuda.stream(side), pytest.raises(IndexError, match=msg):
        aggregate_backward(indptr, indices, x, g, None, "sum", transpose=t)
    torch.cuda.synchronize()
    indices[1] = 1
    torch.cuda.synchronize()
    _late_write_on(side, arg, (0, 0), 5)
    with torch.cuda.stream(side), pytest.raises(IndexError, match=re.escape("argmax[0]=5 is not an edge id")):
        aggregate_backward(indptr, indices, x, g, None, "max", argmax=arg, transpose=t)
    torch.cuda.synchronize()


def test_cuda_gradcheck() -> None:
    indptr, indices = random_graph(np.random.default_rng(2), 20, 20, 80)
    ip, ix = torch.from_numpy(indptr).cuda(), torch.from_numpy(indices).cuda()
    x = torch.randn(20, 3, dtype=torch.float64, device="cuda", requires_grad=True)
    for reduce in ("sum", "mean", "max"):
        assert torch.autograd.gradcheck(lambda x, r=reduce: csr_aggregate(ip, ix, None, x, r)[0], (x,))


@pytest.mark.skipif(
    "CUDAExecutionProvider" not in ort.get_available_providers(),
    reason="onnxruntime has no CUDA execution provider here",
)
def test_ort_cuda_execution_provider() -> None:
    from .reference import reference_forward
    from .test_onnx import _custom_model

    indptr, indices = random_graph(np.random.default_rng(3), 50, 50, 300)
    x = np.random.default_rng(4).standard_normal((50, 8)).astype(np.float32)
    so = ort.SessionOptions()
    so.register_custom_ops_library(str(ort_library_path()))
    sess = ort.InferenceSession(
        _custom_model("mean", 1, False).SerializeToString(), so, providers=["CUDAExecutionProvider"]
    )
    (out,) = sess.run(None, {"indptr": indptr, "indices": indices, "x": x})
    np.testing.assert_allclose(
        out, reference_forward(indptr, indices, None, x, "mean")[0], rtol=1e-5, atol=1e-5
    )


@pytest.mark.skipif(
    "CUDAExecutionProvider" not in ort.get_available_providers(),
    reason="onnxruntime has no CUDA execution provider here",
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ort_cuda_softplus(dtype) -> None:
    from .test_onnx_softplus import _softplus_model

    x = np.concatenate([np.random.default_rng(5).normal(0.0, 20.0, 300_000), [np.nan, np.inf, -np.inf, 0.0]])
    x = x.astype(dtype)
    so = ort.SessionOptions()
    so.register_custom_ops_library(str(ort_library_path()))
    so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")  # fails unless the op is on the GPU
    elem = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    sess = ort.InferenceSession(_softplus_model(elem), so, providers=["CUDAExecutionProvider"])
    (got,) = sess.run(None, {"x": x})
    exact = np.logaddexp(0.0, x.astype(np.float64))
    assert np.isnan(got[-4]) and got[-3] == np.inf and got[-2] == 0.0
    np.testing.assert_allclose(got[:-4], exact[:-4], rtol=4e-7 if dtype == np.float32 else 1e-15, atol=1e-37)


@pytest.mark.skipif(
    not build_info()["ort_ops"] or "CUDAExecutionProvider" not in ort.get_available_providers(),
    reason="needs the ORT op library and onnxruntime-gpu's CUDA execution provider",
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ort_cuda_quantile_head(dtype) -> None:
    from .test_onnx_quantile_head import head_model, random_inputs, reference

    inputs = random_inputs(2, 3144, 15, 23, dtype)
    inputs["raw"][0, 0, 0, 20] = np.nan
    so = ort.SessionOptions()
    so.register_custom_ops_library(str(ort_library_path()))
    so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")  # fails unless the op is on the GPU
    elem = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    sess = ort.InferenceSession(head_model(elem, 11), so, providers=["CUDAExecutionProvider"])
    (got,) = sess.run(None, inputs)
    want = reference(inputs, 11)
    assert np.isnan(got[0, 0, 0, 20:]).all()
    ok = ~np.isnan(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=2e-6 if dtype == np.float32 else 1e-13,
                               atol=1e-3 if dtype == np.float32 else 1e-10)
