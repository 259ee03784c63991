"""torch custom op and GraphAggregation: gradcheck for each reduction, module behaviour, normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from healthai.ops import GraphAggregation, aggregate, csr_aggregate, symmetric_normalized_weights

from .reference import random_graph, reference_forward


def _graph(seed: int = 0, n: int = 25, nnz: int = 90, index_dtype: type = np.int64):
    indptr, indices = random_graph(
        np.random.default_rng(seed), n, n, nnz, empty_rows=3, index_dtype=index_dtype
    )
    return torch.from_numpy(indptr), torch.from_numpy(indices)


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("with_transpose", [False, True])
def test_gradcheck_x_and_weights(reduce, batched, with_transpose) -> None:
    indptr, indices = _graph()
    m = GraphAggregation(
        indptr,
        indices,
        torch.rand(len(indices), dtype=torch.float64) + 0.5,
        reduce=reduce,
        learn_weights=True,
        dtype=torch.float64,
    )
    t = (m.t_indptr, m.t_indices, m.t_edge_ids) if with_transpose else None
    x = torch.randn(*((2,) if batched else ()), 25, 6, dtype=torch.float64, requires_grad=True)

    def fn(x, w):
        return csr_aggregate(indptr, indices, w, x, reduce, t)[0]

    assert torch.autograd.gradcheck(fn, (x, m.weights))


@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
def test_gradcheck_unweighted_int32(index_dtype) -> None:
    indptr, indices = _graph(index_dtype=index_dtype)
    x = torch.randn(25, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: aggregate(indptr, indices, x, None, "mean"), (x,))


def test_module_matches_scipy_and_trains() -> None:
    a = sp.random(30, 30, density=0.15, format="csr", random_state=1)
    m = GraphAggregation.from_adjacency(a, reduce="sum")
    x = torch.randn(4, 30, 8)
    ref = np.stack([a @ xb.numpy().astype(np.float64) for xb in x])
    torch.testing.assert_close(m(x), torch.from_numpy(ref).float(), rtol=1e-5, atol=1e-5)
    lin = torch.nn.Linear(8, 1)
    opt = torch.optim.SGD(lin.parameters(), lr=0.01)
    loss = lin(m(x)).pow(2).mean()
    loss.backward()
    opt.step()
    assert lin.weight.grad is not None and torch.isfinite(lin.weight.grad).all()


def test_from_dense_equals_from_scipy() -> None:
    a = sp.random(12, 9, density=0.3, format="csr", random_state=2)
    m1 = GraphAggregation.from_adjacency(a, reduce="max")
    m2 = GraphAggregation.from_adjacency(torch.from_numpy(a.toarray()), reduce="max")
    x = torch.randn(9, 3)
    torch.testing.assert_close(m1(x), m2(x))
    assert m1.num_nodes == 9 and "reduce='max'" in repr(m1)


def test_symmetric_normalisation() -> None:
    a = sp.random(20, 20, density=0.2, format="csr", random_state=3)
    a = (a + a.T).tocsr()
    m = GraphAggregation.from_adjacency(a, normalize=True, dtype=torch.float64)
    d = np.asarray(a.sum(axis=1)).ravel()
    inv = np.where(d > 0, 1 / np.sqrt(np.where(d > 0, d, 1)), 0)
    ref = sp.diags(inv) @ a @ sp.diags(inv)
    x = np.random.default_rng(0).standard_normal((20, 5))
    np.testing.assert_allclose(m(torch.from_numpy(x)).numpy(), ref @ x, rtol=1e-12, atol=1e-12)
    w = symmetric_normalized_weights(m.indptr, m.indices, None, 20)
    assert w.shape == m.indices.shape


def test_module_state_dict_round_trip_and_bad_graph() -> None:
    indptr, indices = _graph()
    m = GraphAggregation(indptr, indices, reduce="mean")
    m2 = GraphAggregation(indptr, indices, reduce="mean")
    m2.load_state_dict(m.state_dict())
    with pytest.raises(IndexError, match=r"indices\[\d+\]=99 is out of range for 25 nodes"):
        GraphAggregation(indptr, torch.where(indices == indices[5], 99, indices))
    with pytest.raises(ValueError, match="reduce must be one of 'sum', 'mean', 'max', got 'avg'"):
        GraphAggregation(indptr, indices, reduce="avg")  # type: ignore[arg-type]


def test_torch_forward_is_the_numpy_forward() -> None:
    indptr, indices = _graph(seed=5)
    x = torch.randn(25, 16)
    for reduce in ("sum", "mean", "max"):
        ref, arg = reference_forward(indptr.numpy(), indices.numpy(), None, x.numpy(), reduce)
        out, argmax = csr_aggregate(indptr, indices, None, x, reduce)
        np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-5)
        if reduce == "max":
            np.testing.assert_array_equal(argmax.numpy(), arg)


def test_fake_impl_supports_export() -> None:
    indptr, indices = _graph()
    m = GraphAggregation(indptr, indices, reduce="max")
    ep = torch.export.export(m, (torch.randn(3, 25, 4),))
    assert any("csr_aggregate" in str(n.target) for n in ep.graph.nodes)
