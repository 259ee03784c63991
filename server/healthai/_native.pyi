"""Type stubs of the private pybind11 module ``healthai._native`` (use ``healthai.ops``).

Arrays are NumPy arrays or DLPack producers (torch tensors). Errors: ValueError (shape, dtype,
contiguity, indptr values, reduce), IndexError (node index out of range), RuntimeError (CUDA).
"""

from typing import Any

def aggregate(
    indptr: Any,
    indices: Any,
    weights: Any | None,
    x: Any,
    reduce: str,
    num_threads: int = 0,
    out: Any | None = None,
    argmax: Any | None = None,
    stream: int = 0,
) -> tuple[Any, Any | None]: ...
def aggregate_backward(
    indptr: Any,
    indices: Any,
    weights: Any | None,
    x: Any,
    reduce: str,
    grad_out: Any,
    t_indptr: Any | None,
    t_indices: Any | None,
    t_edge_ids: Any | None,
    argmax: Any | None = None,
    need_grad_x: bool = True,
    need_grad_w: bool = False,
    num_threads: int = 0,
    grad_x: Any | None = None,
    grad_w: Any | None = None,
    stream: int = 0,
) -> tuple[Any | None, Any | None]: ...
def csr_transpose(
    indptr: Any, indices: Any, n_cols: int, num_threads: int = 0, out: tuple[Any, Any, Any] | None = None,
    stream: int = 0,
) -> tuple[Any, Any, Any]: ...
def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def build_info() -> dict[str, Any]: ...
def permute_rows(x: Any, perm: Any, num_threads: int = 0, out: Any | None = None) -> Any: ...
def metapop_run(
    mode: str,
    indptr: Any,
    indices: Any,
    weights: Any,
    population: Any,
    beta: Any,
    sigma: float,
    gamma: float,
    contact: Any,
    travel: Any,
    vacc: Any,
    S: Any,
    E: Any,
    I: Any,
    R: Any,
    incidence: Any,
    peak_value: Any,
    peak_step: Any,
    seed: int,
    step0: int = 0,
    substeps: int = 1,
    num_threads: int = 0,
    device: str = "cpu",
) -> None: ...
