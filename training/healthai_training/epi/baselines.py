"""Baselines computed on exactly the evaluated target periods (``season`` periods per season).

- ``last_value``: the last observed period, ``y[i - h]``;
- ``lag52`` (lag one season): ``y[i - season]``;
- ``seasonal_mean_2x5``: mean of the periods ``i - k·season ± 2`` over the two previous seasons
  (over the one previous season where only one is observed);
- ``seasonal_naive_drift``: lag one season plus the drift of the seasonal random walk, i.e. the mean
  of every observed seasonal difference ``y[s] - y[s - season]``, ``s <= t = i - h``.
"""

from __future__ import annotations

import numpy as np

SEASON = 52


def last_value(series: np.ndarray, targets: np.ndarray, horizon: int) -> np.ndarray:
    """The last observed period before the forecast: ``y[i - h]``."""
    return series[targets - horizon]


def lag52(series: np.ndarray, targets: np.ndarray, season: int = SEASON) -> np.ndarray:
    """Same period last season: ``y[i - season]`` (horizon-free for h <= season)."""
    return series[targets - season]


def seasonal_mean(
    series: np.ndarray, targets: np.ndarray, *, seasons: int = 2, half_width: int = 2, season: int = SEASON
) -> np.ndarray:
    """Mean of periods ``i - season·k ± half_width`` over up to ``seasons`` previous seasons (those
    observed; at least one)."""
    if np.any(targets - season - half_width < 0):
        raise ValueError(f"targets need {season + half_width} earlier periods for the seasonal mean")
    x = series.reshape(len(series), -1)  # [T, N]
    total, count = np.zeros((len(targets), x.shape[1])), np.zeros((len(targets), 1))
    for k in range(1, seasons + 1):
        ok = (targets - season * k - half_width >= 0)[:, None]
        for d in range(-half_width, half_width + 1):
            total += np.where(ok, x[np.where(ok[:, 0], targets - season * k + d, 0)], 0.0)
            count += ok
    return (total / count).reshape(len(targets), *series.shape[1:])


def seasonal_naive_drift(
    series: np.ndarray, targets: np.ndarray, horizon: int, season: int = SEASON
) -> np.ndarray:
    """Lag one season plus the mean of all seasonal differences observed up to ``t = i - h``."""
    t = targets - horizon
    if np.any(t - season < 0) or np.any(targets - season < 0):
        raise ValueError(f"targets need {season + horizon} earlier periods for the drift")
    diffs = series[season:] - series[:-season]  # diffs[s - season] = y[s] - y[s - season]
    csum = np.cumsum(diffs, axis=0)
    drift = csum[t - season] / (t - season + 1)[:, None]
    return series[targets - season] + drift


def all_baselines(
    series: np.ndarray, targets: np.ndarray, horizon: int, *, season: int = SEASON
) -> dict[str, np.ndarray]:
    """Every baseline whose history reaches back far enough for all ``targets`` (short series lack some)."""
    first = int(targets.min()) if len(targets) else 0
    out = {"last_value": last_value(series, targets, horizon)} if first - horizon >= 0 else {}
    if first - season >= 0:
        out["lag52"] = lag52(series, targets, season)
    if first - season - 2 >= 0:
        out["seasonal_mean_2x5"] = seasonal_mean(series, targets, season=season)
    if first - horizon - season >= 0:
        out["seasonal_naive_drift"] = seasonal_naive_drift(series, targets, horizon, season)
    return out
