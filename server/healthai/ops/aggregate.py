"""CSR graph aggregation on NumPy arrays and torch tensors (the typed wrapper of ``healthai._native``).

``out[..., i, :] = reduce_{e in row i} weights[e] * x[..., indices[e], :]`` for the rows
``indptr[i]:indptr[i+1]`` of a CSR adjacency matrix with ``len(indptr) - 1`` rows, over the node axis
(-2) of ``x`` (``[N, F]`` or batched ``[B, N, F]``). Reductions:

- ``"sum"``: weighted sum; an empty row gives 0.
- ``"mean"``: the weighted sum divided by the number of edges of the row; an empty row gives 0.
- ``"max"``: per feature the maximum of ``weights[e] * x[indices[e]]`` (NaN wins, like ``np.maximum``);
  also returns ``argmax``, the edge id chosen per output element (-1 for an empty row), which the
  backward pass needs.

Inputs are borrowed without copying (NumPy arrays directly, torch tensors via DLPack) and checked in
C++ before any memory is read: bad input raises ``ValueError`` (shapes, dtypes, contiguity, indptr
values, unknown reduce) or ``IndexError`` (a node index out of range), naming the argument and the
value. The kernel releases the GIL and runs on ``num_threads`` threads (default: ``get_num_threads()``).
torch tensors are routed through the ``torch.ops.healthai.csr_aggregate`` custom op (autograd, CUDA).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from healthai import _native

Reduce = Literal["sum", "mean", "max"]
REDUCTIONS: tuple[str, ...] = ("sum", "mean", "max")
ArrayLike = Any  # numpy.ndarray or torch.Tensor (kept loose so this module never imports torch)

__all__ = [
    "REDUCTIONS",
    "CsrGraph",
    "CsrTranspose",
    "aggregate",
    "aggregate_backward",
    "build_info",
    "csr_transpose",
    "get_num_threads",
    "ort_library_path",
    "set_num_threads",
]


class CsrTranspose(NamedTuple):
    """CSR of the transposed adjacency: per column, the rows pointing at it and their edge ids."""

    indptr: ArrayLike  # [n_cols + 1]
    indices: ArrayLike  # [nnz] row ids
    edge_ids: ArrayLike  # [nnz] position of each entry in the original indices/weights


def _is_torch(obj: object) -> bool:
    return type(obj).__module__.startswith("torch")


def _threads(num_threads: int | None) -> int:
    if num_threads is None:
        return 0
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    return num_threads


def aggregate(
    indptr: ArrayLike,
    indices: ArrayLike,
    x: ArrayLike,
    weights: ArrayLike | None = None,
    reduce: Reduce = "sum",
    *,
    num_threads: int | None = None,
) -> Any:
    """Aggregate neighbour features over a CSR graph; see the module docstring.

    Args:
        indptr: int32/int64 ``[n_rows + 1]``, starts at 0, non-decreasing, ends at ``len(indices)``.
        indices: same dtype as ``indptr``, ``[nnz]`` column (source node) ids in ``[0, x.shape[-2])``.
        x: float32/float64 ``[N, F]`` or ``[B, N, F]``, C-contiguous.
        weights: ``[nnz]`` edge weights of x's dtype, or None for all ones.
        reduce: ``"sum"``, ``"mean"`` or ``"max"``.
        num_threads: CPU threads for this call (default ``get_num_threads()``).

    Returns:
        ``out`` (``[n_rows, F]`` or ``[B, n_rows, F]``, x's dtype and type), or for ``reduce="max"``
        the tuple ``(out, argmax)`` with int64 ``argmax`` of out's shape.
    """
    if _is_torch(x):
        from healthai.ops.torch_ops import csr_aggregate

        out, argmax = csr_aggregate(indptr, indices, weights, x, reduce, num_threads=_threads(num_threads))
    else:
        out, argmax = _native.aggregate(indptr, indices, weights, x, reduce, _threads(num_threads))
    return (out, argmax) if reduce == "max" else out


def csr_transpose(
    indptr: ArrayLike, indices: ArrayLike, n_cols: int, *, num_threads: int | None = None
) -> CsrTranspose:
    """The transpose structure the backward pass needs; build it once per graph and reuse it."""
    if _is_torch(indptr):
        from healthai.ops.torch_ops import torch_csr_transpose

        return torch_csr_transpose(indptr, indices, n_cols)
    return CsrTranspose(*_native.csr_transpose(indptr, indices, n_cols, _threads(num_threads)))


def aggregate_backward(
    indptr: ArrayLike,
    indices: ArrayLike,
    x: ArrayLike,
    grad_out: ArrayLike,
    weights: ArrayLike | None = None,
    reduce: Reduce = "sum",
    *,
    argmax: ArrayLike | None = None,
    transpose: CsrTranspose | None = None,
    need_grad_x: bool = True,
    need_grad_w: bool = False,
    num_threads: int | None = None,
) -> tuple[Any, Any]:
    """Gradients of ``aggregate`` without densifying: ``(grad_x or None, grad_weights or None)``.

    ``grad_x = A^T grad_out`` (through ``transpose``, built here when not given); for ``"max"`` only
    the edge recorded in ``argmax`` (from the forward pass) receives the gradient. ``grad_weights[e]``
    is ``<grad_out[row(e)], x[indices[e]]>`` (divided by the row's edge count for ``"mean"``; for
    ``"max"`` summed over the features where edge ``e`` won).
    """
    if _is_torch(x):
        from healthai.ops.torch_ops import torch_aggregate_backward

        return torch_aggregate_backward(
            indptr,
            indices,
            weights,
            x,
            reduce,
            grad_out,
            argmax,
            transpose,
            need_grad_x,
            need_grad_w,
            _threads(num_threads),
        )
    t = transpose
    if need_grad_x and t is None:
        n_cols = x.shape[-2] if getattr(x, "ndim", 0) >= 2 else 0
        t = csr_transpose(indptr, indices, n_cols, num_threads=num_threads)
    tp, ti, te = t if t is not None else (None, None, None)
    return _native.aggregate_backward(
        indptr,
        indices,
        weights,
        x,
        reduce,
        grad_out,
        tp,
        ti,
        te,
        argmax,
        need_grad_x,
        need_grad_w,
        _threads(num_threads),
    )


class CsrGraph:
    """A static CSR graph (NumPy arrays) whose transpose is built on first use and cached.

    The transpose includes its values: for ``"sum"``/``"mean"`` the backward product
    ``grad_x = A^T grad_out`` is then one forward pass over the cached transposed graph. The arrays
    (weights included) must not change after construction; build a new ``CsrGraph`` instead.
    """

    def __init__(
        self, indptr: np.ndarray, indices: np.ndarray, n_cols: int, weights: np.ndarray | None = None
    ) -> None:
        self.indptr = indptr
        self.indices = indices
        self.n_cols = int(n_cols)
        self.weights = weights
        self._transpose: CsrTranspose | None = None
        self._t_weights: dict[tuple[str, Any], np.ndarray | None] = {}

    @property
    def n_rows(self) -> int:
        return int(self.indptr.shape[0]) - 1

    @property
    def transpose(self) -> CsrTranspose:
        if self._transpose is None:
            self._transpose = csr_transpose(self.indptr, self.indices, self.n_cols)
        return self._transpose

    def transposed_weights(self, reduce: Reduce, dtype: Any) -> np.ndarray | None:
        """Values of ``A^T`` for the sum/mean backward (``w[e] / row count`` for mean), cached."""
        key = (reduce, np.dtype(dtype))
        if key not in self._t_weights:
            _, t_rows, t_edges = self.transpose
            w = None if self.weights is None else self.weights[t_edges].astype(dtype, copy=False)
            if reduce == "mean":
                counts = np.diff(self.indptr)[t_rows]
                w = (np.ones(len(t_edges), dtype) if w is None else w) / counts.astype(dtype)
            self._t_weights[key] = None if w is None else np.ascontiguousarray(w, dtype=dtype)
        return self._t_weights[key]

    def forward(self, x: np.ndarray, reduce: Reduce = "sum", *, num_threads: int | None = None) -> Any:
        return aggregate(self.indptr, self.indices, x, self.weights, reduce, num_threads=num_threads)

    def backward(
        self,
        x: np.ndarray,
        grad_out: np.ndarray,
        reduce: Reduce = "sum",
        *,
        argmax: np.ndarray | None = None,
        need_grad_w: bool = False,
        num_threads: int | None = None,
    ) -> tuple[Any, Any]:
        """``(grad_x, grad_weights or None)``; see ``aggregate_backward``."""
        if reduce == "max" or _is_torch(x):
            return aggregate_backward(
                self.indptr,
                self.indices,
                x,
                grad_out,
                self.weights,
                reduce,
                argmax=argmax,
                transpose=self.transpose,
                need_grad_w=need_grad_w,
                num_threads=num_threads,
            )
        t = self.transpose
        grad_x = aggregate(
            t.indptr,
            t.indices,
            grad_out,
            self.transposed_weights(reduce, x.dtype),
            "sum",
            num_threads=num_threads,
        )
        grad_w = None
        if need_grad_w:
            _, grad_w = aggregate_backward(
                self.indptr,
                self.indices,
                x,
                grad_out,
                self.weights,
                reduce,
                need_grad_x=False,
                need_grad_w=True,
                num_threads=num_threads,
            )
        return grad_x, grad_w


def set_num_threads(n: int) -> None:
    """Default CPU thread count of the kernels (initially all hardware threads)."""
    _native.set_num_threads(n)


def get_num_threads() -> int:
    return int(_native.get_num_threads())


def build_info() -> dict[str, Any]:
    """What was built: version, CPU, CUDA (+ toolkit version), the ONNX Runtime op library (+ its path)."""
    info = dict(_native.build_info())
    path = ort_library_path()
    info["ort_ops_library_path"] = str(path) if path is not None else None
    if info["ort_ops"] and path is None:
        info["ort_ops_note"] = "built, but the library file is missing next to the package"
    elif not info["ort_ops"]:
        info["ort_ops_note"] = "not built: ONNX Runtime headers were absent at build time"
    return info


def ort_library_path() -> Path | None:
    """Path of the ONNX Runtime custom-op library (for ``SessionOptions.register_custom_ops_library``).

    None when it was not built (no ONNX Runtime headers at build time).
    """
    name = _native.build_info()["ort_ops_library"]
    if not name:
        return None
    path = Path(_native.__file__).resolve().parent / name
    return path if path.is_file() else None
