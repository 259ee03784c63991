"""The default forecaster's combination step, fitted on data before an origin only.

- ``fit_weights``: per horizon, convex weights (>= 0, sum 1) over point forecasts (the ST-GNN's
  median and the seasonal baselines) minimising squared error on periods before the origin. Convex
  weights cannot extrapolate, so the stack stays between its members by design.
- ``calibrate``: quantiles for any point forecast from its own residuals on periods before the
  origin, scaled per region by the region's training range: ``q_l = point + Q_l(residual / range) ×
  range`` (clamped at 0, sorted). Baselines and the stack get their uncertainty this way, on the
  same periods.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize


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
    s = np.maximum(np.asarray(scale, float), 1e-6)
    offsets = np.quantile(residuals, levels)  # [Q]
    q = point[..., None] + offsets[None, None, :] * s[None, :, None]
    return np.sort(np.maximum(q, 0.0), axis=-1)
