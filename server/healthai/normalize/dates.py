"""The dates policy: how event dates are kept (``NormalizeContext.date_policy``).

- ``full`` (default): event dates and times are stored as sent. With birth dates generalized to
  year-month and identities pseudonymized, this is a HIPAA *limited data set* (it keeps dates), which
  surveillance needs: it counts by day. Use it under a data use agreement.
- ``shift``: every event date of a patient (encounter start/end, condition onset/abatement/recorded,
  observation effective) is moved by the same keyed offset of ±1..364 days, derived from the patient's
  pseudonym with the pseudonym key (HMAC): intervals within a patient are exact, calendar dates are
  not. Day-level surveillance counts are then blurred by up to a year; use it for research extracts.

Under both, no stored date equals a patient's full birth date: an event date equal to it, in UTC or
as written (the local date: the UTC time plus the offset it was written in, ``<name>_utc_offset_min``;
the birth encounter and the observations made on it) is cut to the first day of the birth month (the second
when the birth date is the first), with a ``DATE_GENERALIZED`` warning. Here for Patients in the
same FHIR payload (with the element path); for Patients stored earlier (any payload, format or
replica) the store's commit does it with keyed birth-date tokens (:mod:`.birth_guard`).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping

import pyarrow as pa
import pyarrow.compute as pc

from healthai.normalize.fhir_types import utc_offset_minutes
from healthai.normalize.identity import Pseudonymizer
from healthai.normalize.records import (
    CONDITION,
    ENCOUNTER,
    OBSERVATION,
    OFFSET_SUFFIX,
    Issue,
    IssueCode,
    RecordOutcome,
    Status,
)

EVENT_COLUMNS: dict[str, tuple[str, ...]] = {
    ENCOUNTER: ("start", "end"),
    CONDITION: ("onset", "abatement", "recorded"),
    OBSERVATION: ("effective",),
}
_MAX_SHIFT_DAYS = 364
# FHIR element of each event column (for the field path of a DATE_GENERALIZED warning)
_ELEMENT = {"start": "period.start", "end": "period.end", "onset": "onset[x]", "abatement": "abatement[x]",
            "recorded": "recordedDate", "effective": "effective[x]"}


def add_utc_offsets(rows: Mapping[str, list[dict]]) -> None:
    """Fill each event time's ``<name>_utc_offset_min`` from the offset it was parsed with (FHIR rows,
    before they become tables, which keep UTC only)."""
    minutes: dict[int, int | None] = {}  # per time zone object (few in a payload; equal ones differ:
    for kind, columns in EVENT_COLUMNS.items():  # DATE_ONLY == UTC), alive while the rows are
        for row in rows.get(kind, ()):
            for name in columns:
                value = row.get(name)
                if value is not None:
                    tz = id(value.tzinfo)
                    if tz not in minutes:
                        minutes[tz] = utc_offset_minutes(value)
                    row[name + OFFSET_SUFFIX] = minutes[tz]


def local_dates(t: dt.datetime, offset_min: int | None) -> set[dt.date]:
    """The UTC date of an event time, and its date as written when the offset is known."""
    return {t.date()} if offset_min is None else {t.date(), (t + dt.timedelta(minutes=offset_min)).date()}


class DatePolicy(enum.StrEnum):
    FULL = "full"
    SHIFT = "shift"


def shift_days(ps: Pseudonymizer, patient_id: str) -> int:
    """The patient's keyed date offset in days: ±1..364, never 0, stable for a key."""
    h = int.from_bytes(ps.keyed_digest(f"healthai-date-shift|{patient_id}")[:8], "big")
    days = h % _MAX_SHIFT_DAYS + 1
    return days if (h >> 32) & 1 else -days


