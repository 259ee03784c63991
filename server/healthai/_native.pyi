"""Type stubs of the private pybind11 module ``healthai._native`` (use ``healthai.ops``).

Arrays are NumPy arrays, read in place (C-contiguous, native byte order), or DLPack producers such
as torch CPU/CUDA tensors, read through ``__dlpack__()`` without a copy. Shapes (``R`` rows, ``N``
nodes, ``E`` edges, ``F`` features, optional batch ``B``):

- ``indptr``: int32/int64 ``[R + 1]``; ``indices``: the same dtype, ``[E]``;
- ``weights``: ``[E]`` of x's dtype, or None (every edge weighs 1);
- ``x``: float32/float64 ``[N, F]`` or ``[B, N, F]``; ``out``/``grad_out``: ``[R, F]`` or ``[B, R, F]``;
- ``argmax``: int64 of out's shape (only for ``reduce="max"``).

Outputs not given are allocated as NumPy arrays (CPU inputs only: CUDA inputs need every output
preallocated); a given output is filled and returned as is. ``stream`` is a ``cudaStream_t`` as an int
(0: the default stream), used for the CUDA kernels and checks; ignored on the CPU. ``num_threads``
<= 0 means ``get_num_threads()``.

Errors: ValueError (shape, dtype, contiguity, device, indptr values, reduce), IndexError (a node
index, edge id or argmax entry out of range), RuntimeError (CUDA, or CUDA arrays on a build without
CUDA).
"""

from typing import Literal, Protocol, TypeAlias, TypedDict, TypeVar, overload, type_check_only

import numpy as np
import numpy.typing as npt

@type_check_only
class _DLPackArray(Protocol):
    """A DLPack producer (torch.Tensor, cupy/jax arrays): the module calls ``__dlpack__()``."""

    def __dlpack__(self) -> object: ...

_Float = TypeVar("_Float", np.float32, np.float64)
_Index = TypeVar("_Index", np.int32, np.int64)
_Out = TypeVar("_Out", bound=npt.NDArray[np.float32] | npt.NDArray[np.float64] | _DLPackArray)
_Arg = TypeVar("_Arg", bound=npt.NDArray[np.int64] | _DLPackArray)

_FloatArray: TypeAlias = npt.NDArray[np.float32] | npt.NDArray[np.float64]
_IndexArray: TypeAlias = npt.NDArray[np.int32] | npt.NDArray[np.int64]
_AnyFloat: TypeAlias = _FloatArray | _DLPackArray
_AnyIndex: TypeAlias = _IndexArray | _DLPackArray
_AnyInt64: TypeAlias = npt.NDArray[np.int64] | _DLPackArray
_Reduce: TypeAlias = Literal["sum", "mean", "max"]

@type_check_only
class BuildInfo(TypedDict):
    """What build_info() returns (stub-only: import under TYPE_CHECKING)."""

    version: str
    cpu: bool
    cuda: bool
    cuda_version: str | None  # None without CUDA
    ort_ops: bool
    ort_ops_library: str  # file name next to this module; "" when not built
    ort_headers_version: str  # e.g. "ORT API 21"; "" when not built
    num_threads: int
    compiler: str

# ---- aggregate: (out, argmax); argmax is None unless reduce == "max" ----
@overload
def aggregate(
    indptr: npt.NDArray[_Index],
    indices: npt.NDArray[_Index],
    weights: npt.NDArray[_Float] | None,
    x: npt.NDArray[_Float],
    reduce: Literal["max"],
    num_threads: int = 0,
    out: None = None,
    argmax: None = None,
    stream: int = 0,
) -> tuple[npt.NDArray[_Float], npt.NDArray[np.int64]]: ...
@overload
def aggregate(
    indptr: npt.NDArray[_Index],
    indices: npt.NDArray[_Index],
    weights: npt.NDArray[_Float] | None,
    x: npt.NDArray[_Float],
    reduce: Literal["sum", "mean"],
    num_threads: int = 0,
    out: None = None,
    argmax: None = None,
    stream: int = 0,
) -> tuple[npt.NDArray[_Float], None]: ...
@overload
def aggregate(
    indptr: _AnyIndex,
    indices: _AnyIndex,
    weights: _AnyFloat | None,
    x: _AnyFloat,
    reduce: Literal["max"],
    num_threads: int,
    out: _Out,
    argmax: _Arg,
    stream: int = 0,
) -> tuple[_Out, _Arg]: ...
@overload
def aggregate(
    indptr: _AnyIndex,
    indices: _AnyIndex,
    weights: _AnyFloat | None,
    x: _AnyFloat,
    reduce: Literal["sum", "mean"],
    num_threads: int,
    out: _Out,
    argmax: None = None,
    stream: int = 0,
) -> tuple[_Out, None]: ...
@overload
def aggregate(
    indptr: _AnyIndex,
    indices: _AnyIndex,
    weights: _AnyFloat | None,
    x: _AnyFloat,
    reduce: str,  # any other than "sum", "mean", "max" raises ValueError
    num_threads: int = 0,
    out: _AnyFloat | None = None,
    argmax: _AnyInt64 | None = None,
    stream: int = 0,
) -> tuple[_AnyFloat, _AnyInt64 | None]: ...

