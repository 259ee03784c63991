"""argmax from the forward pass is checked before the backward uses it as an edge id to write
grad_weights: every entry must be -1 or an edge of its own row (one shared check for CPU and CUDA;
the CUDA half is in test_cuda.py)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from healthai.ops import aggregate, aggregate_backward

# row 0 <- edges 0, 1; row 1 empty; row 2 <- edges 2, 3
INDPTR = np.array([0, 2, 2, 4], dtype=np.int64)
INDICES = np.array([1, 2, 0, 0], dtype=np.int64)
X = np.arange(8, dtype=np.float64).reshape(4, 2)
W = np.array([1.0, 2.0, 3.0, 4.0])
G = np.ones((3, 2))


def _backward(argmax: np.ndarray, threads: int = 1) -> tuple:
    return aggregate_backward(
        INDPTR, INDICES, X, G, W, "max", argmax=argmax, need_grad_w=True, num_threads=threads
    )


def test_forward_argmax_passes() -> None:
    _, arg = aggregate(INDPTR, INDICES, X, W, "max")
    _, gw = _backward(arg)
    assert gw.shape == (4,)


@pytest.mark.parametrize("threads", [1, 2])
def test_edge_of_another_row_is_rejected(threads) -> None:
    # edge 2 is a valid edge id but belongs to row 2: the old check (only -1 <= a < nnz) let it
    # through, and the backward added row 0's gradient to it (racing with the thread of row 2)
    _, arg = aggregate(INDPTR, INDICES, X, W, "max")
    arg = arg.copy()
    arg[0, 1] = 2
    msg = "argmax[1]=2 is not an edge of its row 0: expected -1 or an edge id in [0, 2)"
    with pytest.raises(IndexError, match=re.escape(msg)):
        _backward(arg, threads)


def test_edge_in_an_empty_row_is_rejected() -> None:
    arg = np.array([[0, 1], [0, -1], [2, 3]], dtype=np.int64)
    msg = "argmax[2]=0 is not an edge of its row 1: expected -1 or an edge id in [2, 2)"
    with pytest.raises(IndexError, match=re.escape(msg)):
        _backward(arg)


@pytest.mark.parametrize(("value", "at"), [(4, 5), (-2, 5), (np.iinfo(np.int64).min, 5)])
def test_value_outside_the_edge_ids_is_rejected(value, at) -> None:
    arg = np.array([[0, 1], [-1, -1], [2, value]], dtype=np.int64)
    msg = f"argmax[{at}]={value} is not an edge id in [-1, 4)"
    with pytest.raises(IndexError, match=re.escape(msg)):
        _backward(arg)


def test_first_bad_entry_is_named_on_any_thread_count() -> None:
    rng = np.random.default_rng(3)
    n_rows, feat, batch = 4000, 5, 2
    indptr = np.concatenate([[0], np.cumsum(rng.integers(1, 4, n_rows))]).astype(np.int64)
    indices = rng.integers(0, 100, indptr[-1]).astype(np.int64)
    x = rng.standard_normal((batch, 100, feat))
    _, arg = aggregate(indptr, indices, x, None, "max")
    arg = arg.copy()
    arg[1, 3000, 4] = indptr[10]  # later bad entries must not hide the first one
    arg[0, 2500, 1] = indptr[2600]
    first = 2500 * feat + 1
    for threads in (1, 2):
        with pytest.raises(
            IndexError, match=re.escape(f"argmax[{first}]={indptr[2600]} is not an edge of its row 2500")
        ):
            aggregate_backward(
                indptr,
                indices,
                x,
                np.ones((batch, n_rows, feat)),
                None,
                "max",
                argmax=arg,
                num_threads=threads,
            )


def test_torch_path_checks_argmax() -> None:
    arg = torch.tensor([[0, 2], [-1, -1], [2, 3]])
    with pytest.raises(IndexError, match=re.escape("argmax[1]=2 is not an edge of its row 0")):
        aggregate_backward(
            torch.from_numpy(INDPTR),
            torch.from_numpy(INDICES),
            torch.from_numpy(X),
            torch.from_numpy(G),
            torch.from_numpy(W),
            "max",
            argmax=arg,
            need_grad_w=True,
        )