def apply(
    tables: dict[str, pa.Table],
    *,
    policy: DatePolicy,
    pseudonymizer: Pseudonymizer,
    birth_dates: Mapping[str, dt.date],
    outcomes: list[RecordOutcome],
    paths: Mapping[str, str] | None = None,
) -> dict[str, pa.Table]:
    """Tables with the policy applied; DATE_GENERALIZED warnings added to the records' outcomes."""
    if policy is DatePolicy.FULL and not birth_dates:
        return tables
    by_id = {o.source_id: o for o in outcomes if o.source_id}
    paths = paths or {}
    out = dict(tables)
    for kind, columns in EVENT_COLUMNS.items():
        table = tables.get(kind)
        if table is None or table.num_rows == 0:
            continue
        pids = table["patient_id"]
        if policy is DatePolicy.SHIFT:
            table = _shift(table, columns, pids, pseudonymizer)
        if birth_dates:
            table = _generalize_birth(table, kind, columns, birth_dates, by_id, paths)
        out[kind] = table
    return out


def _shift(table: pa.Table, columns: tuple[str, ...], pids: pa.ChunkedArray, ps: Pseudonymizer) -> pa.Table:
    uniq = pc.unique(pids).to_pylist()
    offsets = {p: shift_days(ps, p) for p in uniq if p is not None}
    idx = pc.index_in(pids, value_set=pa.array(uniq, pa.string()))
    days = pc.take(pa.array([offsets.get(p, 0) for p in uniq], pa.int64()), idx)
    delta = pc.multiply(pc.cast(days, pa.int64()), 86_400_000_000).cast(pa.duration("us"))
    for name in columns:
        col = table[name]
        table = table.set_column(table.schema.get_field_index(name), name, pc.add(col, delta).cast(col.type))
    return table


def _generalize_birth(
    table: pa.Table,
    kind: str,
    columns: tuple[str, ...],
    birth_dates: Mapping[str, dt.date],
    by_id: dict[str, RecordOutcome],
    paths: Mapping[str, str],
) -> pa.Table:
    pids = table["patient_id"].to_pylist()
    hits = [i for i, p in enumerate(pids) if p in birth_dates]
    if not hits:
        return table
    rids = table["resource_id"].to_pylist()
    for name in columns:
        values = table[name].to_pylist()
        offset_name = name + OFFSET_SUFFIX
        has_offsets = offset_name in table.column_names
        offsets = table[offset_name].to_pylist() if has_offsets else [None] * len(values)
        changed = False
        for i in hits:
            t = values[i]
            birth = birth_dates[pids[i]]
            if t is None or birth not in local_dates(t, offsets[i]):
                continue
            values[i] = dt.datetime(birth.year, birth.month, 2 if birth.day == 1 else 1, tzinfo=dt.UTC)
            offsets[i] = None  # the cut value is a date
            changed = True
            outcome = by_id.get(rids[i])
            if outcome is not None:
                base = paths.get(rids[i], "")
                _warn(outcome, kind, name, f"{base}.{_ELEMENT[name]}" if base else _ELEMENT[name])
        if changed:
            col = pa.array(values, table.schema.field(name).type)
            table = table.set_column(table.schema.get_field_index(name), name, col)
            if has_offsets:
                col = pa.array(offsets, table.schema.field(offset_name).type)
                table = table.set_column(table.schema.get_field_index(offset_name), offset_name, col)
    return table


def warn_generalized(outcomes: list[RecordOutcome], generalized: Mapping[str, list[str]]) -> None:
    """DATE_GENERALIZED warnings for the records whose date the store's birth-date guard cut
    (``CommitResult.generalized``: kind -> resource ids)."""
    if not generalized:
        return
    changed = {(kind, rid) for kind, ids in generalized.items() for rid in ids}
    for o in outcomes:
        if o.status is not Status.REJECTED and (o.kind, o.source_id) in changed:
            _warn(o, o.kind, "date", "")


def _warn(outcome: RecordOutcome, kind: str, column: str, path: str) -> None:
    message = f"{kind} {column} equals the patient's birth date: cut to the birth month"
    if any(i.code == IssueCode.DATE_GENERALIZED and i.field_path == path for i in outcome.issues):
        return
    outcome.issues.append(Issue(IssueCode.DATE_GENERALIZED, message, path))
    if outcome.status is Status.ACCEPTED:
        outcome.status = Status.ACCEPTED_WITH_WARNINGS
