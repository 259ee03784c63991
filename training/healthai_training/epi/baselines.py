"""Baselines computed on exactly the evaluated target periods (``season`` periods per season).

- ``last_value``: the last observed period, ``y[i - h]``;
- ``lag52`` (lag one season): ``y[i - season]``;
- ``seasonal_mean_2x5``: mean of the periods ``i - k·season ± 2`` over the two previous seasons;
- ``seasonal_naive_drift``: lag one season plus the mean year-on-year change over the last observed
  season, ``y[i - season] + mean_{j<season}(y[t - j] - y[t - j - season])`` with ``t = i - h``.
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
    """Mean of periods ``i - season·k ± half_width`` over the ``seasons`` previous seasons."""
    offsets = np.array(
        [season * k + d for k in range(1, seasons + 1) for d in range(-half_width, half_width + 1)]
    )
    if np.any(targets - offsets.max() < 0):
        raise ValueError(f"targets need {offsets.max()} earlier periods for the seasonal mean")
    return series[targets[:, None] - offsets[None, :]].mean(axis=1)


def seasonal_naive_drift(
    series: np.ndarray, targets: np.ndarray, horizon: int, season: int = SEASON
) -> np.ndarray:
    """Lag one season plus the mean seasonal difference of the last observed season."""
    t = targets - horizon
    if np.any(t - 2 * season + 1 < 0):
        raise ValueError(f"targets need {2 * season + horizon - 1} earlier periods for the drift")
    idx = t[:, None] - np.arange(season)[None, :]
    drift = (series[idx] - series[idx - season]).mean(axis=1)
    return series[targets - season] + drift


def all_baselines(
    series: np.ndarray, targets: np.ndarray, horizon: int, *, season: int = SEASON
) -> dict[str, np.ndarray]:
    """Every baseline whose history reaches back far enough for all ``targets`` (short series lack some)."""
    first = int(targets.min()) if len(targets) else 0
    out = {"last_value": last_value(series, targets, horizon)} if first - horizon >= 0 else {}
    if first - season >= 0:
        out["lag52"] = lag52(series, targets, season)
    if first - 2 * season - 2 >= 0:
        out["seasonal_mean_2x5"] = seasonal_mean(series, targets, season=season)
    if first - horizon - 2 * season + 1 >= 0:
        out["seasonal_naive_drift"] = seasonal_naive_drift(series, targets, horizon, season)
    return out
