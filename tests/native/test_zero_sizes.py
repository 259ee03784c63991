"""Empty inputs: 0 rows, empty rows, no edges, F = 0, batch 0 give correctly shaped results."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from healthai.ops import aggregate, aggregate_backward

I64 = np.int64


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_zero_rows(reduce) -> None:
    out = aggregate(np.zeros(1, I64), np.zeros(0, I64), np.ones((3, 4), np.float32), None, reduce)
    out = out[0] if reduce == "max" else out
    assert out.shape == (0, 4) and out.dtype == np.float32


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_all_rows_empty_give_zeros(reduce) -> None:
    res = aggregate(np.zeros(4, I64), np.zeros(0, I64), np.ones((2, 5)), None, reduce)
    out = res[0] if reduce == "max" else res
    np.testing.assert_array_equal(out, np.zeros((3, 5)))
    if reduce == "max":
        np.testing.assert_array_equal(res[1], np.full((3, 5), -1))


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_zero_features(reduce) -> None:
    indptr, indices = np.array([0, 1, 2], I64), np.array([1, 0], I64)
    res = aggregate(indptr, indices, np.ones((2, 0), np.float32), np.ones(2, np.float32), reduce)
    out = res[0] if reduce == "max" else res
    assert out.shape == (2, 0)
    argmax = res[1] if reduce == "max" else None
    gx, gw = aggregate_backward(
        indptr,
        indices,
        np.ones((2, 0), np.float32),
        np.ones((2, 0), np.float32),
        np.ones(2, np.float32),
        reduce,
        argmax=argmax,
        need_grad_w=True,
    )
    assert gx.shape == (2, 0)
    np.testing.assert_array_equal(gw, [0, 0])


def test_zero_batch_and_zero_nodes() -> None:
    out = aggregate(np.array([0, 0], I64), np.zeros(0, I64), np.ones((0, 3, 2)), None, "sum")
    assert out.shape == (0, 1, 2)
    out = aggregate(np.array([0, 0], I64), np.zeros(0, I64), np.ones((0, 2)), None, "mean")
    np.testing.assert_array_equal(out, np.zeros((1, 2)))


def test_torch_empty_graph_backward() -> None:
    x = torch.ones(3, 2, requires_grad=True)
    out = aggregate(torch.zeros(3, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), x, None, "sum")
    out.sum().backward()
    assert out.shape == (2, 2)
    torch.testing.assert_close(x.grad, torch.zeros(3, 2))
