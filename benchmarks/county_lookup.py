"""What deriving US counties costs the flat ingest path: the same 200,000 condition rows normalized
with a state only, with a state and a ZIP code (a random US ZIP code per row: the worst case, ~40,000
distinct codes), and with a county name, side by side in one run (median of 3 each).

    .venv/bin/python benchmarks/county_lookup.py [--rows N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import time

import pyarrow as pa
import zipcodes

from healthai.normalize.context import NormalizeContext
from healthai.normalize.flat import normalize_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    n = parser.parse_args().rows
    ctx = NormalizeContext.create(key=b"k" * 32, reference_date=dt.date(2026, 1, 1))  # loads the tables
    rng = random.Random(0)
    places = [z for z in zipcodes.list_all() if z["county"]]
    rows = [rng.choice(places) for _ in range(n)]
    base = {"condition_id": [f"c{i}" for i in range(n)], "patient_id": [f"p{i}" for i in range(n)],
            "code": ["J10.1"] * n, "onset": ["2024-01-09T20:30:00-05:00"] * n,
            "state": [z["state"] for z in rows]}
    variants = {
        "state only": {},
        "state + ZIP code": {"postal_code": [z["zip_code"] for z in rows]},
        "state + county name": {"county": [z["county"] for z in rows]},
    }
    results = {}
    for label, extra in variants.items():
        table = pa.table(base | extra)
        normalize_table("condition", table.slice(0, 1000), ctx=ctx, source="s")  # warm-up
        times = []
        for _ in range(3):
            start = time.perf_counter()
            out = normalize_table("condition", table, ctx=ctx, source="s")
            times.append(time.perf_counter() - start)
        found = n - out.tables["condition"]["county"].null_count
        results[label] = (statistics.median(times), found)
    ref = results["state only"][0]
    print(f"| input ({n:,} condition rows) | seconds (median of 3) | vs state only | rows with a county |")
    print("|---|---:|---:|---:|")
    for label, (sec, found) in results.items():
        print(f"| {label} | {sec:.2f} | {sec / ref:.2f}x | {found:,} |")


if __name__ == "__main__":
    main()
