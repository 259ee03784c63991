"""PNG plots for run folders (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def training_curve(curve: list[dict[str, float]], path: Path, *, keys: tuple[str, ...], title: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = [c["epoch"] for c in curve]
    for key in keys:
        ax.plot(epochs, [c[key] for c in curve], label=key)
    ax.set_xlabel("epoch")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def calibration(pred: np.ndarray, observed: np.ndarray, path: Path, *, title: str) -> None:
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect")
    ax.plot(pred, observed, "o-", label="model")
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed rate")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def forecast_vs_actual(
    weeks: np.ndarray,
    actual: np.ndarray,
    quantiles: np.ndarray,
    median_index: int,
    levels: tuple[float, ...],
    regions: list[int],
    names: list[str],
    path: Path,
    *,
    title: str,
) -> None:
    """``actual`` [T, N]; ``quantiles`` [T, N, Q]; the 50% and 95% bands shaded."""
    lv = np.asarray(levels)
    fig, axes = plt.subplots(len(regions), 1, figsize=(7, 2.2 * len(regions)), sharex=True)
    for ax, r in zip(np.atleast_1d(axes), regions, strict=True):
        for lo_l, alpha in ((0.025, 0.15), (0.25, 0.3)):
            lo_i, hi_i = int(np.argmin(abs(lv - lo_l))), int(np.argmin(abs(lv - (1 - lo_l))))
            ax.fill_between(weeks, quantiles[:, r, lo_i], quantiles[:, r, hi_i], alpha=alpha, color="C0")
        ax.plot(weeks, quantiles[:, r, median_index], color="C0", label="median forecast")
        ax.plot(weeks, actual[:, r], color="k", lw=1, label="actual")
        ax.set_ylabel(names[r][:14])
    np.atleast_1d(axes)[0].set_title(title)
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
