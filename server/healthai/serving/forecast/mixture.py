"""Quantiles of an equal-weight mixture of forecasts, each given by its quantiles.

A forecast from a nowcast is a forecast from each plausible final count of the latest periods: the
model is run once per draw of the nowcast (``healthai.surveillance.nowcast.final_count_draws``) and
the answer is their mixture, so its interval carries what the latest counts may still become.
Averaging the draws' quantiles (Vincentization) would keep each draw's width and drop the spread
between them; the mixture keeps both.

Each forecast's quantile function is taken as piecewise linear through its levels, extended linearly
to levels 0 and 1 (not below zero when its lowest quantile is a count >= 0), and read at S stratified
levels (m + 0.5) / S; the pooled values' quantiles at the requested levels (Hazen's plotting positions,
which give one forecast's own quantiles back between its levels) are the mixture's. S is as many as
``POOLED_VALUES`` allows over every cell, from ``MIN_STRATA`` (a county-scale graph) to
``MAX_STRATA`` (a few dozen regions); more strata, a finer reading of each forecast's tails.
"""

from __future__ import annotations

import numpy as np

MIN_STRATA, MAX_STRATA = 32, 256  # levels read per forecast: draws x strata pooled values per cell
POOLED_VALUES = 1 << 23  # pooled values over every cell (strata), and held at once (region chunks)


def mixture_quantiles(quantiles: np.ndarray, levels: np.ndarray, out_levels: np.ndarray) -> np.ndarray:
    """``quantiles`` [K, H, N, Q]: K forecasts' quantiles at ``levels`` (increasing, in (0, 1)), each
    cell's sorted; returns [H, N, len(out_levels)]: their mixture's quantiles at ``out_levels``."""
    k, h, n, q = quantiles.shape
    if q != len(levels) or q < 2:
        raise ValueError(f"quantiles' last axis has {q} levels, expected {len(levels)} (>= 2)")
    strata = int(np.clip(POOLED_VALUES // (k * h * n), MIN_STRATA, MAX_STRATA))
    ext_levels, ext = _extended(np.asarray(quantiles, np.float64), np.asarray(levels, np.float64))
    u = (np.arange(strata) + 0.5) / strata
    hi = np.clip(np.searchsorted(ext_levels, u, side="right"), 1, len(ext_levels) - 1)
    lo = hi - 1
    w = (u - ext_levels[lo]) / (ext_levels[hi] - ext_levels[lo])
    pos = np.clip(np.asarray(out_levels, np.float64) * k * strata - 0.5, 0, k * strata - 1)
    below = np.floor(pos).astype(int)
    above = np.minimum(below + 1, k * strata - 1)
    frac = pos - below
    out = np.empty((h, n, len(out_levels)), np.float64)
    step = max(1, POOLED_VALUES // (k * h * strata))
    for start in range(0, n, step):
        part = ext[:, :, start:start + step]  # [K, H, n', Q + 2]
        values = part[..., lo] * (1 - w) + part[..., hi] * w  # [K, H, n', strata]
        pooled = np.sort(np.moveaxis(values, 0, -2).reshape(h, part.shape[2], k * strata), axis=-1)
        out[:, start:start + step] = pooled[..., below] * (1 - frac) + pooled[..., above] * frac
    return out.astype(np.float32)


def _extended(quantiles: np.ndarray, levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Levels 0 and 1 added, with values on the lines through the two outermost quantiles at each end
    (the lower end floored at zero where the lowest quantile is >= 0: counts)."""
    slope_lo = (quantiles[..., 1] - quantiles[..., 0]) / (levels[1] - levels[0])
    slope_hi = (quantiles[..., -1] - quantiles[..., -2]) / (levels[-1] - levels[-2])
    bottom = quantiles[..., 0] - slope_lo * levels[0]
    bottom = np.where(quantiles[..., 0] >= 0, np.maximum(bottom, 0.0), bottom)
    top = quantiles[..., -1] + slope_hi * (1.0 - levels[-1])
    ext = np.concatenate([bottom[..., None], quantiles, top[..., None]], axis=-1)
    return np.concatenate([[0.0], levels, [1.0]]), ext
