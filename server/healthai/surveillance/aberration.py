"""Aberration detection on surveillance counts: the CDC's EARS C1, C2 and C3 (``healthai counts --alerts``).

Each region's count in a period is compared with its own recent past (Hutwagner et al., "The
bioterrorism preparedness and response Early Aberration Reporting System (EARS)", J Urban Health
2003; ``surveillance::earsC`` in R):

- **C1**: the baseline is the ``BASELINE`` (7) periods just before; the statistic is
  (count − mean) / sd of the baseline; an alarm when it is at least ``threshold`` (3).
- **C2**: the same with a two-period guard band: the baseline ends two periods earlier, so an
  outbreak's first days do not raise the baseline that judges the next ones.
- **C3**: the sum over the period and the two before of max(0, C2 statistic − 1); an alarm when it is
  at least ``threshold`` (2).

EARS was designed for daily counts with little history; weekly counts work the same way. A baseline
sd below ``MIN_SD`` (one case) is raised to it: a sparse series with a constant baseline would
otherwise alarm on any case (``earsC``'s ``minSigma``; our choice of value, not fitted to any data).
Each row also carries the count from which an alarm is raised (``upper_bound``; 0 when C3's two
periods before already add up to the threshold). Periods without a full baseline are left out.
Counts are taken as given: run it on nowcasts to judge the latest periods, whose records are not all
stored yet (``healthai counts --alerts C2 --nowcast``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from healthai.errors import InvalidInput

METHODS = ("C1", "C2", "C3")
BASELINE = 7  # periods in the baseline
GUARD = {"C1": 0, "C2": 2, "C3": 2}  # periods between the baseline and the period judged
THRESHOLD = {"C1": 3.0, "C2": 3.0, "C3": 2.0}
MIN_SD = 1.0  # cases: the floor of the baseline's standard deviation
C3_TERMS = 3  # the period and the two before


def alerts(counts: pd.DataFrame, method: str = "C2", threshold: float | None = None) -> pd.DataFrame:
    """``counts``: period × region (a ``SurveillanceCounts.counts`` frame, or nowcasts in that shape) →
    long rows ``region, period, count, expected, sd, statistic, upper_bound, alarm`` for every period
    with a full baseline (C1: from the 8th, C2: the 10th, C3: the 12th)."""
    if method not in METHODS:
        raise InvalidInput(f"method {method!r} is not one of {', '.join(METHODS)}", field="method")
    limit = THRESHOLD[method] if threshold is None else float(threshold)
    if not np.isfinite(limit) or limit <= 0:
        raise InvalidInput(f"threshold must be a positive number, got {threshold}", field="threshold")
    values = counts.to_numpy(np.float64)
    if not np.isfinite(values).all():
        raise InvalidInput("counts: not every count is a finite number", field="counts")
    lag = GUARD[method] + 1  # the baseline ends this many periods before the one judged
    mean, sd = _baseline(values, lag)
    statistic = (values - mean) / sd
    upper = mean + limit * sd
    first = BASELINE + lag - 1  # the first period with a full baseline
    if method == "C3":
        terms = np.maximum(statistic - 1.0, 0.0)
        earlier = sum(np.roll(terms, k, axis=0) for k in range(1, C3_TERMS))  # the two periods before
        statistic = terms + earlier
        upper = np.where(earlier >= limit, 0.0, mean + sd * (1.0 + limit - earlier))  # makes C3 = limit
        first += C3_TERMS - 1
    if len(values) <= first:
        return _long(counts.iloc[:0], *(np.zeros((0, values.shape[1])),) * 4, limit)
    rows = slice(first, None)
    return _long(counts.iloc[rows], mean[rows], sd[rows], statistic[rows], upper[rows], limit)


def _baseline(values: np.ndarray, lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sd (ddof 1, floored at ``MIN_SD``) of the ``BASELINE`` periods ending ``lag`` periods
    before each period; NaN where the series is too short."""
    n = len(values)
    mean = np.full(values.shape, np.nan)
    sd = np.full(values.shape, np.nan)
    if n >= BASELINE + lag:
        windows = np.lib.stride_tricks.sliding_window_view(values, BASELINE, axis=0)  # [n - B + 1, N, B]
        judged = slice(BASELINE + lag - 1, n)
        past = windows[: n - BASELINE - lag + 1]
        mean[judged] = past.mean(axis=-1)
        sd[judged] = np.maximum(past.std(axis=-1, ddof=1), MIN_SD)
    return mean, sd


def _long(frame: pd.DataFrame, mean: np.ndarray, sd: np.ndarray, statistic: np.ndarray, upper: np.ndarray,
          limit: float) -> pd.DataFrame:
    regions = [str(c) for c in frame.columns]
    periods = pd.DatetimeIndex(frame.index)
    out = pd.DataFrame({
        "region": np.repeat(np.array(regions, dtype=object), len(periods)),
        "period": np.tile(periods.date.astype(str), len(regions)),
        "count": frame.to_numpy(np.float64).T.ravel(),
        "expected": mean.T.ravel().round(3),
        "sd": sd.T.ravel().round(3),
        "statistic": statistic.T.ravel().round(3),
        "upper_bound": upper.T.ravel().round(3),
    })
    out["alarm"] = out["statistic"] >= limit
    return out
