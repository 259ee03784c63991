"""Continual private releases: a named stream releases each period once, as it ends, with each
patient's contribution bounded over the whole calendar year, so a year of weekly releases costs
epsilon once (per patient and calendar year) instead of once per release.

A stream is defined once (``privacy/streams/<name>.json``, created exclusively): syndrome, step,
level, week start, places, epsilon and the bound C. Each call releases the periods that have ended
since its last release (never one twice):

1. *Bound over the year.* A patient counts at most once per place and day, and on at most C place-days
   in all the stream's periods of a calendar year (the year a period starts in): the place-days
   earlier releases counted are recorded with them (``contributions``: pseudonym, year and how many,
   internal to the store), and a new release keeps at most C minus those, drawn at random.
2. *Noise.* Discrete Laplace of scale C / epsilon on every new cell (OpenDP, as ``release``).

Removing one patient then moves all of a year's cells, over every release, by at most C in L1:
those cells together are one Laplace release, epsilon-DP per patient, however many calls released
them. The ledger charges epsilon on the first release that reaches a calendar year and 0 on the
others (``epsilon_charged``); a patient with cases in k years has k x epsilon, and the ledger's total
is that worst case. Records that arrive after their period was released are never counted.

Each call claims the next ledger number exclusively; a call that loses it (another release came first)
reads the ledger again and recomputes, so two calls at once cannot release a period twice or pass the
bound. Needs a store with exclusive create (local or S3).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
import uuid
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from healthai.errors import InvalidInput
from healthai.store import ParquetStore
from healthai.surveillance import release as dp_release
from healthai.surveillance.counts import (
    SurveillanceCounts,
    daily_counts,
    period_start,
    period_table,
    week_day,
)

STREAM_DIR = f"{dp_release.LEDGER_DIR}/streams"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_TRIES = 20


@dataclass(frozen=True)
class StreamSpec:
    name: str
    syndrome: str
    step: str
    level: str
    week_start: str
    places: tuple[str, ...]
    epsilon: float  # per patient and calendar year
    max_cases_per_patient: int  # place-days per patient and calendar year, over all releases
    start: str  # ISO date: the first period's start


@dataclass(frozen=True)
class StreamRelease:
    release: dp_release.Release  # the new periods' noisy counts
    charged: float  # epsilon this release added to the ledger
    years: tuple[int, ...]
    path: str  # its ledger entry
    text: str


def define(store: ParquetStore, *, name: str, syndrome: str, step: str, level: str, week_start: str,
           places: list[str] | None, epsilon: float, max_cases_per_patient: int, start: str) -> StreamSpec:
    """The stream ``name``: created with these settings, or checked against its stored definition
    (a stream's definition never changes; InvalidInput naming the setting that differs)."""
    if not _NAME.match(name or ""):
        raise InvalidInput(f"stream {name!r}: use 1-64 letters, digits, '.', '_' or '-'", field="stream")
    dp_release._check(epsilon, max_cases_per_patient, start, start)
    first = period_start(start, step, week_start, "start")
    spec = StreamSpec(name, syndrome, step, level, week_start, tuple(dp_release._places(places, level)),
                      float(epsilon), int(max_cases_per_patient), first.date().isoformat())
    rel = f"{STREAM_DIR}/{name}.json"
    body = json.dumps(asdict(spec), indent=1).encode()
    created = store.create_exclusive(rel, body)
    if created is None:
        raise InvalidInput("stream: continual releases need a store with exclusive create (a local folder "
                           "or S3)", field="stream")
    if created:
        return spec
    with store.filesystem.open_input_stream(f"{store.root}/{rel}") as f:
        stored = json.loads(f.read())
    for key, value in asdict(spec).items():
        if stored[key] != (list(value) if isinstance(value, tuple) else value):
            raise InvalidInput(f"{key}: stream {name!r} was defined with {key} = {stored[key]!r}, not "
                               f"{value!r}; a stream's definition does not change (start another stream)",
                               field=key)
    return spec


def release_new_periods(counts: SurveillanceCounts, store: ParquetStore, spec: StreamSpec, *,
                        completed_by: dt.date, end: str | None = None, nonnegative: bool = True,
                        budget: float | None = None, what: dict | None = None) -> StreamRelease | None:
    """Release the stream's periods that have ended (by ``completed_by``; up to ``end``) and were not
    released yet, recorded in the ledger; None when there is none."""
    for _ in range(MAX_TRIES):
        found = dp_release.entries(store)
        mine = [e for _, e in found if e.get("stream") == spec.name]
        new = _new_periods(spec, mine, completed_by, end)
        if not len(new):
            return None
        kept, beyond, unattributed, contributions = _bounded_cases(counts, store, spec, mine, new)
        last_day = new[-1] + pd.Timedelta(days=6 if spec.step == "W" else 0)
        exact = period_table(daily_counts(kept, ["place"]), spec.step, new[0], last_day, list(spec.places),
                             completed_by, spec.week_start)
        scale = spec.max_cases_per_patient / spec.epsilon
        noisy, eps = dp_release._noise(exact.to_numpy(dtype="int64"), scale, spec.max_cases_per_patient)
        frame = pd.DataFrame(np.maximum(noisy, 0) if nonnegative else noisy, index=exact.index,
                             columns=exact.columns)
        years = sorted({int(p.year) for p in new})
        charged_years = {y for e in mine for y in e.get("years_charged", [])}
        new_years = [y for y in years if y not in charged_years]
        out = dp_release.Release(frame=frame, epsilon=eps, max_cases_per_patient=spec.max_cases_per_patient,
                                 scale=scale, nonnegative=nonnegative, left_out_by_bound=beyond,
                                 unattributed=unattributed)
        name = f"contributions-{uuid.uuid4().hex}.parquet"
        _write_contributions(store, name, contributions)
        entry = {**(what or {}), "stream": spec.name, "syndrome": spec.syndrome, "step": spec.step,
                 "level": spec.level, "week_start": spec.week_start, "by_age": False,
                 "complete_periods": True,
                 "periods": [str(p.date()) for p in new], "years": years, "years_charged": new_years,
                 "guarantee": "epsilon-DP per patient for each calendar year of the stream's periods "
                              "(all its releases together); a patient with cases in k years: k x epsilon",
                 "contributions": name}
        try:
            done = dp_release.record(store, out, entry, budget=budget, charged=eps * len(new_years),
                                     number=dp_release.last_number(found) + 1)
        except InvalidInput:
            store.filesystem.delete_file(f"{store.root}/{STREAM_DIR}/{name}")
            raise
        if done is not None:
            return StreamRelease(out, eps * len(new_years), tuple(years), *done)
        store.filesystem.delete_file(f"{store.root}/{STREAM_DIR}/{name}")  # another release came first
    raise RuntimeError(f"stream {spec.name!r}: the ledger kept changing; {MAX_TRIES} tries")


def _new_periods(spec: StreamSpec, mine: list[dict], completed_by: dt.date, end: str | None
                 ) -> pd.DatetimeIndex:
    """Ended periods after the stream's last released one (from its start), up to ``end``'s period."""
    length = pd.Timedelta(days=7 if spec.step == "W" else 1)
    released = [pd.Timestamp(p) for e in mine for p in e.get("periods", [])]
    first = max(released) + length if released else pd.Timestamp(spec.start)
    today = pd.Timestamp(completed_by)
    last = period_start(end, spec.step, spec.week_start, "end") if end is not None else \
        period_start(today, spec.step, spec.week_start) - length  # the last period that has ended
    if last + length > today:
        raise InvalidInput(f"end: the period of {end} has not ended (today is {today.date()}); its counts "
                           "would be partial", field="end")
    return pd.date_range(first, last, freq=length) if last >= first else pd.DatetimeIndex([])


def _bounded_cases(counts: SurveillanceCounts, store: ParquetStore, spec: StreamSpec, mine: list[dict],
                   new: pd.DatetimeIndex) -> tuple[pd.DataFrame, int, int, pd.DataFrame]:
    """The new periods' distinct place-days per patient, each patient and year kept to what the bound
    leaves after earlier releases; how many were left out by it and without a patient; and what this
    release counts per (patient, year)."""
    distinct, unattributed = dp_release.distinct_cases(counts.cases(spec.syndrome, spec.level), spec.places,
                                                       new, spec.step)
    day = pd.to_datetime(distinct["day"])
    if spec.step == "W":  # the year of the period the day falls in
        day = day - pd.to_timedelta((day.dt.day_of_week - week_day(spec.week_start)) % 7, unit="D")
    distinct = distinct.assign(year=day.dt.year.to_numpy())
    used = _used(store, mine)
    rng = np.random.default_rng(secrets.randbits(128))
    shuffled = distinct.iloc[rng.permutation(len(distinct))]
    rank = shuffled.groupby(["patient_id", "year"], sort=False).cumcount().to_numpy()
    before = used.reindex(pd.MultiIndex.from_frame(shuffled[["patient_id", "year"]])).fillna(0).to_numpy()
    keep = rank < spec.max_cases_per_patient - before
    kept = shuffled[keep]
    counted = kept.groupby(["patient_id", "year"]).size().rename("n").reset_index()
    return kept, int((~keep).sum()), unattributed, counted


def _used(store: ParquetStore, mine: list[dict]) -> pd.Series:
    """Place-days the stream's earlier releases counted, per (patient, year)."""
    parts = [pq.read_table(f"{store.root}/{STREAM_DIR}/{e['contributions']}", filesystem=store.filesystem)
             .to_pandas() for e in mine if e.get("contributions")]
    if not parts:
        empty = pd.MultiIndex.from_arrays([[], []], names=["patient_id", "year"])
        return pd.Series(dtype="int64", index=empty)
    return pd.concat(parts).groupby(["patient_id", "year"])["n"].sum()


def _write_contributions(store: ParquetStore, name: str, counted: pd.DataFrame) -> None:
    table = pa.table({"patient_id": pa.array(counted["patient_id"].astype(str).tolist(), pa.string()),
                      "year": pa.array(counted["year"].astype("int64").tolist(), pa.int64()),
                      "n": pa.array(counted["n"].astype("int64").tolist(), pa.int64())})
    store.filesystem.create_dir(f"{store.root}/{STREAM_DIR}", recursive=True)
    pq.write_table(table, f"{store.root}/{STREAM_DIR}/{name}", filesystem=store.filesystem)

