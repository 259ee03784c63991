"""What differential privacy per patient costs the surveillance counts (``healthai counts --epsilon``)
and the forecaster trained on them (``train forecast --from-store --count-epsilon``), side by side in
one run.

    .venv/bin/python benchmarks/private_counts.py [--cases N] [--forecast]

1. *Counts* (always): N influenza cases (flat condition rows, a random US county and day of 2025 each;
   a tenth of the patients have two to six case-days) normalized into a real Parquet store. Time of
   ``counts()`` and of ``private_counts()`` at ε = 1 (median of 3, after a first query that reads the
   store), and the noise's size: mean absolute error per cell and on the national weekly total.
2. *Forecaster* (``--forecast``, ~15 min on 2 cores): the us_states dev series (weekly ILI counts per
   state) with the release's noise added, negatives kept as ``--count-epsilon`` does (scale C / ε,
   C = 4; each count taken as one patient-day,
   so the bound's own loss is not simulated), the default forecaster (stack, the settings ``train
   forecast --series`` uses, seed 0) trained on it, scored on the exact test counts: fed the exact
   recent counts (what ``Forecast --stored`` does) and fed noisy ones (a fully private pipeline).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import zipcodes

from healthai.normalize.context import NormalizeContext
from healthai.normalize.flat import normalize_table
from healthai.store import ParquetStore
from healthai.surveillance import SurveillanceCounts
from healthai.surveillance.release import private_counts

YEAR = {"start": "2024-12-30", "end": "2025-12-28"}  # 52 ISO weeks
HORIZONS = (2, 3, 5, 10, 15)


def _store(root: str, n: int) -> ParquetStore:
    rng = np.random.default_rng(0)
    places = [z for z in zipcodes.list_all() if z["county"]]
    patients = int(n / 1.3)
    extra = rng.choice(patients, size=n - patients)  # repeat case-days of some patients
    pid = np.concatenate([np.arange(patients), extra])
    zips = [places[i] for i in rng.integers(0, len(places), size=patients)]
    days = dt.date(2025, 1, 1) + np.array([dt.timedelta(days=int(d)) for d in rng.integers(0, 360, size=n)])
    table = pa.table({"condition_id": [f"c{i}" for i in range(n)], "patient_id": [f"p{p}" for p in pid],
                      "code": ["J10.1"] * n, "onset": [f"{d.isoformat()}T10:00:00-05:00" for d in days],
                      "state": [zips[p]["state"] for p in pid],
                      "postal_code": [zips[p]["zip_code"] for p in pid]})
    ctx = NormalizeContext.create(key=b"k" * 32, reference_date=dt.date(2026, 1, 1))
    store = ParquetStore(root).open()
    for lo in range(0, n, 50_000):
        out = normalize_table("condition", table.slice(lo, 50_000), ctx=ctx, source="s")
        store.commit({k: t for k, t in out.tables.items() if t.num_rows})
    return store


def _timed(fn, repeats: int = 3) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def counts_part(n: int) -> None:
    with tempfile.TemporaryDirectory() as root:
        store = _store(root, n)
        counts = SurveillanceCounts(store)
        counts.counts("ili", "W", level="county", **YEAR)  # reads the store once
        t_exact, exact = _timed(lambda: counts.counts("ili", "W", level="county", **YEAR))
        print(f"{n:,} cases; county x week cells: {exact.size:,}\n")
        print("| query | seconds (median of 3) | vs exact | mean abs. error per cell | national weekly "
              "total: mean abs. error | cases beyond the bound |")
        print("|---|---:|---:|---:|---:|---:|")
        print(f"| exact counts | {t_exact:.2f} | 1.00x | 0 | 0 | |")
        exact = exact.reindex(columns=sorted(set(exact.columns)))
        for eps in (1.0, 0.25):
            t, rel = _timed(lambda eps=eps: private_counts(counts, epsilon=eps, level="county", freq="W",
                                                           **YEAR))
            noisy = rel.frame.reindex(columns=exact.columns)  # counties with cases (the rest: noise only)
            cell = float(np.abs(noisy.to_numpy() - exact.to_numpy()).mean())
            total = float(np.abs(rel.frame.sum(axis=1).to_numpy() - exact.sum(axis=1).to_numpy()).mean())
            print(f"| private, ε = {eps:g}, C = 4 (clamped at 0) | {t:.2f} | {t / t_exact:.2f}x | "
                  f"{cell:.2f} | "
                  f"{total:,.0f} (of {exact.sum(axis=1).mean():,.0f}) | {rel.left_out_by_bound:,} |")


def forecast_part() -> None:
    from healthai_training.epi import data as epi_data
    from healthai_training.forecast.default import test_metrics, train_default
    from healthai_training.forecast.train import ForecastConfig
    from healthai_training.report import forecast_defaults

    data = epi_data.load_epi("us_states", data_root=Path(__file__).resolve().parents[2] / "shared" / "data")
    cfg = ForecastConfig(seasonal=True, **forecast_defaults("custom", "seasonal"), season=data.season, seed=0)
    rng = np.random.default_rng(1)
    rows = []
    for eps in (None, 2.0, 1.0, 0.5):
        series = data.series
        if eps is not None:  # discrete Laplace(4 / eps) = difference of two geometric variables
            p = 1 - np.exp(-eps / 4)
            noise = rng.geometric(p, size=series.shape) - rng.geometric(p, size=series.shape)
            series = series + noise  # unbiased, negatives kept: what --count-epsilon trains on
        noisy = epi_data.EpiData(**{**data.__dict__, "series": series,
                                    "report": {**data.report, "negatives_kept": True}})
        start = time.perf_counter()
        d = train_default(noisy, cfg)
        levels = np.asarray(d.final.model.quantiles)
        exact_in = test_metrics(d.model, d.final, data.series, cfg.horizons, levels)
        noisy_in = test_metrics(d.model, d.final, data.series, cfg.horizons, levels, inputs=series)
        rows.append((eps, exact_in, noisy_in, time.perf_counter() - start))
    print("\n| training counts | inputs | " + " | ".join(f"RMSE h={h}" for h in HORIZONS) + " | "
          + " | ".join(f"WIS h={h}" for h in HORIZONS) + " |")
    print("|---|---|" + "---:|" * (2 * len(HORIZONS)))
    for eps, exact_in, noisy_in, _ in rows:
        label = "exact" if eps is None else f"ε = {eps:g} per patient (C = 4)"
        fed = (("exact", exact_in), ("noisy", noisy_in)) if eps is not None else (("exact", exact_in),)
        for name, m in fed:
            cells = [f"{m[str(h)][k]:.1f}" for k in ("rmse", "wis") for h in HORIZONS]
            print(f"| {label} | {name} | " + " | ".join(cells) + " |")
    base = rows[0][1]
    print("\nbest baseline RMSE: " + ", ".join(
        f"h={h} {min(v['rmse'] for v in base[str(h)]['baselines'].values()):.1f}" for h in HORIZONS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=200_000)
    parser.add_argument("--forecast", action="store_true", help="also the forecaster part (~15 min)")
    parser.add_argument("--forecast-only", action="store_true", help="only the forecaster part")
    args = parser.parse_args()
    if not args.forecast_only:
        counts_part(args.cases)
    if args.forecast or args.forecast_only:
        forecast_part()


if __name__ == "__main__":
    main()
