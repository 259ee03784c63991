"""Region × day/week case counts per syndrome, read in-process (the Forecast RPC uses this).

Query API::

    counts = SurveillanceCounts(store)          # store: healthai.store.ParquetStore (opened)
    df = counts.counts(syndrome="ili", freq="D", start=None, end=None, regions=None)

``df`` is a pandas DataFrame: the index (``period``, datetime64, midnight dates, naive) holds every
period start from ``start`` (or the first case) to ``end`` (or the last case) with no gaps — days for
``freq="D"``, weeks for ``freq="W"`` (starting Monday; ``week_start="sunday"`` for MMWR weeks).
Columns are region codes (ISO 3166-2, e.g. ``US-MA``), or US county FIPS codes with
``level="county"`` (e.g. ``25017``: from the address's county name or ZIP code,
:mod:`healthai.normalize.counties`); sorted; ``regions`` adds/keeps exactly those. Values are int64
counts (0 where none). No cases and no bounds gives an empty frame.

What is counted: the number of distinct patients per region and day with at least one condition
matching the syndrome (see :mod:`healthai.surveillance.syndromes`; not one whose verification status
is ``refuted`` or ``entered-in-error``), or with a positive result of
one of its laboratory tests (dated by its effective time), dated by the condition's onset
(its recorded date when onset is absent, its encounter's start when both are). The day is the date
as the sender wrote it: a diagnosis at 2024-01-09T20:30-05:00 counts on January 9, not on the UTC
date (January 10); times stored before the offsets were kept count on their UTC date. A condition stored
without its patient (a bulk export sends Patient and Condition in separate files) takes the region
of its patient's or encounter's stored row (:mod:`healthai.surveillance.links`), whichever payload
came first. Weekly counts are the sum of the daily counts. Conditions still without a region or a
date are not counted (:meth:`SurveillanceCounts.uncounted` reports how many); they are counted as
soon as the rows they lack are stored. A record stored again with other content (a Condition re-sent
as ``entered-in-error``, a corrected lab result: :mod:`healthai.store.versions`) counts as its latest
version: the cases of its earlier versions are withdrawn, and its case, if it still is one, is reported
on the day the new version was stored (on its first day when the case itself did not change); a case
that took its place or day from its patient or encounter takes them from their latest versions
(:mod:`healthai.surveillance.case_versions`). Incremental: each committed Parquet file is read once (only
the matching cases are kept in memory); a query after a commit, this process's or another replica's,
reads just the new files.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from healthai.errors import InvalidInput
from healthai.normalize import codes as code_systems
from healthai.normalize.counties import FIPS
from healthai.normalize.records import OFFSET_SUFFIX
from healthai.store import ParquetStore
from healthai.surveillance.case_versions import (
    INTERNAL,
    keep_first_report,
    links_changed,
    read_cases,
    unlink,
    withdraw,
)
from healthai.surveillance.links import LEVELS, StoredLinks, event_days, lookup
from healthai.surveillance.syndromes import (
    POSITIVE_LOINC,
    POSITIVE_SNOMED,
    RESULT_STATUS,
    SYNDROMES,
    Syndrome,
)

CONDITION_KIND, OBSERVATION_KIND = "condition", "observation"
_LAB_COLUMNS = ["patient_id", "encounter_id", *LEVELS, "loinc", "value_code", "status", "effective",
                "effective" + OFFSET_SUFFIX]
_COLUMNS = ["patient_id", "encounter_id", *LEVELS, "icd10_code", "snomed_code", "onset", "recorded",
            "onset" + OFFSET_SUFFIX, "recorded" + OFFSET_SUFFIX, "verification_status"]
NOT_A_CASE = ("refuted", "entered-in-error")  # a Condition's verificationStatus that withdraws it
_CASE_COLUMNS = ["patient_id", "place", "day", "reported", *INTERNAL]
FREQS = ("D", "W")
AGE_GROUPS = (0, 5, 25, 50, 65)  # ILINet's age groups: 0-4, 5-24, 25-49, 50-64, 65+
UNATTRIBUTED = "row-"  # the patient_id of a case stored without a patient (each counts once)


@dataclass
class _State:
    """Cases of one syndrome read so far, and the part files they came from (read each file once)."""

    sequence: int = -1
    files: set[str] = field(default_factory=set)
    cases: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["patient_id", "place", "day", "reported", *INTERNAL]))
    pending: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=_CASE_COLUMNS))
    daily: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(dtype="int64"))
    replaced: set[str] = field(default_factory=set)  # keys of records re-stored since the last read
    links: int = 0  # case_versions.links_changed when the cases were last filled


class SurveillanceCounts:
    def __init__(self, store: ParquetStore, syndromes: dict[str, Syndrome] | None = None) -> None:
        self.store = store
        self.syndromes = dict(SYNDROMES if syndromes is None else syndromes)
        self._lock = threading.Lock()
        self._state: dict[tuple[str, str], _State] = {}  # by (syndrome, level)
        self._links = StoredLinks(store)

    def counts(self, syndrome: str = "ili", freq: str = "D", start: date | str | None = None,
               end: date | str | None = None, regions: Sequence[str] | None = None, *,
               completed_by: date | None = None, level: str = "region", week_start: str = "monday"
               ) -> pd.DataFrame:
        """Counts per period (see the module docstring). Weekly, ``start`` and ``end`` name the weeks
        that hold them, each counted whole. ``completed_by`` (e.g. today): only periods that ended
        before that day, so an unfinished day or week (fewer cases so far, not fewer cases) is left out
        when it is the last one; an ``end`` inside one is refused. ``level``: columns are regions
        (ISO 3166-2) or US counties (``county``: 5-digit FIPS). ``week_start``: the day weeks begin on,
        ``monday`` (ISO weeks) or ``sunday`` (MMWR weeks, CDC's epiweeks), or any other day."""
        daily = self._daily(syndrome, level)
        return period_table(daily, freq, start, end, None if regions is None else list(regions), completed_by,
                        week_start)

    def counts_by_age(self, syndrome: str = "ili", freq: str = "D", start: date | str | None = None,
                      end: date | str | None = None, *, completed_by: date | None = None,
                      level: str = "region", week_start: str = "monday",
                      age_groups: Sequence[int] = AGE_GROUPS) -> pd.DataFrame:
        """:meth:`counts` with columns (place, age group): the patient's age on the case's day, from the
        stored birth year and month (the day is never stored: an age may be a month early), in groups
        starting at ``age_groups`` (ILINet's 0-4, 5-24, 25-49, 50-64, 65+); ``unknown`` without a
        stored birth year."""
        cases, labels = self.aged_cases(syndrome, level, age_groups)
        daily = daily_counts(cases, ("place", "group"))
        if daily.empty:
            return period_table(daily, freq, start, end, None, completed_by, week_start)
        order = sorted(daily.columns, key=lambda c: (c[0], labels.index(c[1])))  # groups youngest first
        columns = pd.MultiIndex.from_tuples(order)
        return period_table(daily, freq, start, end, columns, completed_by, week_start)

    def cases(self, syndrome: str = "ili", level: str = "region") -> pd.DataFrame:
        """The counted cases, one row each: ``patient_id`` (the stored pseudonym; ``row-…`` for a row
        stored without a patient), ``place``, ``day`` and ``reported`` (the day the store first held the
        record: its part file's ingest date). A copy: what the counts are made of."""
        self._daily(syndrome, level)
        with self._lock:
            return self._state[syndrome, level].cases.drop(columns=INTERNAL)

    def aged_cases(self, syndrome: str = "ili", level: str = "region", age_groups: Sequence[int] = AGE_GROUPS
                   ) -> tuple[pd.DataFrame, list[str]]:
        """:meth:`cases` with a ``group`` column (see :meth:`counts_by_age`), and the labels in order."""
        edges = sorted({int(a) for a in age_groups})
        if not edges or edges[0] != 0:
            raise InvalidInput(f"age_groups {list(age_groups)} must start at 0", field="age_groups")
        self._daily(syndrome, level)
        with self._lock:
            self._links.refresh()
            cases = self._state[syndrome, level].cases.drop(columns=INTERNAL)
            born = lookup(self._links.patient_birth, cases["patient_id"])  # birth month index, NaN unknown
        groups, labels = _age_groups(cases["day"], born, edges)
        return cases.assign(group=groups), labels

    def uncounted(self, syndrome: str = "ili", level: str = "region") -> int:
        """Matching conditions left out because they lack a place (of ``level``) or a date."""
        self._daily(syndrome, level)
        return len(self._state[syndrome, level].pending)

    def _daily(self, syndrome: str, level: str) -> pd.DataFrame:
        if syndrome not in self.syndromes:
            raise InvalidInput(f"syndrome {syndrome!r} is not one of {', '.join(sorted(self.syndromes))}",
                               field="syndrome")
        if level not in LEVELS:
            raise InvalidInput(f"level {level!r} is not one of {', '.join(LEVELS)}", field="level")
        with self._lock:
            state = self._state.setdefault((syndrome, level), _State())
            sequence = self.store.refresh()  # other replicas' commits too
            if sequence == state.sequence:
                return state.daily
            definition = self.syndromes[syndrome]
            new_files = [f for f in self.store.files(CONDITION_KIND) if f not in state.files]
            found = read_cases(self.store, new_files, CONDITION_KIND, _COLUMNS,
                               lambda t: _cases(t, definition, level), state.replaced)
            lab_files = [f for f in self.store.files(OBSERVATION_KIND) if f not in state.files] \
                if definition.lab_loincs else []
            labs = read_cases(self.store, lab_files, OBSERVATION_KIND, _LAB_COLUMNS,
                              lambda t: _lab_cases(t, definition, level), state.replaced)
            changed = bool(state.replaced)
            withdrawn = state.cases.iloc[:0]
            if changed:  # earlier versions of records stored again: their cases go
                state.cases, state.pending, withdrawn = withdraw(state.cases, state.pending, state.replaced)
                state.replaced = set()
            pending = _concat(_concat(state.pending, found), labs)
            links = links_changed(self.store)
            if links != state.links:  # a patient or encounter stored anew: fill those cases again
                state.cases, again = unlink(state.cases)
                pending, changed, state.links = _concat(pending, again), True, links
            state.files.update(new_files + lab_files)
            if len(pending):  # some case lacks a place or a date: look in the rest of the store
                self._links.refresh()
                pending = self._links.fill(pending, level)
            done = pending["place"].notna() & pending["day"].notna()
            state.pending = pending[~done].reset_index(drop=True)
            if done.any() or changed:
                counted = keep_first_report(_counted(pending[done]), withdrawn)
                state.cases = _concat(state.cases, counted).reset_index(drop=True)
                state.daily = daily_counts(state.cases)
            state.sequence = sequence
            return state.daily


WEEK_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def week_day(name: str) -> int:
    """``monday`` → 0 … ``sunday`` → 6 (pandas ``day_of_week``)."""
    day = str(name).strip().lower()
    if day not in WEEK_DAYS:
        raise InvalidInput(f"week_start {name!r} is not a day of the week (monday, sunday, ...)",
                           field="week_start")
    return WEEK_DAYS.index(day)


def place_level(region_ids: Sequence[str]) -> str:
    """The level a model's regions are counted at: ``county`` when every id is a 5-digit US county FIPS
    code (``25017``), else ``region`` (ISO 3166-2)."""
    return "county" if region_ids and all(FIPS.match(str(r)) for r in region_ids) else "region"


def period_table(daily: pd.DataFrame, freq: str, start: date | str | None, end: date | str | None,
                 columns: list | pd.Index | None, completed_by: date | None, week_start: str) -> pd.DataFrame:
    """Daily counts (day x column) → every period from ``start`` to ``end`` (see ``counts``)."""
    if freq not in FREQS:
        raise InvalidInput(f"freq {freq!r} is not one of {', '.join(FREQS)}", field="freq")
    first_day = week_day(week_start)
    lo = _to_timestamp(start, "start") if start is not None else None
    hi = _to_timestamp(end, "end") if end is not None else None
    if lo is not None and hi is not None and lo > hi:
        raise InvalidInput(f"start {lo.date()} is after end {hi.date()}", field="start")
    if lo is None:
        lo = daily.index.min() if len(daily) else None
    if hi is None:
        hi = daily.index.max() if len(daily) else None
    columns = sorted(daily.columns) if columns is None else columns
    if lo is None or hi is None:
        return _empty(columns)
    if freq == "W":
        lo = lo - pd.Timedelta(days=(lo.day_of_week - first_day) % 7)
        hi = hi + pd.Timedelta(days=(first_day - 1 - hi.day_of_week) % 7)
    if completed_by is not None:
        hi = _last_ended(hi, pd.Timestamp(completed_by), freq, explicit=end is not None)
        if hi < lo:
            return _empty(columns)
    index = pd.date_range(lo, hi, freq="D", name="period")
    out = daily.reindex(index=index, columns=columns, fill_value=0).astype("int64")
    if freq == "W":
        starts = out.index - pd.to_timedelta((out.index.day_of_week - first_day) % 7, unit="D")
        out = out.groupby(starts).sum()
        out.index.name = "period"
    out.columns.names = [None] * out.columns.nlevels
    return out


def _age_groups(days: pd.Series, born: pd.Series, edges: list[int]) -> tuple[pd.Series, list[str]]:
    """Age group label of each case ("0-4", ..., "65+", "unknown") from its day and birth month, and
    the labels in order."""
    days = pd.to_datetime(days)
    months = (days.dt.year * 12 + days.dt.month - 1).to_numpy(dtype="float64") - born.to_numpy()
    labels = [f"{lo}-{hi - 1}" for lo, hi in itertools.pairwise(edges)] + [f"{edges[-1]}+"]
    groups = pd.cut(months // 12, bins=[*edges, float("inf")], right=False, labels=labels)
    return pd.Series(groups.astype(object), index=days.index).fillna("unknown"), [*labels, "unknown"]


def end_refused(e: InvalidInput, field: str) -> InvalidInput:
    """A refused ``end`` of :meth:`SurveillanceCounts.counts`, said for the caller's own field."""
    return InvalidInput(f"{field}: {e.message.removeprefix('end: ')}", field=field)


def _empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(columns=columns, dtype="int64").rename_axis("period")


def _last_ended(hi: pd.Timestamp, completed_by: pd.Timestamp, freq: str, *, explicit: bool) -> pd.Timestamp:
    """The last day of the last period up to ``hi`` that ended before ``completed_by``."""
    if hi < completed_by:
        return hi
    unit = "week" if freq == "W" else "day"
    first = hi - pd.Timedelta(days=6 if freq == "W" else 0)
    if explicit:
        span = f"{first.date()} to {hi.date()}" if freq == "W" else str(hi.date())
        raise InvalidInput(f"end: the {unit} {span} has not ended (today is {completed_by.date()}); its "
                           f"counts would be partial. Give an earlier end, or none for the last {unit} "
                           "that has ended", field="end")
    last_day = completed_by - pd.Timedelta(days=1)
    week_end = (last_day.day_of_week - hi.day_of_week) % 7  # days back from last_day to a week's end
    return last_day - pd.Timedelta(days=week_end) if freq == "W" else last_day


def period_start(value: date | str, freq: str, week_start: str = "monday", name: str = "date"
                 ) -> pd.Timestamp:
    """The start of the day or week (weeks beginning on ``week_start``) holding ``value``; InvalidInput
    naming ``name`` when it is not a date."""
    day = _to_timestamp(value, name)
    return day - pd.Timedelta(days=(day.day_of_week - week_day(week_start)) % 7) if freq == "W" else day


def _to_timestamp(value: date | str, name: str) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except ValueError as e:
        raise InvalidInput(f"{name} {value!r} is not a date", field=name) from e
    return ts.tz_localize(None).normalize() if ts.tzinfo else ts.normalize()


def _strings(values) -> pa.Array:
    """A value set for ``pc.is_in``, typed: an empty set (``flu_lab`` has no diagnosis codes) is
    still a string array, not a null one that no string column can be compared with."""
    return pa.array(sorted(values), pa.string())


def _cases(conditions: pa.Table, syndrome: Syndrome, level: str) -> pd.DataFrame:
    """(patient_id, encounter_id, place, day) of the conditions matching the syndrome; place and
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
        in_list = pc.is_in(table["snomed_code"], value_set=_strings(syndrome.snomed_codes))
        mask = pc.or_kleene(mask, pc.fill_null(in_list, False))
    if "verification_status" in table.column_names:  # ruled out, or recorded by mistake: not a case
        withdrawn = pc.is_in(table["verification_status"], value_set=_strings(NOT_A_CASE))
        mask = pc.and_kleene(mask, pc.invert(pc.fill_null(withdrawn, False)))
    cases = conditions.filter(mask)
    onset = pc.is_valid(cases["onset"])
    when = pc.if_else(onset, cases["onset"], cases["recorded"].cast(cases["onset"].type))
    offset = pc.if_else(onset, pc.cast(cases["onset" + OFFSET_SUFFIX], pa.int16()),
                        pc.cast(cases["recorded" + OFFSET_SUFFIX], pa.int16()))
    return pd.DataFrame({
        "patient_id": cases["patient_id"].to_pylist(),
        "encounter_id": cases["encounter_id"].to_pylist(),
        "place": cases[level].to_pylist(),
        "day": event_days(when, offset).to_numpy(),
        "reported": cases["reported"].to_pandas(), "key": cases["key"].to_pylist(),
    })


def _lab_cases(observations: pa.Table, syndrome: Syndrome, level: str) -> pd.DataFrame:
    """(patient_id, encounter_id, place, day) of positive results of the syndrome's tests."""
    if observations.num_rows == 0:
        return pd.DataFrame(columns=_CASE_COLUMNS)
    mask = pc.and_kleene(pc.is_in(observations["loinc"], value_set=_strings(syndrome.lab_loincs)),
                         _positive(observations["value_code"]))
    mask = pc.and_kleene(mask, pc.is_in(observations["status"], value_set=_strings(RESULT_STATUS)))
    tests = observations.filter(pc.fill_null(mask, False))
    return pd.DataFrame({
        "patient_id": tests["patient_id"].to_pylist(),
        "encounter_id": tests["encounter_id"].to_pylist(),
        "place": tests[level].to_pylist(),
        "day": event_days(tests["effective"], tests["effective" + OFFSET_SUFFIX]).to_numpy(),
        "reported": tests["reported"].to_pandas(), "key": tests["key"].to_pylist(),
    })


def _positive(value_codes: pa.ChunkedArray) -> pa.ChunkedArray:
    """Whether each stored ``system|code`` is a positive result: a SNOMED CT code of ``POSITIVE_SNOMED``
    under the SNOMED CT system, or a LOINC answer of ``POSITIVE_LOINC`` under LOINC's (each by its URI,
    OID or a near miss, :func:`healthai.normalize.codes.system_name`); a local system's code is not."""
    systems = pc.replace_substring_regex(value_codes, r"\|.*$", "")  # split at the first "|"
    found = pc.utf8_trim_whitespace(pc.replace_substring_regex(value_codes, r"^[^|]*\|", ""))
    named = [s for s in pc.unique(systems).to_pylist() if s is not None]
    of = {name: _strings({s for s in named if code_systems.system_name(s) == name})
          for name in (code_systems.SNOMED, code_systems.LOINC)}
    snomed = pc.and_kleene(pc.is_in(systems, value_set=of[code_systems.SNOMED]),
                           pc.is_in(found, value_set=_strings(POSITIVE_SNOMED)))
    loinc = pc.and_kleene(pc.is_in(systems, value_set=of[code_systems.LOINC]),
                          pc.is_in(found, value_set=_strings(POSITIVE_LOINC)))
    return pc.or_kleene(snomed, loinc)


def _counted(cases: pd.DataFrame) -> pd.DataFrame:
    """Cases with a place and a day → (patient_id, place, day, reported); rows without a patient each
    count once."""
    row_ids = pd.Series([f"{UNATTRIBUTED}{uuid.uuid4().hex}" for _ in range(len(cases))], index=cases.index)
    return pd.DataFrame({"patient_id": cases["patient_id"].fillna(row_ids), "place": cases["place"],
                         "day": cases["day"], "reported": cases["reported"],
                         **{c: cases[c] for c in INTERNAL}})


def _concat(old: pd.DataFrame, new: pd.DataFrame | None) -> pd.DataFrame:
    frames = [df for df in (old, new) if df is not None and len(df)]
    if not frames:
        return old
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)


def daily_counts(cases: pd.DataFrame, cell: Sequence[str] = ("place",)) -> pd.DataFrame:
    """Distinct patients per cell (place, or place and age group) and day: a frame indexed by day, one
    column per cell."""
    cell = list(cell)
    per_day = cases.drop_duplicates([*cell, "day", "patient_id"]).groupby(["day", *cell]).size()
    if not len(per_day):
        return pd.DataFrame(dtype="int64")
    return per_day.unstack(cell, fill_value=0).astype("int64")
