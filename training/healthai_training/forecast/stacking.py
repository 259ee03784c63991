"""The default forecaster's combination step, fitted on data before an origin only.

- ``fit_weights``: convex weights (>= 0, sum 1) over point forecasts minimising squared error.
- ``fit_stack``: per horizon, the convex least-squares weights over the members (the ST-GNN's median
  and the seasonal baselines) shrunk toward the member baseline that was best on the fit periods:
  ``w = λ·e_best + (1 − λ)·w_ls``. λ comes from a grid by forward-chaining cross-validation over the
  fit sets (each set scored with weights fitted on the sets that end before it starts); with no such
  fold λ = ``DEFAULT_SHRINKAGE``. The bands are calibrated from the same folds' out-of-sample
  residuals (in-sample residuals only when there is no fold): ``q_l = point + Q_l(residual / range)
  × range`` per region (``range`` = the region's training range), clamped at 0.
- ``calibrate``: that band for any point forecast from its own residuals (the baselines' bands).

Nothing here was tuned on a data set: the grid, the default and the tie rule (more shrinkage wins a
tie) are fixed a priori, the same for every series.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

SHRINKAGE_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
DEFAULT_SHRINKAGE = 0.5  # no fold to choose on: halfway between the fitted stack and the best baseline


@dataclass
class FitSet:
    """Point forecasts of every member on some periods before an origin, the truth [V, N], the region
    scales [N] at that origin, and the periods' span [start, end)."""

    points: dict[str, np.ndarray]
    y: np.ndarray
    scale: np.ndarray
    start: int = 0
    end: int = 0


@dataclass
class StackFit:
    names: list[str]
    weights: np.ndarray  # [K] convex
    shrinkage: float
    best: str | None  # the baseline shrunk toward
    offsets: np.ndarray  # [Q] residual quantiles in units of the region range
    folds: int  # cross-validation folds behind the shrinkage and the offsets

    def combine(self, points: dict[str, np.ndarray]) -> np.ndarray:
        return sum(w * points[n] for w, n in zip(self.weights, self.names, strict=True))

    def bands(self, point: np.ndarray, scale: np.ndarray) -> np.ndarray:
        return _bands(point, self.offsets, scale)

    def record(self) -> dict:
        return {"shrinkage": self.shrinkage, "best": self.best, "folds": self.folds,
                "weights": dict(zip(self.names, self.weights.round(4).tolist(), strict=True))}


def fit_weights(components: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``components`` [P, K] point forecasts, ``y`` [P] → convex weights [K] (least squares)."""
    k = components.shape[1]
    if k == 1:
        return np.ones(1)
    scale = max(float(np.mean(y**2)), 1e-12)

    def loss(w: np.ndarray) -> float:
        return float(np.mean((components @ w - y) ** 2) / scale)

    def grad(w: np.ndarray) -> np.ndarray:
        return 2 * components.T @ (components @ w - y) / len(y) / scale

    result = minimize(
        loss,
        np.full(k, 1.0 / k),
        jac=grad,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * k,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)}],
    )
    w = np.clip(result.x, 0.0, None)
    return w / w.sum()


def _matrix(sets: list[FitSet], names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([np.stack([s.points[n].ravel() for n in names], 1) for s in sets])
    return x, np.concatenate([s.y.ravel() for s in sets])


def _shrunk(sets: list[FitSet], names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(least-squares convex weights, one-hot of the best baseline member) fitted on ``sets``."""
    x, y = _matrix(sets, names)
    w_ls = fit_weights(x, y)
    base = [i for i, n in enumerate(names) if n != "healthai"]
    onehot = np.zeros(len(names))
    if base:
        mse = ((x[:, base] - y[:, None]) ** 2).mean(axis=0)
        onehot[base[int(np.argmin(mse))]] = 1.0
    else:
        onehot = w_ls
    return w_ls, onehot


def _scaled_residuals(point: np.ndarray, s: FitSet) -> np.ndarray:
    return ((s.y - point) / np.maximum(np.asarray(s.scale, float), 1e-6)[None, :]).ravel()


def fit_stack(sets: list[FitSet], names: list[str], levels: np.ndarray) -> StackFit:
    """Per-horizon stack over ``names`` (every set must hold them) with shrinkage and bands."""
    sets = sorted(sets, key=lambda s: (s.start, s.end))
    folds = []  # (held-out set, weights fitted on the sets that end before it starts)
    for held in sets:
        before = [s for s in sets if s.end <= held.start]
        if before:
            folds.append((held, *_shrunk(before, names)))
    if folds:
        errors = []
        for lam in SHRINKAGE_GRID:
            sq = [((np.stack([h.points[n] for n in names], -1) @ (lam * b + (1 - lam) * w)) - h.y) ** 2
                  for h, w, b in folds]
            errors.append(float(np.sum([e.sum() for e in sq])))
        lam = max(lam for lam, e in zip(SHRINKAGE_GRID, errors, strict=True) if e <= min(errors) * (1 + 1e-9))
        residuals = np.concatenate([
            _scaled_residuals(np.stack([h.points[n] for n in names], -1) @ (lam * b + (1 - lam) * w), h)
            for h, w, b in folds])
    else:
        lam = DEFAULT_SHRINKAGE
    w_ls, onehot = _shrunk(sets, names)
    weights = lam * onehot + (1 - lam) * w_ls
    weights = weights / weights.sum()
    if not folds:
        residuals = np.concatenate([
            _scaled_residuals(np.stack([s.points[n] for n in names], -1) @ weights, s) for s in sets])
    best = names[int(np.argmax(onehot))] if any(n != "healthai" for n in names) else None
    return StackFit(list(names), weights, float(lam), best, np.quantile(residuals, levels), len(folds))


def _bands(point: np.ndarray, offsets: np.ndarray, scale: np.ndarray) -> np.ndarray:
    s = np.maximum(np.asarray(scale, float), 1e-6)
    q = point[..., None] + offsets[None, None, :] * s[None, :, None]
    return np.sort(np.maximum(q, 0.0), axis=-1)


def calibrate(
    point: np.ndarray,
    fit: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    scale: np.ndarray,
    levels: np.ndarray,
) -> np.ndarray:
    """Quantiles [B, N, Q] for ``point`` [B, N] (regions scaled by ``scale`` [N], each region's
    training range) from residuals on earlier periods: ``fit`` = [(point [V, N], truth [V, N],
    that period's scale [N])]."""
    residuals = np.concatenate(
        [((y - p) / np.maximum(np.asarray(s, float), 1e-6)[None, :]).ravel() for p, y, s in fit]
    )
    return _bands(point, np.quantile(residuals, levels), scale)
