"""How much of the reporting-delay gap the chain-ladder nowcast closes, and where it does not.

For each scenario a store is filled with weekly influenza cases in four regions, each committed on the
day it "arrives" (onset + a delay drawn from the scenario's distribution). At several as-of Mondays the
latest weeks are nowcast (``healthai.surveillance.nowcast``) and compared with their final counts
(every case, whenever it arrives). Printed side by side per scenario: the mean absolute error of the
last ``--weeks`` weeks' counts as stored by then, and of their nowcast by four variants (``VARIANTS``:
one delay distribution pooled over places or each place's own, partially pooled; completeness from
the mature periods' shares or from development factors over the whole reporting triangle; the
interval with the completeness taken as known or with its estimation error; the last is the
default), the ratios, and how often each nowcast's 90 % interval held the final count.

Scenarios: ``fast`` (geometric, mean 3 days), ``slow`` (geometric, mean 9 days), ``weekday`` (nothing
stored on weekends: the Monday backlog), ``slowing`` (delays doubling over the season: the
chain ladder learns from older, faster periods, so it under-corrects), ``growing`` (an epidemic
doubling every six weeks, fast delays), ``regional`` (two regions' records arrive in 2 days on
average, the other two's in 12: one pooled distribution is wrong for both).

    .venv/bin/python benchmarks/nowcast.py --weeks 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from healthai.store import ParquetStore
from healthai.surveillance.nowcast import nowcast

TS = pa.timestamp("us", tz="UTC")
REGIONS = ("US-MA", "US-NY", "US-CA", "US-TX")
FIRST = dt.date(2025, 9, 1)  # a Monday
WEEKS = 30
VARIANTS = {  # name: (pooling, development, interval)
    "pooled, mature periods, F known (stop 32)": ("pooled", "mature", "known"),
    "per place, mature periods, F known": ("partial", "mature", "known"),
    "per place, triangle, F known": ("partial", "triangle", "known"),
    "per place, triangle, F's error (default)": ("partial", "triangle", "beta"),
}


def delays(name: str, rng: np.random.Generator, onset: np.ndarray, region: np.ndarray) -> np.ndarray:
    n = len(onset)
    if name == "regional":  # the first two regions fast (mean 2 days), the others slow (mean 12)
        mean = np.where(np.isin(region, REGIONS[:2]), 2.0, 12.0)
        return rng.geometric(1 / (mean + 1)) - 1
    if name == "fast" or name == "growing":
        return rng.geometric(1 / 4, n) - 1
    if name == "slow":
        return rng.geometric(1 / 10, n) - 1
    if name == "slowing":  # mean 3 days at the start, 12 at the end
        mean = 3 + 9 * (onset - onset.min()) / max(onset.max() - onset.min(), 1)
        return rng.geometric(1 / (mean + 1)) - 1
    if name == "weekday":
        base = rng.geometric(1 / 3, n) - 1
        arrive = onset + base
        weekday = (pd.Timestamp(FIRST).day_of_week + arrive) % 7
        return base + np.where(weekday >= 5, 7 - weekday, 0)  # a weekend arrival waits for Monday
    raise ValueError(name)


def fill(root: Path, name: str, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    per_day = np.full(7 * WEEKS, 30.0)
    if name == "growing":
        per_day = 10.0 * 2 ** (np.arange(7 * WEEKS) / 42)
    onset = np.repeat(np.arange(7 * WEEKS), rng.poisson(per_day))
    region = rng.choice(REGIONS, len(onset))
    delay = delays(name, rng, onset, region)
    cases = pd.DataFrame({"onset": onset, "stored": onset + delay, "region": region})
    store = ParquetStore(str(root)).open()
    for day, group in cases.groupby("stored"):
        n = len(group)
        keys = [f"c{i}" for i in group.index]
        days = [dt.datetime.combine(FIRST + dt.timedelta(days=int(d)), dt.time(9), dt.UTC)
                for d in group["onset"]]
        table = pa.table({"source": pa.array(["s"] * n), "record_key": pa.array(keys),
                          "patient_id": pa.array([f"p{i}" for i in group.index]),
                          "region": pa.array(group["region"].to_numpy()),
                          "icd10_code": pa.array(["J10.1"] * n),
                          "snomed_code": pa.array([None] * n, pa.string()),
                          "onset": pa.array(days, TS), "recorded": pa.array([None] * n, TS)})
        arrived = dt.datetime.combine(FIRST + dt.timedelta(days=int(day)), dt.time(12), dt.UTC)
        store.commit({"condition": table}, now=arrived)
    store.close()
    return cases


def score(root: Path, cases: pd.DataFrame, weeks: int, pooling: str, development: str, interval: str
          ) -> tuple[float, float, float, int]:
    """(MAE as stored by then, MAE of the nowcast, 90 % interval coverage, cells) of one variant."""
    final = cases.assign(week=cases["onset"] // 7).groupby(["week", "region"]).size()
    store = ParquetStore(str(root)).open()
    errors_observed, errors_nowcast, covered = [], [], []
    try:
        for as_of_week in range(16, WEEKS, 2):
            as_of = FIRST + dt.timedelta(weeks=as_of_week)
            table = nowcast(store, as_of=as_of, pooling=pooling, development=development,
                            interval=interval).table
            table = table.assign(week=(pd.to_datetime(table["period"]) - pd.Timestamp(FIRST)).dt.days // 7)
            last = table[table["week"] >= as_of_week - weeks]
            cells = list(zip(last["week"], last["region"], strict=True))
            truth = final.reindex(cells, fill_value=0).to_numpy()
            errors_observed.extend(np.abs(last["count"].to_numpy() - truth))
            errors_nowcast.extend(np.abs(last["nowcast"].to_numpy() - truth))
            lo, hi = last["nowcast_q05"].to_numpy(), last["nowcast_q95"].to_numpy()
            covered.extend((lo <= truth) & (truth <= hi))
    finally:
        store.close()
    return (float(np.mean(errors_observed)), float(np.mean(errors_nowcast)), float(np.mean(covered)),
            len(covered))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weeks", type=int, default=3, help="the latest weeks scored at each as-of date")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    names = " | ".join(VARIANTS)
    print(f"| scenario | cells | MAE stored by then | MAE: {names} | MAE / stored: {names} | "
          f"90 % coverage: {names} |")
    print("|---|---|---|---|---|---|")
    for name in ("fast", "slow", "weekday", "slowing", "growing", "regional"):
        with tempfile.TemporaryDirectory() as tmp:
            cases = fill(Path(tmp) / "store", name, args.seed)
            got = [score(Path(tmp) / "store", cases, args.weeks, *v) for v in VARIANTS.values()]
        observed, cells = got[0][0], got[0][3]
        mae = " / ".join(f"{g[1]:.2f}" for g in got)
        ratio = " / ".join(f"{g[1] / observed:.2f}" for g in got)
        cover = " / ".join(f"{g[2]:.2f}" for g in got)
        print(f"| {name} | {cells} | {observed:.2f} | {mae} | {ratio} | {cover} |")

if __name__ == "__main__":
    main()
