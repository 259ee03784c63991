"""How EARS C1, C2 and C3 (``healthai counts --alerts``) trade false alarms for detection, side by side.

Simulated daily counts, as an emergency department's syndromic feed looks: per region a Poisson mean
of 2, 10 or 50 cases a day, weekends at 60 % (EARS ignores the weekday, so Mondays alarm more), 120
days. Half of the series carry one outbreak: from a random day in 60-110, five days of extra cases,
``k`` standard deviations of the baseline a day (k = 2 or 4, Poisson sd = sqrt(mean)). Printed per
method and baseline level: false alarms per region-day outside outbreaks, the share of outbreaks
with an alarm on one of their days, and the median day of the first alarm (1 = the outbreak's first).

    .venv/bin/python benchmarks/aberration.py --series 300
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from healthai.surveillance.aberration import METHODS, alerts

DAYS, OUTBREAK_DAYS = 120, 5


def simulate(rng: np.random.Generator, n: int, mean: float, k: float) -> tuple[pd.DataFrame, np.ndarray]:
    """[DAYS, n] counts and the outbreak's first day per series (-1: none)."""
    days = pd.date_range("2026-01-05", periods=DAYS, freq="D")  # a Monday
    weekday = np.where(days.day_of_week >= 5, 0.6, 1.0)[:, None]
    counts = rng.poisson(mean * weekday * np.ones((1, n))).astype(np.float64)
    start = np.where(rng.random(n) < 0.5, rng.integers(60, 110, n), -1)
    for j in np.flatnonzero(start >= 0):
        extra = rng.poisson(k * np.sqrt(mean), OUTBREAK_DAYS)
        counts[start[j]:start[j] + OUTBREAK_DAYS, j] += extra
    return pd.DataFrame(counts, index=days, columns=[f"r{j}" for j in range(n)]), start


def score(frame: pd.DataFrame, start: np.ndarray, method: str) -> tuple[float, float, float]:
    got = alerts(frame, method)
    alarm = got.pivot(index="period", columns="region", values="alarm")[frame.columns].to_numpy()
    first = DAYS - len(alarm)  # the first judged day
    day = np.arange(first, DAYS)[:, None]
    inside = (start[None, :] >= 0) & (day >= start[None, :]) & (day < start[None, :] + OUTBREAK_DAYS)
    false_rate = float(alarm[~inside].mean())
    hits, delays = 0, []
    for j in np.flatnonzero(start >= 0):
        rows = np.flatnonzero(alarm[:, j] & inside[:, j])
        if len(rows):
            hits += 1
            delays.append(rows[0] + first - start[j] + 1)
    outbreaks = int((start >= 0).sum())
    return false_rate, hits / max(outbreaks, 1), float(np.median(delays)) if delays else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=300, help="series per baseline level and outbreak size")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    print("| cases a day | outbreak (sd a day) | method | false alarms per region-day | outbreaks detected | "
          "median day of first alarm |")
    print("|---|---|---|---|---|---|")
    for mean in (2.0, 10.0, 50.0):
        for k in (2.0, 4.0):
            frame, start = simulate(rng, args.series, mean, k)
            for method in METHODS:
                false_rate, sensitivity, delay = score(frame, start, method)
                print(f"| {mean:g} | {k:g} | {method} | {false_rate:.3f} | {sensitivity:.2f} | {delay:g} |")


if __name__ == "__main__":
    main()
