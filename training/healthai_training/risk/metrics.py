"""Binary-classification metrics: AUROC, AUPRC (average precision), Brier score, ECE, accuracy."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def _check(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y, p = np.asarray(y, float).ravel(), np.asarray(p, float).ravel()
    if y.shape != p.shape or y.size == 0:
        raise ValueError(
            f"labels and scores must be non-empty and the same length, got {y.size} and {p.size}"
        )
    return y, p


def auroc(y: np.ndarray, p: np.ndarray) -> float:
    """Mann-Whitney AUROC with ties counted as one half."""
    y, p = _check(y, p)
    n_pos, n_neg = y.sum(), (1 - y).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(p)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auprc(y: np.ndarray, p: np.ndarray) -> float:
    """Average precision: sum over positives of precision at their threshold (ties grouped)."""
    y, p = _check(y, p)
    if y.sum() == 0:
        return float("nan")
    order = np.argsort(-p, kind="mergesort")
    ys, ps = y[order], p[order]
    tp, fp = np.cumsum(ys), np.cumsum(1 - ys)
    last_of_tie = np.r_[ps[1:] != ps[:-1], True]
    tp, fp = tp[last_of_tie], fp[last_of_tie]
    precision = tp / (tp + fp)
    recall_gain = np.diff(np.r_[0.0, tp]) / y.sum()
    return float(np.sum(precision * recall_gain))


def brier(y: np.ndarray, p: np.ndarray) -> float:
    y, p = _check(y, p)
    return float(np.mean((p - y) ** 2))


def ece(y: np.ndarray, p: np.ndarray, *, bins: int = 10) -> float:
    """Expected calibration error with equal-width bins on [0, 1] (last bin closed)."""
    y, p = _check(y, p)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            total += sel.mean() * abs(p[sel].mean() - y[sel].mean())
    return float(total)


def accuracy(y: np.ndarray, p: np.ndarray, *, threshold: float = 0.5) -> float:
    y, p = _check(y, p)
    return float(np.mean((p >= threshold) == (y == 1)))


def calibration_curve(y: np.ndarray, p: np.ndarray, *, bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Mean predicted vs observed rate per non-empty equal-width bin (for the plot)."""
    y, p = _check(y, p)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    keep = [b for b in range(bins) if (idx == b).any()]
    return (np.array([p[idx == b].mean() for b in keep]), np.array([y[idx == b].mean() for b in keep]))


def all_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    return {
        "auroc": auroc(y, p),
        "auprc": auprc(y, p),
        "brier": brier(y, p),
        "ece": ece(y, p),
        "accuracy": accuracy(y, p),
        "prevalence": float(np.mean(y)),
        "n": int(np.size(y)),
    }
