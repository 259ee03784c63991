"""``GraphAggregation``: an ``nn.Module`` aggregating node features over a fixed CSR graph."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from healthai.ops.aggregate import REDUCTIONS, Reduce
from healthai.ops.torch_ops import csr_aggregate, torch_csr_transpose

__all__ = ["GraphAggregation", "symmetric_normalized_weights"]


def symmetric_normalized_weights(
    indptr: Tensor, indices: Tensor, weights: Tensor | None, n_cols: int
) -> Tensor:
    """Weights of ``D_r^-1/2 A D_c^-1/2`` (row and column weighted degrees; 0 where a degree is 0).

    For a symmetric adjacency this is the GCN normalisation ``D^-1/2 A D^-1/2``.
    """
    nnz = indices.shape[0]
    w = weights if weights is not None else torch.ones(nnz, dtype=torch.float32, device=indices.device)
    rows = torch.repeat_interleave(torch.arange(indptr.shape[0] - 1, device=indices.device), indptr.diff())
    deg_r = torch.zeros(indptr.shape[0] - 1, dtype=w.dtype, device=w.device).index_add_(0, rows, w)
    deg_c = torch.zeros(n_cols, dtype=w.dtype, device=w.device).index_add_(0, indices.long(), w)
    inv_r = torch.where(deg_r > 0, deg_r.rsqrt(), torch.zeros_like(deg_r))
    inv_c = torch.where(deg_c > 0, deg_c.rsqrt(), torch.zeros_like(deg_c))
    return inv_r[rows] * w * inv_c[indices.long()]


class GraphAggregation(nn.Module):
    """``out[..., i, :] = reduce_{e in row i} w[e] * x[..., indices[e], :]`` over a static CSR graph.

    The graph (``indptr``, ``indices``, ``weights``) and its transpose (for the backward pass, built
    once here) are buffers, so ``.to(device)`` and ``state_dict`` carry them. ``forward(x)`` takes
    ``x`` of shape ``[N, F]`` or ``[B, N, F]`` (N = ``num_nodes``) and returns ``[n_rows, F]`` or
    ``[B, n_rows, F]``. Gradients flow to ``x`` (and to the weights when ``learn_weights=True``).

    Args:
        indptr, indices: CSR structure (int32 or int64 tensors or arrays).
        weights: optional float edge weights ``[nnz]`` (default all ones).
        num_nodes: number of source nodes (``x.shape[-2]``); default ``n_rows`` (square graph).
        reduce: ``"sum"``, ``"mean"`` or ``"max"``.
        normalize: use ``D^-1/2 A D^-1/2`` weights (see ``symmetric_normalized_weights``).
        learn_weights: make the edge weights a trainable ``nn.Parameter``.
    """

    def __init__(
        self,
        indptr: Any,
        indices: Any,
        weights: Any = None,
        *,
        num_nodes: int | None = None,
        reduce: Reduce = "sum",
        normalize: bool = False,
        learn_weights: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if reduce not in REDUCTIONS:
            raise ValueError(f"reduce must be one of 'sum', 'mean', 'max', got '{reduce}'")
        indptr_t = torch.as_tensor(indptr)
        indices_t = torch.as_tensor(indices)
        if indptr_t.dtype not in (torch.int32, torch.int64) or indices_t.dtype != indptr_t.dtype:
            raise ValueError(
                "indptr and indices must both be int32 or both int64, "
                f"got {indptr_t.dtype} and {indices_t.dtype}"
            )
        self.reduce = reduce
        self.num_nodes = int(num_nodes) if num_nodes is not None else int(indptr_t.shape[0]) - 1
        w = torch.as_tensor(weights, dtype=dtype) if weights is not None else None
        if normalize:
            w = symmetric_normalized_weights(indptr_t, indices_t, w, self.num_nodes).to(dtype)
        if learn_weights and w is None:
            w = torch.ones(indices_t.shape[0], dtype=dtype)
        self.register_buffer("indptr", indptr_t.contiguous())
        self.register_buffer("indices", indices_t.contiguous())
        if learn_weights:
            self.weights = nn.Parameter(w.contiguous())
        else:
            self.register_buffer("weights", w.contiguous() if w is not None else None)
        # checks the graph (raises ValueError/IndexError) and builds the transpose for the backward pass
        t = torch_csr_transpose(self.indptr, self.indices, self.num_nodes)
        self.register_buffer("t_indptr", t.indptr)
        self.register_buffer("t_indices", t.indices)
        self.register_buffer("t_edge_ids", t.edge_ids)

    @classmethod
    def from_adjacency(cls, adjacency: Any, **kwargs: Any) -> GraphAggregation:
        """From a dense matrix (NumPy array / torch tensor, nonzeros are edges with their value as
        weight) or a scipy.sparse matrix. Row i aggregates over the columns j with ``A[i, j] != 0``."""
        if hasattr(adjacency, "tocsr"):
            csr = adjacency.tocsr()
            csr.sum_duplicates()
            indptr, indices, data = csr.indptr, csr.indices, csr.data
            shape = csr.shape
        else:
            is_tensor = isinstance(adjacency, Tensor)
            dense = adjacency.detach().cpu().numpy() if is_tensor else np.asarray(adjacency)
            if dense.ndim != 2:
                raise ValueError(f"adjacency must be a 2-D matrix, got shape {dense.shape}")
            rows, cols = np.nonzero(dense)
            indptr = np.zeros(dense.shape[0] + 1, dtype=np.int64)
            np.cumsum(np.bincount(rows, minlength=dense.shape[0]), out=indptr[1:])
            indices, data, shape = cols, dense[rows, cols], dense.shape
        kwargs.setdefault("num_nodes", shape[1])
        return cls(
            np.asarray(indptr, dtype=np.int64),
            np.asarray(indices, dtype=np.int64),
            np.asarray(data, dtype=np.float64),
            **kwargs,
        )

    def forward(self, x: Tensor) -> Tensor:
        w = self.weights
        if w is not None and w.dtype != x.dtype:
            w = w.to(x.dtype)
        transpose = (self.t_indptr, self.t_indices, self.t_edge_ids)
        out, _ = csr_aggregate(self.indptr, self.indices, w, x, self.reduce, transpose)  # type: ignore[arg-type]
        return out

    def extra_repr(self) -> str:
        n_rows, nnz = self.indptr.shape[0] - 1, self.indices.shape[0]
        return f"n_rows={n_rows}, num_nodes={self.num_nodes}, nnz={nnz}, reduce={self.reduce!r}"
