"""Forecast metrics on the original count scale, pooled over samples × regions."""

from __future__ import annotations

import numpy as np


def rmse(y: np.ndarray, yhat: np.ndarray) -> float:
    d = np.asarray(y, float) - np.asarray(yhat, float)
    return float(np.sqrt(np.mean(d * d)))


def mae(y: np.ndarray, yhat: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(y, float) - np.asarray(yhat, float))))


def pcc(y: np.ndarray, yhat: np.ndarray) -> float:
    """Pearson correlation of the flattened arrays (NaN if either is constant)."""
    a = np.asarray(y, float).ravel() - np.mean(y)
    b = np.asarray(yhat, float).ravel() - np.mean(yhat)
    denom = np.sqrt(np.sum(a * a) * np.sum(b * b))
    return float(np.sum(a * b) / denom) if denom > 0 else float("nan")


def pinball(y: np.ndarray, q: np.ndarray, levels: np.ndarray) -> float:
    """Mean pinball loss; ``q`` has the quantile axis last, ``y`` the same shape without it."""
    diff = np.asarray(y, float)[..., None] - np.asarray(q, float)
    lv = np.asarray(levels, float)
    return float(np.mean(np.maximum(lv * diff, (lv - 1) * diff)))


def weighted_interval_score(y: np.ndarray, q: np.ndarray, levels: np.ndarray) -> float:
    """Mean WIS (Bracher et al. 2021) over all points; levels must be symmetric around 0.5 with the median.

    WIS = (0.5 |y - m| + sum_k alpha_k / 2 * IS_alpha_k) / (K + 0.5), with
    IS_alpha = (u - l) + 2/alpha (l - y)_+ + 2/alpha (y - u)_+ for the central (1 - alpha) interval.
    """
    lv = np.asarray(levels, float)
    y = np.asarray(y, float)
    q = np.asarray(q, float)
    m_idx = int(np.argmin(np.abs(lv - 0.5)))
    if not np.isclose(lv[m_idx], 0.5) or not np.allclose(lv + lv[::-1], 1.0):
        raise ValueError(f"quantile levels must be symmetric around a 0.5 median, got {lv.tolist()}")
    total = 0.5 * np.abs(y - q[..., m_idx])
    k = m_idx
    for j in range(k):
        alpha = 2 * lv[j]
        lo, hi = q[..., j], q[..., len(lv) - 1 - j]
        interval = (hi - lo) + 2 / alpha * np.maximum(lo - y, 0) + 2 / alpha * np.maximum(y - hi, 0)
        total = total + alpha / 2 * interval
    return float(np.mean(total / (k + 0.5)))


def coverage(y: np.ndarray, q: np.ndarray, levels: np.ndarray, nominal: float) -> float:
    """Share of points inside the central ``nominal`` interval (e.g. 0.5 → [q0.25, q0.75])."""
    lv = np.asarray(levels, float)
    lo_level, hi_level = (1 - nominal) / 2, 1 - (1 - nominal) / 2
    lo_i, hi_i = int(np.argmin(np.abs(lv - lo_level))), int(np.argmin(np.abs(lv - hi_level)))
    if not (np.isclose(lv[lo_i], lo_level) and np.isclose(lv[hi_i], hi_level)):
        raise ValueError(f"levels {lv.tolist()} lack the {nominal:.0%} interval bounds")
    y = np.asarray(y, float)
    return float(np.mean((y >= q[..., lo_i]) & (y <= q[..., hi_i])))


def point_metrics(y: np.ndarray, yhat: np.ndarray) -> dict[str, float]:
    return {"rmse": rmse(y, yhat), "mae": mae(y, yhat), "pcc": pcc(y, yhat)}
