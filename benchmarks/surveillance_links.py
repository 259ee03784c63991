"""What it costs surveillance to count a bulk export: conditions stored without their patient's region.

Two stores with the same cases, side by side:

- ``inline``: each condition row carries its region and onset (a bundle per patient);
- ``bulk``: conditions carry neither (Condition.ndjson before Patient.ndjson and Encounter.ndjson):
  regions come from the stored patients, days from the stored encounters
  (:mod:`healthai.surveillance.links`).

Times the first query (every file read), a query after one more commit of ``--increment`` conditions
(only the new files read), and checks that both stores give the same counts.

    .venv/bin/python benchmarks/surveillance_links.py --patients 200000 --conditions 400000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from healthai.store import ParquetStore
from healthai.surveillance import SurveillanceCounts

TS = pa.timestamp("us", tz="UTC")
REGIONS = np.array([f"US-{s}" for s in ("MA", "NY", "CA", "TX", "WA", "IL", "GA", "FL")])


def rows(rng: np.random.Generator, n: int, n_patients: int, first: int) -> dict[str, np.ndarray]:
    patient = rng.integers(0, n_patients, n)
    day = np.datetime64("2024-01-01T00:00:00", "us") + rng.integers(0, 365 * 24, n) * np.timedelta64(1, "h")
    return {"key": np.array([f"c{first + i}" for i in range(n)]), "patient": patient, "day": day,
            "encounter": np.array([f"e{first + i}" for i in range(n)])}


def conditions(r: dict[str, np.ndarray], inline: bool) -> pa.Table:
    n = len(r["key"])
    patient_ids = np.char.add("p", r["patient"].astype(str))
    return pa.table({
        "source": pa.array(["s"] * n), "record_key": pa.array(r["key"]), "resource_id": pa.array(r["key"]),
        "patient_id": pa.array(patient_ids), "encounter_id": pa.array(r["encounter"]),
        "region": pa.array(REGIONS[r["patient"] % len(REGIONS)] if inline else [None] * n, pa.string()),
        "icd10_code": pa.array(["J10.1"] * n),
        "onset": pa.array(r["day"] if inline else [None] * n, TS),
        "recorded": pa.array([None] * n, TS),
    })


def linked(r: dict[str, np.ndarray], n_patients: int) -> dict[str, pa.Table]:
    ids = np.char.add("p", np.arange(n_patients).astype(str))
    patients = pa.table({"source": ["s"] * n_patients, "record_key": ids, "resource_id": ids,
                         "patient_id": ids, "region": REGIONS[np.arange(n_patients) % len(REGIONS)]})
    n = len(r["key"])
    encounters = pa.table({"source": ["s"] * n, "record_key": r["encounter"], "resource_id": r["encounter"],
                           "region": pa.array([None] * n, pa.string()), "start": pa.array(r["day"], TS)})
    return {"patient": patients, "encounter": encounters}


def timed(fn: Callable[[], pd.DataFrame]) -> tuple[pd.DataFrame, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--patients", type=int, default=200_000)
    ap.add_argument("--conditions", type=int, default=400_000)
    ap.add_argument("--increment", type=int, default=10_000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    base = rows(rng, args.conditions, args.patients, 0)
    more = rows(rng, args.increment, args.patients, args.conditions)
    results, frames = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("inline", "bulk"):
            store = ParquetStore(str(Path(tmp) / mode)).open()
            store.commit({"condition": conditions(base, mode == "inline")})
            if mode == "bulk":
                store.commit(linked(base, args.patients))
            counts = SurveillanceCounts(store)
            _, t_first = timed(lambda c=counts: c.counts("ili", "D"))
            store.commit({"condition": conditions(more, mode == "inline")})
            if mode == "bulk":
                store.commit({"encounter": linked(more, args.patients)["encounter"]})
            after, t_next = timed(lambda c=counts: c.counts("ili", "D"))
            results[mode] = (t_first, t_next, counts.uncounted("ili"))
            frames[mode] = after
            store.close()
    same = frames["inline"].equals(frames["bulk"])
    print(f"{args.conditions:,} ILI conditions, {args.patients:,} patients; "
          f"+{args.increment:,} after a commit")
    print("| store | first query (s) | after one commit (s) | uncounted |")
    print("|---|---:|---:|---:|")
    for mode, (a, b, u) in results.items():
        print(f"| {mode} | {a:.2f} | {b:.2f} | {u} |")
    ratio = [results["bulk"][i] / results["inline"][i] for i in (0, 1)]
    print(f"| bulk / inline | {ratio[0]:.2f}x | {ratio[1]:.2f}x | |")
    print(f"same counts: {same}")


if __name__ == "__main__":
    main()