# ---- aggregate_backward: (grad_x or None, grad_weights or None) ----
@overload
def aggregate_backward(
    indptr: npt.NDArray[_Index],
    indices: npt.NDArray[_Index],
    weights: npt.NDArray[_Float] | None,
    x: npt.NDArray[_Float],
    reduce: _Reduce,
    grad_out: npt.NDArray[_Float],
    t_indptr: npt.NDArray[_Index] | None,
    t_indices: npt.NDArray[_Index] | None,
    t_edge_ids: npt.NDArray[_Index] | None,
    argmax: npt.NDArray[np.int64] | None = None,
    need_grad_x: bool = True,
    need_grad_w: bool = False,
    num_threads: int = 0,
    grad_x: None = None,
    grad_w: None = None,
    stream: int = 0,
) -> tuple[npt.NDArray[_Float] | None, npt.NDArray[_Float] | None]: ...
@overload
def aggregate_backward(
    indptr: _AnyIndex,
    indices: _AnyIndex,
    weights: _AnyFloat | None,
    x: _AnyFloat,
    reduce: str,
    grad_out: _AnyFloat,
    t_indptr: _AnyIndex | None,
    t_indices: _AnyIndex | None,
    t_edge_ids: _AnyIndex | None,
    argmax: _AnyInt64 | None = None,
    need_grad_x: bool = True,
    need_grad_w: bool = False,
    num_threads: int = 0,
    grad_x: _AnyFloat | None = None,
    grad_w: _AnyFloat | None = None,
    stream: int = 0,
) -> tuple[_AnyFloat | None, _AnyFloat | None]: ...

# ---- csr_transpose: (t_indptr [n_cols + 1], t_indices [E], t_edge_ids [E]) of indptr's dtype ----
@overload
def csr_transpose(
    indptr: npt.NDArray[_Index],
    indices: npt.NDArray[_Index],
    n_cols: int,
    num_threads: int = 0,
    out: None = None,
    stream: int = 0,
) -> tuple[npt.NDArray[_Index], npt.NDArray[_Index], npt.NDArray[_Index]]: ...
@overload
def csr_transpose(
    indptr: _AnyIndex,
    indices: _AnyIndex,
    n_cols: int,
    num_threads: int = 0,
    out: tuple[_AnyIndex, _AnyIndex, _AnyIndex] | None = None,
    stream: int = 0,
) -> tuple[_AnyIndex, _AnyIndex, _AnyIndex]: ...

# ---- permute_rows: out[..., perm[i], :] = x[..., i, :] (CPU only; perm int64 [N]) ----
@overload
def permute_rows(
    x: npt.NDArray[_Float], perm: npt.NDArray[np.int64], num_threads: int = 0, out: None = None
) -> npt.NDArray[_Float]: ...
@overload
def permute_rows(x: _AnyFloat, perm: _AnyInt64, num_threads: int, out: _Out) -> _Out: ...
@overload
def permute_rows(
    x: _AnyFloat, perm: _AnyInt64, num_threads: int = 0, out: _AnyFloat | None = None
) -> _AnyFloat: ...
def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def build_info() -> BuildInfo: ...

# Risk occlusion of one patient (csrc/occlusion.h): x [F] or [1, F], baseline [F] float32
def occlusion_feed(
    x: npt.NDArray[np.float32], baseline: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]: ...
def occlusion_top_k(
    out: npt.NDArray[np.float32], x: npt.NDArray[np.float32], baseline: npt.NDArray[np.float32], k: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]: ...

# Risk occlusion of a batch: x [n, F] -> (feed [n + m, F], patient [m], feature [m]); contribution
# [n, F] -> per row the top k (index [n, k], top [n, k]), ordered like occlusion_top_k
def occlusion_feed_rows(
    x: npt.NDArray[np.float32], baseline: npt.NDArray[np.float32]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], npt.NDArray[np.int64]]: ...
def top_k_rows(
    contribution: npt.NDArray[np.float32], k: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]: ...

# ---- metapopulation SEIR engine (healthai.ops.metapop): host numpy arrays, checked before use ----
_MetapopState: TypeAlias = npt.NDArray[np.int32] | npt.NDArray[np.float64]  # int32 stochastic, float64 ODE

def metapop_run(
    mode: str,
    indptr: npt.NDArray[np.int64],
    indices: npt.NDArray[np.int64],
    weights: npt.NDArray[np.float64],
    population: npt.NDArray[np.int64],
    beta: npt.NDArray[np.float64],
    sigma: float,
    gamma: float,
    contact: npt.NDArray[np.float64],
    travel: npt.NDArray[np.float64],
    vacc: npt.NDArray[np.float64],
    S: _MetapopState,
    E: _MetapopState,
    I: _MetapopState,
    R: _MetapopState,
    incidence: _MetapopState,
    peak_value: _MetapopState,
    peak_step: npt.NDArray[np.int32],
    seed: int,
    step0: int = 0,
    substeps: int = 1,
    num_threads: int = 0,
    device: str = "cpu",
) -> None: ...
