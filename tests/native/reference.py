"""Slow float64 references for the CSR aggregation and random test graphs (no healthai code)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def edge_rows(indptr: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))


def reference_forward(
    indptr: np.ndarray, indices: np.ndarray, weights: np.ndarray | None, x: np.ndarray, reduce: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """(out, argmax) in float64. sum/mean through scipy; max edge by edge, first maximum wins, NaN wins."""
    x64 = np.asarray(x, dtype=np.float64)
    n_rows = len(indptr) - 1
    w = np.ones(len(indices)) if weights is None else np.asarray(weights, dtype=np.float64)
    if reduce in ("sum", "mean"):
        a = sp.csr_matrix(
            (w, np.asarray(indices, np.int64), np.asarray(indptr, np.int64)), shape=(n_rows, x64.shape[-2])
        )
        batches = x64.reshape(int(np.prod(x64.shape[:-2])), *x64.shape[-2:])
        out = np.stack([a @ xb for xb in batches]).reshape(*x64.shape[:-2], n_rows, x64.shape[-1])
        if reduce == "mean":
            out = out / np.maximum(np.diff(indptr), 1)[:, None]
        return out, None
    out = np.zeros((*x64.shape[:-2], n_rows, x64.shape[-1]))
    arg = np.full(out.shape, -1, dtype=np.int64)
    for i in range(n_rows):
        for e in range(indptr[i], indptr[i + 1]):
            v = w[e] * x64[..., indices[e], :]
            first = arg[..., i, :] < 0
            cur = out[..., i, :]
            take = first | (v > cur) | (np.isnan(v) & ~np.isnan(cur))
            out[..., i, :] = np.where(take, v, cur)
            arg[..., i, :] = np.where(take, e, arg[..., i, :])
    return out, arg


def reference_backward(
    indptr: np.ndarray,
    indices: np.ndarray,
    weights: np.ndarray | None,
    x: np.ndarray,
    reduce: str,
    grad_out: np.ndarray,
    argmax: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """(grad_x, grad_w) in float64, edge by edge."""
    x64, g64 = np.asarray(x, np.float64), np.asarray(grad_out, np.float64)
    w = np.ones(len(indices)) if weights is None else np.asarray(weights, np.float64)
    gx, gw = np.zeros_like(x64), np.zeros(len(indices))
    rows = edge_rows(indptr)
    counts = np.diff(indptr)
    for e, (i, j) in enumerate(zip(rows, indices, strict=True)):
        if reduce == "max":
            mask = argmax[..., i, :] == e
            gx[..., j, :] += np.where(mask, w[e] * g64[..., i, :], 0.0)
            gw[e] = np.sum(np.where(mask, g64[..., i, :] * x64[..., j, :], 0.0))
            continue
        scale = 1.0 / counts[i] if reduce == "mean" else 1.0
        gx[..., j, :] += w[e] * scale * g64[..., i, :]
        gw[e] = np.sum(g64[..., i, :] * x64[..., j, :]) * scale
    return gx, gw


def random_graph(
    rng: np.random.Generator,
    n_rows: int,
    n_cols: int,
    nnz: int,
    *,
    power_law: bool = False,
    empty_rows: int = 0,
    index_dtype: type = np.int64,
) -> tuple[np.ndarray, np.ndarray]:
    """CSR (indptr, indices) with duplicates and self-loops allowed, optional power-law degrees and
    forced empty rows."""
    if power_law and n_rows > 0 and nnz > 0:
        p = 1.0 / np.arange(1, n_rows + 1) ** 1.2
        rows = rng.choice(n_rows, size=nnz, p=p / p.sum())
        q = 1.0 / np.arange(1, n_cols + 1) ** 1.2
        cols = rng.permutation(n_cols)[rng.choice(n_cols, size=nnz, p=q / q.sum())]
    else:
        rows = rng.integers(0, n_rows, size=nnz)
        cols = rng.integers(0, n_cols, size=nnz)
    if empty_rows and n_rows:
        empty = rng.choice(n_rows, size=min(empty_rows, n_rows), replace=False)
        keep = ~np.isin(rows, empty)
        rows, cols = rows[keep], cols[keep]
    if n_rows and min(n_rows, n_cols) > 0:
        loops = rng.integers(0, min(n_rows, n_cols), size=3)  # a few self-loops
        rows, cols = np.concatenate([rows, loops]), np.concatenate([cols, loops])
    order = np.argsort(rows, kind="stable")
    indptr = np.zeros(n_rows + 1, dtype=index_dtype)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    return indptr, cols[order].astype(index_dtype)
