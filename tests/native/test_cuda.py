"""CUDA path: the same results as the CPU kernel (needs a GPU; skipped with the reason otherwise)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from healthai.ops import GraphAggregation, build_info, csr_aggregate, ort_library_path

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
