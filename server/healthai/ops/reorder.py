"""A locality-improving node order for gathers over a static graph.

Sorting the source nodes by descending in-degree puts the most gathered rows of ``x`` next to each
other, so they share cache lines, pages and TLB entries. Relabel the graph once
(``relabel_sources``); per call, move ``x`` into the new order with the multi-threaded
``permute_rows`` (the output rows keep their order, so nothing is permuted back).
"""

from __future__ import annotations

import numpy as np

from healthai import _native

__all__ = ["locality_order", "permute_rows", "relabel_sources"]


def locality_order(indices: np.ndarray, n_cols: int) -> np.ndarray:
    """``perm[old] = new`` ranking source nodes by descending in-degree (ties keep their order)."""
    degree = np.bincount(np.asarray(indices, dtype=np.int64), minlength=n_cols)
    new_to_old = np.argsort(-degree, kind="stable")
    perm = np.empty(n_cols, dtype=np.int64)
    perm[new_to_old] = np.arange(n_cols, dtype=np.int64)
    return perm


def relabel_sources(indices: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """The graph's column ids in the new order (same dtype as ``indices``)."""
    return perm[indices].astype(indices.dtype, copy=False)


def permute_rows(
    x: np.ndarray, perm: np.ndarray, *, out: np.ndarray | None = None, num_threads: int | None = None
) -> np.ndarray:
    """``out[..., perm[i], :] = x[..., i, :]`` on ``num_threads`` threads (perm is checked)."""
    return _native.permute_rows(x, perm, num_threads or 0, out)
