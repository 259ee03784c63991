"""The experiment of ``nowcast_forecast.py``: draws of the final counts behind a nowcast, and the
quantiles of an equal-weight mixture of forecasts given by their quantiles (tried as the server's
answer to ``Forecast --stored --nowcast``, measured, and not adopted: see that benchmark).

Mixture: each forecast's quantile function is taken as piecewise linear through its levels, extended
linearly to levels 0 and 1 (not below zero when its lowest quantile is a count >= 0), and read at S
stratified levels (m + 0.5) / S; the pooled values' quantiles at the requested levels (Hazen's
plotting positions) are the mixture's. S is as many as ``POOLED_VALUES`` allows over every cell,
from ``MIN_STRATA`` to ``MAX_STRATA``.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import beta

from healthai.surveillance.nowcast import MIN_COMPLETENESS, Nowcast

MIN_STRATA, MAX_STRATA = 32, 256  # levels read per forecast: draws x strata pooled values per cell
POOLED_VALUES = 1 << 23  # pooled values over every cell (strata), and held at once (region chunks)


def final_count_draws(got: Nowcast, draws: int, rng: np.random.Generator, *, centred: bool = False
                      ) -> np.ndarray:
    """[draws, rows of ``got.table``]: samples of each period's final count, as the interval models it:
    observed + cases still to come ~ NB(count + 1, F). With ``interval="beta"`` F is drawn from
    Beta(n F, n (1 - F)) once per place and draw, so a place's periods share its F's error (an F
    estimated too high leaves every recent period short); a draw of F is floored at
    ``MIN_COMPLETENESS``, the least the point nowcast divides by. Mature rows are their counts.
    ``centred``: NB(count, F) instead (a prior ∝ 1 / N: its mean is the point nowcast, count / F)."""
    table = got.table
    count = table["count"].to_numpy(np.float64)
    out = np.repeat(count[None], draws, axis=0)
    f = table["completeness"].to_numpy(np.float64)
    open_ = np.flatnonzero(f < 1.0)
    if not len(open_):
        return out
    f_open = np.broadcast_to(f[open_], (draws, len(open_)))
    if got.interval == "beta" and got.evidence is not None:
        region = table["region"].to_numpy()[open_]
        n = got.evidence.reindex(region).to_numpy(np.float64)
        places, which = np.unique(region, return_inverse=True)
        u = rng.uniform(size=(draws, len(places)))[:, which]
        f_open = beta.ppf(u, n * f[open_], n * (1.0 - f[open_]))
    f_open = np.clip(f_open, MIN_COMPLETENESS, 1.0)
    r = np.broadcast_to(count[open_] + (0 if centred else 1), f_open.shape)
    out[:, open_] += np.where(r > 0, rng.negative_binomial(np.maximum(r, 1), f_open), 0)
    return out


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
