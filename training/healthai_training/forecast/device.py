"""The device a forecaster trains on: a GPU only where our native graph op runs there and agrees with
its CPU implementation.

The ST-GNN's graph aggregation is our own C++/CUDA kernel (``healthai.ops``). With ``--device auto`` a
machine with a CUDA GPU would train through its CUDA path, which a build without CUDA cannot run and
which this project's CI can compile but not execute. So before the first CUDA run in a process, the
op's forward pass and gradients on a small random graph (sum, mean and max, learned edge weights)
are compared with the CPU kernel's. ``auto`` falls back to the CPU, with a warning that says why,
when the build lacks CUDA, the check raises, or the results differ; an explicit ``cuda`` stops
with that reason instead.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from healthai_training.common import resolve_device
from healthai_training.errors import TrainingInputError

logger = logging.getLogger(__name__)
_CHECKED: dict[str, str | None] = {}  # device -> why the native op cannot train there (None: it can)
RTOL, ATOL = 1e-4, 1e-4


def forecast_device(device: str) -> torch.device:
    """``resolve_device(device)``, leaving CUDA for the CPU (``auto``) or refusing it (``cuda``) when
    the native op fails its self-check there."""
    resolved = resolve_device(device)
    if resolved.type != "cuda":
        return resolved
    problem = native_problem(resolved)
    if problem is None:
        return resolved
    if device == "auto":
        logger.warning("training on the CPU although a GPU is present: %s", problem)
        return torch.device("cpu")
    raise TrainingInputError(f"device={device!r}: {problem}", field="device")


def native_problem(device: torch.device) -> str | None:
    """Why the native graph op cannot train on ``device``, or None; checked once per process."""
    key = str(device)
    if key not in _CHECKED:
        _CHECKED[key] = _self_check(device)
    return _CHECKED[key]


def _self_check(device: torch.device) -> str | None:
    from healthai.ops import GraphAggregation, build_info

    if not build_info().get("cuda"):
        return ("the native graph op was built without CUDA (rebuild with nvcc present and "
                "HEALTHAI_WITH_CUDA=ON)")
    rng = np.random.default_rng(0)
    n, nnz = 37, 160
    rows = np.sort(rng.integers(0, n, nnz))
    indptr = np.searchsorted(rows, np.arange(n + 1)).astype(np.int64)
    indices = rng.integers(0, n, nnz).astype(np.int64)
    weights = rng.uniform(0.1, 1.0, nnz).astype(np.float32)
    x = torch.tensor(rng.normal(size=(3, n, 5)), dtype=torch.float32)
    try:
        for reduce in ("sum", "mean", "max"):
            results = []
            for dev in (torch.device("cpu"), device):
                op = GraphAggregation(indptr, indices, weights, reduce=reduce, learn_weights=True).to(dev)
                xd = x.to(dev).requires_grad_(True)
                out = op(xd)
                (out * torch.linspace(0.5, 1.5, out.numel(), device=dev).view_as(out)).sum().backward()
                results.append([t.detach().cpu() for t in (out, xd.grad, op.weights.grad)])
            for name, a, b in zip(("output", "input gradient", "weight gradient"), *results, strict=True):
                if not torch.allclose(a, b, rtol=RTOL, atol=ATOL):
                    diff = float((a - b).abs().max())
                    return (f"the native graph op's CUDA {reduce} {name} differs from its CPU result "
                            f"(max abs difference {diff:.3g}) in its self-check")
    except Exception as e:  # any failure of the untested path means: not this device
        return f"the native graph op failed its CUDA self-check ({type(e).__name__}: {e})"
    return None
