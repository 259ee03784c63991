"""Seasonal baselines computed on exactly the benchmark's test weeks."""

from __future__ import annotations

import numpy as np

SEASON = 52


def last_value(series: np.ndarray, targets: np.ndarray, horizon: int) -> np.ndarray:
    """The last observed week before the forecast: ``y[i - h]``."""
    return series[targets - horizon]


def lag52(series: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Same week last year: ``y[i - 52]`` (needs no recent data, so it is horizon-free for h <= 52)."""
    return series[targets - SEASON]


def seasonal_mean(
    series: np.ndarray, targets: np.ndarray, *, seasons: int = 2, half_width: int = 2
) -> np.ndarray:
    """Mean of weeks ``i - 52k ± half_width`` over the ``seasons`` previous seasons."""
    offsets = np.array(
        [SEASON * k + d for k in range(1, seasons + 1) for d in range(-half_width, half_width + 1)]
    )
    if np.any(targets - offsets.max() < 0):
        raise ValueError(f"targets need {offsets.max()} earlier weeks for the seasonal mean")
    return series[targets[:, None] - offsets[None, :]].mean(axis=1)


def all_baselines(series: np.ndarray, targets: np.ndarray, horizon: int) -> dict[str, np.ndarray]:
    return {
        "lag52": lag52(series, targets),
        "seasonal_mean_2x5": seasonal_mean(series, targets),
        "last_value": last_value(series, targets, horizon),
    }
