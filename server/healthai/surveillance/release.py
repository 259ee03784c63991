"""Differentially private surveillance counts: what a store's counts may show of any one patient.

    release = private_counts(SurveillanceCounts(store), epsilon=1.0, regions=["US-MA", "US-NH"],
                             start="2024-01-01", end="2024-12-29", freq="W")
    release.frame     # the noisy counts (period x region), the same shape as ``counts()``
    release.card()    # epsilon, delta, privacy unit, mechanism, scale, bound: what a reader needs

The privacy unit is the **patient** (the stored pseudonym: a person that k senders identify
differently is k patients, with k x epsilon; ``UNIT_NOTE``). Two steps:

1. *Contribution bound.* A patient counts at most once per place and day (as in ``counts()``), and
   now on at most ``max_cases_per_patient`` (C) place-days in the whole release: a patient with more
   keeps C of them, drawn at random. Adding or removing one patient then changes the table by at most
   C in L1 (a weekly cell sums days, so it still moves by at most C).
2. *Noise.* Every cell gets independent discrete Laplace noise (integers) of scale C / epsilon from
   OpenDP (``make_laplace`` on integer vectors: an exact sampler on OS randomness, no floating-point
   leaks); the epsilon recorded is what OpenDP's privacy map reports for the bound C (delta = 0).

The cells must not depend on the data: the places are given (``regions``; at ``level="county"`` the
default is every US county), and so are ``start`` and ``end``. Cases outside them, and cases stored
without a patient (nobody to bound), are left out. Clamping negative counts to 0 (``nonnegative``,
the default) is post-processing and costs no privacy; it biases small counts upwards, so a sum of
clamped cells overstates the total (``nonnegative=False`` keeps the unbiased integers).

Each release spends its epsilon; releases of the same patients add up (sequential composition).
:func:`record` writes one ledger entry per release into the store's ``privacy/`` folder and
:func:`spent` sums them, so a budget can be enforced across releases (``healthai counts --budget``).
The released table itself is kept beside its entry, so a server set to answer from private releases
only (``stored_counts = "private"``) can read it back (:mod:`healthai.surveillance.released`).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from healthai.errors import InvalidInput
from healthai.normalize.counties import FIPS
from healthai.store import ParquetStore
from healthai.surveillance.counts import (
    AGE_GROUPS,
    UNATTRIBUTED,
    SurveillanceCounts,
    daily_counts,
    period_table,
)

ISO_3166_2 = re.compile(r"^[A-Z]{2}-[A-Z0-9]{1,3}$")
DEFAULT_MAX_CASES_PER_PATIENT = 4  # place-days a patient adds to one release (why: below)
MECHANISM = "discrete Laplace on every cell (OpenDP make_laplace, integer vector, L1 sensitivity = bound)"
LEDGER_DIR = "privacy"
_NUMBERED = re.compile(r"^release-(\d{8})\.json$")
UNIT_NOTE = ("a patient is one stored patient pseudonym (keyed on the sender's identifier): a person two "
             "hospitals send under different identifiers is two patients, and their guarantee is 2 x epsilon")
# Why C = 4 by default (chosen from first principles, on no data): a weekly ILI count is of distinct
# patients per place and day; one illness episode is usually one or two visit days and a patient
# rarely has more than one or two episodes in a season. A larger C keeps more of a frequent patient's
# days but widens every cell's noise in proportion.


@dataclass(frozen=True)
class Release:
    frame: pd.DataFrame  # noisy counts, period x place (or (place, age group))
    epsilon: float  # OpenDP's privacy map at the bound
    max_cases_per_patient: int
    scale: float
    nonnegative: bool
    left_out_by_bound: int  # case-days a patient had beyond the bound (for the operator, not the release)
    unattributed: int  # cases stored without a patient, left out (for the operator, not the release)

    def card(self) -> dict:
        """What the release says about its privacy and how to read it (no data-dependent value)."""
        q = math.exp(-1 / self.scale)
        card = {"epsilon": self.epsilon, "delta": 0.0, "privacy_unit": "patient", "unit_note": UNIT_NOTE,
                "max_cases_per_patient": self.max_cases_per_patient, "mechanism": MECHANISM,
                "noise_scale": self.scale, "noise_sd": math.sqrt(2 * q) / (1 - q),
                "cells": int(self.frame.size),
                "nonnegative": self.nonnegative, "library": f"opendp {_opendp_version()}"}
        if self.nonnegative:  # E[max(noise, 0)] for a true count of 0: what each empty cell adds to a sum
            card["reading"] = (f"negative noisy counts were set to 0, so a sum of cells is biased upwards (a "
                               f"cell whose count is 0 adds {q / (1 - q ** 2):.2f} on average): release the "
                               "coarser level itself instead of summing (or --keep-negative)")
        return card


def private_counts(counts: SurveillanceCounts, *, epsilon: float, start: date | str | None,
                   end: date | str | None, regions: Sequence[str] | None = None, syndrome: str = "ili",
                   freq: str = "W", level: str = "region", week_start: str = "monday",
                   completed_by: date | None = None,
                   max_cases_per_patient: int = DEFAULT_MAX_CASES_PER_PATIENT,
                   nonnegative: bool = True, by_age: bool = False, age_groups: Sequence[int] = AGE_GROUPS
                   ) -> Release:
    """The counts of :meth:`SurveillanceCounts.counts` (``by_age``: ``counts_by_age``) released under
    epsilon-differential privacy per patient (module docstring)."""
    _check(epsilon, max_cases_per_patient, start, end)
    places = _places(regions, level)
    if by_age:
        cases, labels = counts.aged_cases(syndrome, level, age_groups)
        cell = ["place", "group"]
        columns = pd.MultiIndex.from_tuples([(p, g) for p in places for g in labels])
    else:
        cases, cell, columns = counts.cases(syndrome, level), ["place"], places
    window = period_table(pd.DataFrame(dtype="int64"), freq, start, end, [], completed_by, week_start).index
    distinct, unattributed = distinct_cases(cases, places, window, freq, cell)
    kept, beyond = _bound(distinct, max_cases_per_patient)
    exact = period_table(daily_counts(kept, cell), freq, start, end, columns, completed_by, week_start)
    scale = max_cases_per_patient / epsilon
    noisy, spent = _noise(exact.to_numpy(dtype="int64"), scale, max_cases_per_patient)
    if nonnegative:
        noisy = np.maximum(noisy, 0)
    frame = pd.DataFrame(noisy, index=exact.index, columns=exact.columns)
    return Release(frame=frame, epsilon=spent, max_cases_per_patient=max_cases_per_patient, scale=scale,
                   nonnegative=nonnegative, left_out_by_bound=beyond, unattributed=unattributed)


def distinct_cases(cases: pd.DataFrame, places: Sequence[str], periods: pd.DatetimeIndex, freq: str,
                   cell: Sequence[str] = ("place",)) -> tuple[pd.DataFrame, int]:
    """The cases of ``places`` in ``periods``, one per patient, cell and day (as ``counts()`` counts), and
    how many were left out for having no patient (nobody to bound)."""
    if not len(periods):
        return cases.iloc[:0], 0
    days = pd.to_datetime(cases["day"])
    last_day = periods[-1] + pd.Timedelta(days=6 if freq == "W" else 0)
    cases = cases[cases["place"].isin(places) & (days >= periods[0]) & (days <= last_day)]
    attributed = ~cases["patient_id"].astype(str).str.startswith(UNATTRIBUTED)
    return cases[attributed].drop_duplicates([*cell, "day", "patient_id"]), int((~attributed).sum())


def record(
    store: ParquetStore, release: Release, what: dict, *, budget: float | None = None,
    charged: float | None = None, number: int | None = None,
) -> tuple[str, str] | None:
    """Write the release's ledger entry (its card, ``what`` was released, its periods, when) into the store's
    ``privacy/`` folder: one file per release, so object stores (no appends) work too. Its path and text.

    Entries are numbered (``release-00000001.json`` ...) and each is created exclusively (the store's
    commit-log primitive: ``link(2)`` locally, a conditional PUT on S3), so with a ``budget`` two
    processes releasing at once cannot both pass it: the one that loses the number re-reads the ledger,
    with the winner's entry in it, and checks again (``InvalidInput`` when the budget would be passed;
    the noisy table, never shown, is then dropped and costs nothing). Stores without exclusive create
    (``gs://``) get a unique name instead, and a budget is then checked against what was recorded before.

    ``charged``: the epsilon this entry adds to the store's total when it is not the release's own (a
    stream's later releases in a calendar year: ``stream``); ``number``: claim exactly this entry number
    or nothing (None returned, the table removed): a caller whose release depends on the ledger (a
    stream) recomputes when another entry came first."""
    index = release.frame.index
    entry = {"released_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), **what,
             "first_period": str(index[0].date()) if len(index) else None,
             "last_period": str(index[-1].date()) if len(index) else None, **release.card()}
    directory = f"{store.root}/{LEDGER_DIR}"
    if release.frame.columns.nlevels == 1 and len(index):  # the released table itself, for
        entry["table"] = f"table-{uuid.uuid4().hex}.parquet"  # ``released.ReleasedCounts`` (by-age: none)
        _write_table(store, f"{directory}/{entry['table']}", release.frame)
    cost = release.epsilon if charged is None else charged
    if charged is not None:
        entry["epsilon_charged"] = charged
    text = json.dumps(entry, indent=1) + "\n"

    def drop_table() -> None:  # never released: its table goes too
        if "table" in entry:
            store.filesystem.delete_file(f"{directory}/{entry['table']}")

    while True:
        total, n, last = _ledger(store)
        if number is not None and number != last + 1:
            drop_table()
            return None
        if budget is not None and total + cost > budget + 1e-12:
            drop_table()
            raise InvalidInput(f"epsilon: this store's {n} recorded releases have spent {total:g}; another "
                               f"{cost:g} would pass the budget of {budget:g}", field="epsilon")
        name = f"release-{last + 1:08d}.json"
        created = store.create_exclusive(f"{LEDGER_DIR}/{name}", text.encode())
        if created is False and number is not None:
            drop_table()
            return None
        if created is None:
            name = f"release-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}.json"
            store.filesystem.create_dir(directory, recursive=True)
            with store.filesystem.open_output_stream(f"{directory}/{name}") as f:
                f.write(text.encode())
        if created is not False:
            return f"{directory}/{name}", text


def _write_table(store: ParquetStore, path: str, frame: pd.DataFrame) -> None:
    """The noisy table, long (period, place, count), beside its ledger entry (written before it)."""
    rows, cols = frame.shape
    table = pa.table({"period": pa.array(np.repeat(frame.index.date, cols), pa.date32()),
                      "place": pa.array(np.tile(np.asarray(frame.columns, dtype=str), rows)),
                      "count": pa.array(frame.to_numpy(dtype="int64").ravel())})
    store.filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
    pq.write_table(table, path, filesystem=store.filesystem)


def spent(store: ParquetStore) -> tuple[float, int]:
    """(the epsilon every recorded release of this store has spent in all, how many releases)."""
    return _ledger(store)[:2]


def entries(store: ParquetStore, cache: dict[str, dict] | None = None) -> list[tuple[str, dict]]:
    """Every ledger entry of the store: (file name, entry), in name order (numbered entries in order).
    ``cache`` (path -> entry) is read and filled: an entry never changes once written."""
    selector = pafs.FileSelector(f"{store.root}/{LEDGER_DIR}", allow_not_found=True)
    cache = {} if cache is None else cache
    out = []
    for info in store.filesystem.get_file_info(selector):
        if info.type == pafs.FileType.File and info.base_name.startswith("release-"):
            if info.path not in cache:
                with store.filesystem.open_input_stream(info.path) as f:
                    cache[info.path] = json.loads(f.read())
            out.append((info.base_name, cache[info.path]))
    return sorted(out, key=lambda e: e[0])


def last_number(found: list[tuple[str, dict]]) -> int:
    """The highest entry number among ``entries()`` (0 for none)."""
    return max((int(m.group(1)) for name, _ in found if (m := _NUMBERED.match(name))), default=0)


def epsilon_spent(found: list[tuple[str, dict]]) -> float:
    """What ``entries()`` charged in all (a stream's later releases in a year charge 0)."""
    return sum(float(e.get("epsilon_charged", e["epsilon"])) for _, e in found)


def _ledger(store: ParquetStore) -> tuple[float, int, int]:
    """(epsilon spent, releases, the highest entry number) of the store's ledger."""
    found = entries(store)
    return epsilon_spent(found), len(found), last_number(found)


def _check(epsilon: float, bound: int, start: date | str | None, end: date | str | None) -> None:
    if not (isinstance(epsilon, int | float) and math.isfinite(epsilon) and epsilon > 0):
        raise InvalidInput(f"epsilon {epsilon!r} must be a positive number", field="epsilon")
    if not isinstance(bound, int) or isinstance(bound, bool) or bound < 1:
        raise InvalidInput(f"max_cases_per_patient {bound!r} must be a whole number >= 1",
                           field="max_cases_per_patient")
    for name, value in (("start", start), ("end", end)):
        if value is None:
            raise InvalidInput(f"{name} is required for a private release: periods taken from the data "
                               "would show when the first and last cases were", field=name)


def _places(regions: Sequence[str] | None, level: str) -> list[str]:
    if regions is not None:
        places = sorted({str(r).strip() for r in regions if str(r).strip()})
        if not places:
            raise InvalidInput("regions is empty", field="regions")
        county = level == "county"
        pattern = FIPS if county else ISO_3166_2
        kind = "5-digit US county FIPS codes" if county else "ISO 3166-2 codes (US-MA)"
        wrong = [p for p in places if not pattern.match(p)]
        if wrong:  # such a cell holds no case: a release of noise alone, its epsilon spent for nothing
            raise InvalidInput(f"regions: {wrong[:3]} are not {kind}, the places counted at level {level!r}",
                               field="regions")
        return places
    if level == "county":
        from healthai.normalize.counties import all_counties

        return list(all_counties())
    raise InvalidInput("regions are required for a private release at the region level: regions taken "
                       "from the data would show which ones have cases (give them, e.g. a model's graph)",
                       field="regions")


def _bound(cases: pd.DataFrame, bound: int) -> tuple[pd.DataFrame, int]:
    """At most ``bound`` rows per patient, drawn at random; and how many rows were dropped."""
    if not len(cases):
        return cases, 0
    rng = np.random.default_rng(secrets.randbits(128))
    shuffled = cases.iloc[rng.permutation(len(cases))]
    keep = shuffled.groupby("patient_id", sort=False).cumcount() < bound
    return shuffled[keep.to_numpy()], int((~keep).sum())


def _noise(values: np.ndarray, scale: float, bound: int) -> tuple[np.ndarray, float]:
    """``values`` + discrete Laplace(scale) per cell (OpenDP), and the epsilon OpenDP reports for an L1
    sensitivity of ``bound``."""
    try:
        import opendp.prelude as dp
    except ImportError as e:
        raise InvalidInput("epsilon: private releases need OpenDP (pip install -r requirements-privacy.txt, "
                           "or the healthai[privacy] extra)", field="epsilon") from e
    dp.enable_features("contrib")  # make_laplace on integers is still marked contrib in OpenDP 0.16
    measurement = dp.m.make_laplace(dp.vector_domain(dp.atom_domain(T="i64")), dp.l1_distance(T="i64"),
                                    scale=float(scale))
    flat = values.reshape(-1)
    noisy = np.asarray(measurement([int(v) for v in flat]) if flat.size else [], dtype="int64")
    return noisy.reshape(values.shape), float(measurement.map(bound))


def _opendp_version() -> str:
    from importlib.metadata import version

    return version("opendp")

