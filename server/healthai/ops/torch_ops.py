"""torch custom ops over the native kernel: ``torch.ops.healthai.csr_aggregate`` with autograd.

- ``csr_aggregate(indptr, indices, weights, x, reduce, t_indptr, t_indices, t_edge_ids, num_threads)``
  returns ``(out, argmax)``; ``argmax`` is empty unless ``reduce == "max"``. The optional transpose
  (from ``csr_transpose``) is only used by the backward pass; without it the backward builds it.
- Gradients flow to ``x`` and ``weights`` (all reductions). A fake (meta) implementation makes the op
  traceable by ``torch.export`` / ``torch.onnx.export``.
- CPU tensors run the multi-threaded CPU kernel, CUDA tensors the CUDA kernel on the current stream;
  a CUDA tensor on a build without CUDA raises ``RuntimeError("... built without CUDA ...")``.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor

from healthai import _native
from healthai.ops.aggregate import REDUCTIONS, CsrTranspose

__all__ = ["csr_aggregate", "torch_aggregate_backward", "torch_csr_transpose"]


def _stream(t: Tensor) -> int:
    return torch.cuda.current_stream(t.device).cuda_stream if t.is_cuda else 0


def _out_shape(indptr: Tensor, x: Tensor) -> tuple[int, ...]:
    if x.dim() not in (2, 3) or indptr.dim() != 1 or indptr.shape[0] == 0:
        return (0,)  # the native checks reject these inputs before looking at the outputs
    return (*x.shape[:-2], indptr.shape[0] - 1, x.shape[-1])


def _detach(t: Tensor | None) -> Any:
    """A view the native module can read: a NumPy view for CPU tensors (cheaper than DLPack)."""
    if t is None:
        return None
    t = t.detach()
    return t if t.is_cuda or t.dtype not in _NUMPY_DTYPES else t.numpy()


_NUMPY_DTYPES = (torch.float32, torch.float64, torch.int32, torch.int64)


def needs_autograd(x: Tensor, weights: Tensor | None) -> bool:
    """Whether a call must go through the custom op: gradients wanted, or traced (export/compile)."""
    if type(x) is not torch.Tensor or (weights is not None and type(weights) is not torch.Tensor):
        return True  # FakeTensor / FunctionalTensor while torch.export or torch.compile trace
    return torch.is_grad_enabled() and (x.requires_grad or (weights is not None and weights.requires_grad))


def direct_forward(
    indptr: Tensor, indices: Tensor, weights: Tensor | None, x: Tensor, reduce: str, num_threads: int = 0
) -> tuple[Tensor, Tensor]:
    """The forward without the dispatcher (inference on plain tensors): ``(out, argmax)``."""
    if x.is_cuda:
        return _csr_aggregate_op(indptr, indices, weights, x, reduce, num_threads=num_threads)
    out, argmax = _native.aggregate(
        _detach(indptr), _detach(indices), _detach(weights), _detach(x), reduce, num_threads
    )
    return torch.from_numpy(out), (torch.from_numpy(argmax) if argmax is not None else _EMPTY_ARGMAX)


_EMPTY_ARGMAX = torch.empty(0, dtype=torch.int64)


def _check_reduce(reduce: str) -> None:
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of 'sum', 'mean', 'max', got '{reduce}'")


@torch.library.custom_op("healthai::csr_aggregate", mutates_args=())
def _csr_aggregate_op(
    indptr: Tensor,
    indices: Tensor,
    weights: Tensor | None,
    x: Tensor,
    reduce: str,
    t_indptr: Tensor | None = None,
    t_indices: Tensor | None = None,
    t_edge_ids: Tensor | None = None,
    num_threads: int = 0,
) -> tuple[Tensor, Tensor]:
    _check_reduce(reduce)
    shape = _out_shape(indptr, x)
    out = torch.empty(shape, dtype=x.dtype, device=x.device)
    argmax = torch.empty(shape if reduce == "max" else (0,), dtype=torch.int64, device=x.device)
    with torch.cuda.device(x.device) if x.is_cuda else nullcontext():
        _native.aggregate(
            _detach(indptr),
            _detach(indices),
            _detach(weights),
            _detach(x),
            reduce,
            num_threads,
            _detach(out),
            _detach(argmax) if reduce == "max" else None,
            _stream(x),
        )
    return out, argmax


@_csr_aggregate_op.register_fake
def _csr_aggregate_fake(
    indptr: Tensor,
    indices: Tensor,
    weights: Tensor | None,
    x: Tensor,
    reduce: str,
    t_indptr: Tensor | None = None,
    t_indices: Tensor | None = None,
    t_edge_ids: Tensor | None = None,
    num_threads: int = 0,
) -> tuple[Tensor, Tensor]:
    _check_reduce(reduce)
    shape = (*x.shape[:-2], indptr.shape[0] - 1, x.shape[-1])
    out = x.new_empty(shape)
    argmax = x.new_empty(shape if reduce == "max" else (0,), dtype=torch.int64)
    return out, argmax


def torch_csr_transpose(indptr: Tensor, indices: Tensor, n_cols: int) -> CsrTranspose:
    """The transpose of a CSR graph given as tensors (same device and index dtype)."""
    n = int(indices.shape[0]) if indices.dim() == 1 else 0
    outs = tuple(torch.empty(size, dtype=indptr.dtype, device=indptr.device) for size in (n_cols + 1, n, n))
    with torch.cuda.device(indptr.device) if indptr.is_cuda else nullcontext():
        _native.csr_transpose(
            _detach(indptr), _detach(indices), n_cols, 0, tuple(_detach(o) for o in outs), _stream(indptr)
        )
    return CsrTranspose(*outs)


def torch_aggregate_backward(
    indptr: Tensor,
    indices: Tensor,
    weights: Tensor | None,
    x: Tensor,
    reduce: str,
    grad_out: Tensor,
    argmax: Tensor | None,
    transpose: CsrTranspose | None,
    need_grad_x: bool,
    need_grad_w: bool,
    num_threads: int = 0,
) -> tuple[Tensor | None, Tensor | None]:
    """``(grad_x, grad_weights)`` of ``csr_aggregate`` (None where not requested)."""
    if need_grad_x and transpose is None:
        transpose = torch_csr_transpose(indptr, indices, x.shape[-2] if x.dim() >= 2 else 0)
    tp, ti, te = transpose if transpose is not None else (None, None, None)
    grad_x = torch.empty_like(x) if need_grad_x else None
    grad_w = torch.empty_like(weights) if need_grad_w and weights is not None else None
    with torch.cuda.device(x.device) if x.is_cuda else nullcontext():
        _native.aggregate_backward(
            _detach(indptr),
            _detach(indices),
            _detach(weights),
            _detach(x),
            reduce,
            _detach(grad_out.contiguous()),
            _detach(tp),
            _detach(ti),
            _detach(te),
            _detach(argmax) if reduce == "max" else None,
            need_grad_x,
            grad_w is not None,
            num_threads,
            _detach(grad_x),
            _detach(grad_w),
            _stream(x),
        )
    return grad_x, grad_w


def _setup_context(ctx: torch.autograd.function.FunctionCtx, inputs: tuple, output: tuple) -> None:
    indptr, indices, weights, x, reduce, t_indptr, t_indices, t_edge_ids, num_threads = inputs
    _, argmax = output
    ctx.reduce = reduce
    ctx.num_threads = num_threads
    ctx.has_transpose = t_indptr is not None and t_indices is not None and t_edge_ids is not None
    ctx.save_for_backward(indptr, indices, weights, x, argmax, t_indptr, t_indices, t_edge_ids)


def _backward(ctx: torch.autograd.function.FunctionCtx, grad_out: Tensor, _grad_argmax: Tensor) -> tuple:
    indptr, indices, weights, x, argmax, t_indptr, t_indices, t_edge_ids = ctx.saved_tensors
    need_w = bool(ctx.needs_input_grad[2]) and weights is not None
    need_x = bool(ctx.needs_input_grad[3])
    transpose = CsrTranspose(t_indptr, t_indices, t_edge_ids) if ctx.has_transpose else None
    grad_x, grad_w = torch_aggregate_backward(
        indptr,
        indices,
        weights,
        x.detach(),
        ctx.reduce,
        grad_out,
        argmax,
        transpose,
        need_x,
        need_w,
        ctx.num_threads,
    )
    return None, None, grad_w, grad_x, None, None, None, None, None


_csr_aggregate_op.register_autograd(_backward, setup_context=_setup_context)


def csr_aggregate(
    indptr: Tensor,
    indices: Tensor,
    weights: Tensor | None,
    x: Tensor,
    reduce: str = "sum",
    transpose: CsrTranspose | None = None,
    *,
    num_threads: int = 0,
) -> tuple[Tensor, Tensor]:
    """``(out, argmax)`` through ``torch.ops.healthai.csr_aggregate`` (differentiable); plain CPU
    tensors that need no gradient skip the dispatcher (same kernel, less call overhead)."""
    if not needs_autograd(x, weights) and not x.is_cuda:
        return direct_forward(indptr, indices, weights, x, reduce, num_threads)
    tp, ti, te = transpose if transpose is not None else (None, None, None)
    return torch.ops.healthai.csr_aggregate(indptr, indices, weights, x, reduce, tp, ti, te, num_threads)
