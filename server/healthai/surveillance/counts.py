"""Region × day/week case counts per syndrome, read in-process (the Forecast RPC uses this).

Query API::

    counts = SurveillanceCounts(store)          # store: healthai.store.ParquetStore (opened)
    df = counts.counts(syndrome="ili", freq="D", start=None, end=None, regions=None)

``df`` is a pandas DataFrame: the index (``period``, datetime64, midnight UTC dates, naive) holds
every period start from ``start`` (or the first case) to ``end`` (or the last case) with no gaps —
days for ``freq="D"``, weeks starting Monday for ``freq="W"``; columns are region codes (ISO 3166-2,
e.g. ``US-MA``; sorted; ``regions`` adds/keeps exactly those), values are int64 counts (0 where
none). No cases and no bounds gives an empty frame.

What is counted: the number of distinct patients per region and day with at least one condition
matching the syndrome (see :mod:`healthai.surveillance.syndromes`), or with a positive result of
one of its laboratory tests (dated by its effective time), dated by the condition's onset
(its recorded date when onset is absent, its encounter's start when both are). A condition stored
without its patient (a bulk export sends Patient and Condition in separate files) takes the region
of its patient's or encounter's stored row (:mod:`healthai.surveillance.links`), whichever payload
came first. Weekly counts are the sum of the daily counts. Conditions still without a region or a
date are not counted (:meth:`SurveillanceCounts.uncounted` reports how many); they are counted as
soon as the rows they lack are stored. Incremental: each committed Parquet file is read once (only
the matching cases are kept in memory); a query after a commit reads just the new files.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from healthai.errors import InvalidInput
from healthai.store import ParquetStore
from healthai.surveillance.links import StoredLinks, utc_days
from healthai.surveillance.syndromes import POSITIVE, RESULT_STATUS, SYNDROMES, Syndrome

CONDITION_KIND, OBSERVATION_KIND = "condition", "observation"
_LAB_COLUMNS = ["patient_id", "encounter_id", "region", "loinc", "value_code", "status", "effective"]
_COLUMNS = ["patient_id", "encounter_id", "region", "icd10_code", "snomed_code", "onset", "recorded"]
_CASE_COLUMNS = ["patient_id", "encounter_id", "region", "day"]
FREQS = ("D", "W")


@dataclass
class _State:
    """Cases of one syndrome read so far, and the part files they came from (read each file once)."""

    sequence: int = -1
    files: set[str] = field(default_factory=set)
    cases: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["patient_id", "region", "day"]))
    pending: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=_CASE_COLUMNS))
    daily: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(dtype="int64"))


class SurveillanceCounts:
    def __init__(self, store: ParquetStore, syndromes: dict[str, Syndrome] | None = None) -> None:
        self.store = store
        self.syndromes = dict(SYNDROMES if syndromes is None else syndromes)
        self._lock = threading.Lock()
        self._state: dict[str, _State] = {}
        self._links = StoredLinks(store)

    def counts(self, syndrome: str = "ili", freq: str = "D", start: date | str | None = None,
               end: date | str | None = None, regions: Sequence[str] | None = None) -> pd.DataFrame:
        if freq not in FREQS:
            raise InvalidInput(f"freq {freq!r} is not one of {', '.join(FREQS)}", field="freq")
        daily = self._daily(syndrome)
        lo = _to_timestamp(start, "start") if start is not None else None
        hi = _to_timestamp(end, "end") if end is not None else None
        if lo is not None and hi is not None and lo > hi:
            raise InvalidInput(f"start {lo.date()} is after end {hi.date()}", field="start")
        if lo is None:
            lo = daily.index.min() if len(daily) else None
        if hi is None:
            hi = daily.index.max() if len(daily) else None
        columns = sorted(daily.columns) if regions is None else list(regions)
        if lo is None or hi is None:
            return pd.DataFrame(columns=columns, dtype="int64").rename_axis("period")
        if freq == "W":
            lo = lo - pd.Timedelta(days=lo.day_of_week)
        index = pd.date_range(lo, hi, freq="D", name="period")
        out = daily.reindex(index=index, columns=columns, fill_value=0).astype("int64")
        if freq == "W":
            out = out.groupby(out.index - pd.to_timedelta(out.index.day_of_week, unit="D")).sum()
            out.index.name = "period"
        out.columns.name = None
        return out

    def uncounted(self, syndrome: str = "ili") -> int:
        """Matching conditions left out because they lack a region or a date."""
        self._daily(syndrome)
        return len(self._state[syndrome].pending)

    def _daily(self, syndrome: str) -> pd.DataFrame:
        if syndrome not in self.syndromes:
            raise InvalidInput(f"syndrome {syndrome!r} is not one of {', '.join(sorted(self.syndromes))}",
                               field="syndrome")
        with self._lock:
            state = self._state.setdefault(syndrome, _State())
            sequence = self.store.sequence
            if sequence == state.sequence:
                return state.daily
            definition = self.syndromes[syndrome]
            new_files = [f for f in self.store.files(CONDITION_KIND) if f not in state.files]
            new = _cases(self.store.read_files(new_files), definition) if new_files else None
            pending = _concat(state.pending, new)
            lab_files = [f for f in self.store.files(OBSERVATION_KIND) if f not in state.files] \
                if definition.lab_loincs else []
            if lab_files:
                tests = self.store.read_files(lab_files, _LAB_COLUMNS)
                pending = _concat(pending, _lab_cases(tests, definition))
            state.files.update(new_files + lab_files)
            if len(pending):  # some case lacks a region or a date: look in the rest of the store
                self._links.refresh()
                pending = self._links.fill(pending)
            done = pending["region"].notna() & pending["day"].notna()
            state.pending = pending[~done].reset_index(drop=True)
            if done.any():
                state.cases = _concat(state.cases, _counted(pending[done]))
                state.daily = _daily_counts(state.cases)
            state.sequence = sequence
            return state.daily


def _to_timestamp(value: date | str, name: str) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except ValueError as e:
        raise InvalidInput(f"{name} {value!r} is not a date", field=name) from e
    return ts.tz_localize(None).normalize() if ts.tzinfo else ts.normalize()


def _cases(conditions: pa.Table, syndrome: Syndrome) -> pd.DataFrame:
    """(patient_id, encounter_id, region, day) of the conditions matching the syndrome; region and
    day may be missing (filled from the rest of the store, or left uncounted)."""
    if conditions.num_rows == 0:
        return pd.DataFrame(columns=_CASE_COLUMNS)
    table = conditions.select([c for c in _COLUMNS if c in conditions.column_names])
    mask = pa.array([False] * table.num_rows)
    if "icd10_code" in table.column_names:
        icd10 = pc.utf8_upper(table["icd10_code"])
        for prefix in syndrome.icd10_prefixes:
            mask = pc.or_kleene(mask, pc.fill_null(pc.starts_with(icd10, prefix), False))
    if "snomed_code" in table.column_names:
        in_list = pc.is_in(table["snomed_code"], value_set=pa.array(sorted(syndrome.snomed_codes)))
        mask = pc.or_kleene(mask, pc.fill_null(in_list, False))
    cases = table.filter(mask)
    when = cases["onset"] if "onset" in cases.column_names else None
    if when is not None and "recorded" in cases.column_names:
        when = pc.coalesce(when, cases["recorded"])

    def column(name: str) -> list:
        return cases[name].to_pylist() if name in cases.column_names else [None] * cases.num_rows

    return pd.DataFrame({
        "patient_id": column("patient_id"),
        "encounter_id": column("encounter_id"),
        "region": column("region"),
        "day": utc_days(when if when is not None else [None] * cases.num_rows).to_numpy(),
    })


def _lab_cases(observations: pa.Table, syndrome: Syndrome) -> pd.DataFrame:
    """(patient_id, encounter_id, region, day) of positive results of the syndrome's tests."""
    if observations.num_rows == 0:
        return pd.DataFrame(columns=_CASE_COLUMNS)
    codes = pc.replace_substring_regex(observations["value_code"], r"^.*\|", "")  # "system|code"
    mask = pc.and_kleene(pc.is_in(observations["loinc"], value_set=pa.array(sorted(syndrome.lab_loincs))),
                         pc.is_in(codes, value_set=pa.array(sorted(POSITIVE))))
    mask = pc.and_kleene(mask, pc.is_in(observations["status"], value_set=pa.array(sorted(RESULT_STATUS))))
    tests = observations.filter(pc.fill_null(mask, False))
    return pd.DataFrame({
        "patient_id": tests["patient_id"].to_pylist(),
        "encounter_id": tests["encounter_id"].to_pylist(),
        "region": tests["region"].to_pylist(),
        "day": utc_days(tests["effective"]).to_numpy(),
    })


def _counted(cases: pd.DataFrame) -> pd.DataFrame:
    """Cases with a region and a day → (patient_id, region, day); rows without a patient each count once."""
    row_ids = pd.Series([f"row-{uuid.uuid4().hex}" for _ in range(len(cases))], index=cases.index)
    return pd.DataFrame({"patient_id": cases["patient_id"].fillna(row_ids), "region": cases["region"],
                         "day": cases["day"]})


def _concat(old: pd.DataFrame, new: pd.DataFrame | None) -> pd.DataFrame:
    frames = [df for df in (old, new) if df is not None and len(df)]
    if not frames:
        return old
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)


def _daily_counts(cases: pd.DataFrame) -> pd.DataFrame:
    """Distinct patients per region and day: a frame indexed by day, one column per region."""
    per_day = cases.drop_duplicates(["region", "day", "patient_id"]).groupby(["day", "region"]).size()
    if not len(per_day):
        return pd.DataFrame(dtype="int64")
    return per_day.unstack("region", fill_value=0).astype("int64")
