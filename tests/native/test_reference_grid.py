"""The kernel against the float64 references over a grid of reductions x dtypes x threads x shapes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from healthai.ops import aggregate, aggregate_backward, csr_transpose

from .reference import random_graph, reference_backward, reference_forward

TOL = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}


def test_golden_case_by_hand() -> None:
    # row 0 <- nodes 1 (w=2) and 2 (w=-1); row 1 empty; row 2 <- node 0 twice (w=1, 3)
    indptr = np.array([0, 2, 2, 4], dtype=np.int64)
    indices = np.array([1, 2, 0, 0], dtype=np.int64)
    w = np.array([2.0, -1.0, 1.0, 3.0])
    x = np.array([[1.0, -1.0], [10.0, 20.0], [5.0, 50.0]])
    np.testing.assert_array_equal(aggregate(indptr, indices, x, w, "sum"), [[15, -10], [0, 0], [4, -4]])
    np.testing.assert_array_equal(aggregate(indptr, indices, x, w, "mean"), [[7.5, -5], [0, 0], [2, -2]])
    out, arg = aggregate(indptr, indices, x, w, "max")
    np.testing.assert_array_equal(out, [[20, 40], [0, 0], [3, -1]])
    np.testing.assert_array_equal(arg, [[0, 0], [-1, -1], [3, 2]])


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("batch", [None, 3])
def test_forward_matches_reference(reduce, dtype, index_dtype, threads, weighted, batch) -> None:
    rng = np.random.default_rng(7)
    n_rows, n_cols, feat = 300, 250, 70  # 70 = one 64-wide block + a tail, in float32
    indptr, indices = random_graph(
        rng, n_rows, n_cols, 3000, power_law=True, empty_rows=20, index_dtype=index_dtype
    )
    w = rng.standard_normal(len(indices)).astype(dtype) if weighted else None
    x = rng.standard_normal((*(() if batch is None else (batch,)), n_cols, feat)).astype(dtype)
    got = aggregate(indptr, indices, x, w, reduce, num_threads=threads)
    ref, ref_arg = reference_forward(indptr, indices, w, x, reduce)
    if reduce == "max":
        got, arg = got
        np.testing.assert_array_equal(arg, ref_arg)
    assert got.dtype == dtype and got.shape == ref.shape
    np.testing.assert_allclose(got, ref, **TOL[dtype])


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("threads", [1, 2])
def test_backward_matches_reference(reduce, dtype, index_dtype, threads) -> None:
    rng = np.random.default_rng(11)
    indptr, indices = random_graph(rng, 120, 90, 900, power_law=True, empty_rows=10, index_dtype=index_dtype)
    w = rng.standard_normal(len(indices)).astype(dtype)
    x = rng.standard_normal((2, 90, 33)).astype(dtype)
    g = rng.standard_normal((2, 120, 33)).astype(dtype)
    argmax = aggregate(indptr, indices, x, w, "max")[1] if reduce == "max" else None
    t = csr_transpose(indptr, indices, 90)
    gx, gw = aggregate_backward(
        indptr, indices, x, g, w, reduce, argmax=argmax, transpose=t, need_grad_w=True, num_threads=threads
    )
    rgx, rgw = reference_backward(indptr, indices, w, x, reduce, g, argmax)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(gx, rgx, **tol)
    np.testing.assert_allclose(gw, rgw, **tol)


def test_transpose_is_the_transpose() -> None:
    rng = np.random.default_rng(3)
    indptr, indices = random_graph(rng, 40, 30, 200)
    tp, ti, te = csr_transpose(indptr, indices, 30)
    assert tp[-1] == len(indices)
    for j in range(30):
        for k in range(tp[j], tp[j + 1]):
            e = te[k]
            assert indices[e] == j and indptr[ti[k]] <= e < indptr[ti[k] + 1]
    assert sorted(te.tolist()) == list(range(len(indices)))


def test_nan_propagates_like_the_reference() -> None:
    indptr = np.array([0, 2, 3], dtype=np.int64)
    indices = np.array([0, 1, 1], dtype=np.int64)
    x = np.array([[np.nan, 1.0], [2.0, np.nan]])
    for reduce in ("sum", "mean", "max"):
        got = aggregate(indptr, indices, x, None, reduce)
        got = got[0] if reduce == "max" else got
        ref, _ = reference_forward(indptr, indices, None, x, reduce)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        np.testing.assert_allclose(got[~np.isnan(got)], ref[~np.isnan(ref)])


@settings(max_examples=40, deadline=None)
@given(
    n_rows=st.integers(0, 40),
    n_cols=st.integers(1, 40),
    nnz=st.integers(0, 200),
    feat=st.integers(0, 20),
    reduce=st.sampled_from(["sum", "mean", "max"]),
    seed=st.integers(0, 2**32 - 1),
    power_law=st.booleans(),
    threads=st.sampled_from([1, 2]),
)
def test_random_graphs_hypothesis(n_rows, n_cols, nnz, feat, reduce, seed, power_law, threads) -> None:
    rng = np.random.default_rng(seed)
    indptr, indices = random_graph(
        rng, n_rows, n_cols, nnz if n_rows else 0, power_law=power_law, empty_rows=n_rows // 4
    )
    w = rng.standard_normal(len(indices))
    x = rng.standard_normal((n_cols, feat))
    got = aggregate(indptr, indices, x, w, reduce, num_threads=threads)
    ref, ref_arg = reference_forward(indptr, indices, w, x, reduce)
    if reduce == "max":
        np.testing.assert_array_equal(got[1], ref_arg)
        got = got[0]
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
@pytest.mark.parametrize("weighted", [False, True])
def test_csr_graph_caches_its_transpose(reduce, weighted) -> None:
    from healthai.ops import CsrGraph

    rng = np.random.default_rng(5)
    indptr, indices = random_graph(rng, 50, 40, 300, empty_rows=5)
    w = rng.standard_normal(len(indices)) if weighted else None
    graph = CsrGraph(indptr, indices, 40, w)
    assert graph.n_rows == 50 and graph.transpose is graph.transpose  # built once
    x, g = rng.standard_normal((2, 40, 6)), rng.standard_normal((2, 50, 6))
    res = graph.forward(x, reduce)
    out, argmax = res if reduce == "max" else (res, None)
    gx, gw = graph.backward(x, g, reduce, argmax=argmax, need_grad_w=weighted)
    rgx, rgw = reference_backward(indptr, indices, w, x, reduce, g, argmax)
    np.testing.assert_allclose(
        out, reference_forward(indptr, indices, w, x, reduce)[0], rtol=1e-12, atol=1e-12
    )
    np.testing.assert_allclose(gx, rgx, rtol=1e-12, atol=1e-12)
    if weighted:
        np.testing.assert_allclose(gw, rgw, rtol=1e-12, atol=1e-12)
    else:
        assert gw is None
