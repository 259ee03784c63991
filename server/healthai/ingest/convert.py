"""Proto <-> domain conversions for the Ingest service (no logic beyond shape)."""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from operator import attrgetter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from healthai.errors import InvalidInput
from healthai.ingest.arrow_guard import decoded_bytes
from healthai.normalize import records
from healthai.store import CommitResult
from healthai.v1 import common_pb2, ingest_pb2

# flat-record kind -> (FlatRecords field, message fields by type: strings, optional doubles, optional bools).
# Field names equal healthai.normalize.flat.INPUT_COLUMNS (asserted in tests).
_LOCATION = ("state", "country", "region", "county", "postal_code")
MAX_DECODED_BYTES = 256 * 2**20  # an Arrow payload's decoded size (compressed batches can be bombs)
FLAT_KINDS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    records.PATIENT: ("patients", ("patient_id", "sex", "birth_date", "deceased_date", *_LOCATION), (),
                      ("deceased",)),
    records.ENCOUNTER: ("encounters", ("encounter_id", "patient_id", "status", "class_code", "start", "end",
                                       *_LOCATION), (), ()),
    records.CONDITION: ("conditions", ("condition_id", "patient_id", "code", "code_system", "encounter_id",
                                       "clinical_status", "verification_status", "onset", "recorded",
                                       *_LOCATION), (), ()),
    records.OBSERVATION: ("observations", ("observation_id", "patient_id", "loinc", "unit", "panel_loinc",
                                           "encounter_id", "status", "category", "effective", *_LOCATION),
                          ("value",), ()),
}

PROTO_KIND: dict[str, int] = {
    records.PATIENT: common_pb2.RECORD_KIND_PATIENT,
    records.ENCOUNTER: common_pb2.RECORD_KIND_ENCOUNTER,
    records.CONDITION: common_pb2.RECORD_KIND_CONDITION,
    records.OBSERVATION: common_pb2.RECORD_KIND_OBSERVATION,
}
KIND_OF_PROTO = {v: k for k, v in PROTO_KIND.items()}

_STATUS = {
    records.Status.ACCEPTED: common_pb2.RECORD_STATUS_ACCEPTED,
    records.Status.ACCEPTED_WITH_WARNINGS: common_pb2.RECORD_STATUS_ACCEPTED_WITH_WARNINGS,
    records.Status.REJECTED: common_pb2.RECORD_STATUS_REJECTED,
}
_SEVERITY = {
    records.Severity.WARNING: common_pb2.SEVERITY_WARNING,
    records.Severity.ERROR: common_pb2.SEVERITY_ERROR,
}


def flat_table(kind: str, messages: Sequence[object]) -> pa.Table:
    """Repeated flat-record messages of one kind -> a pa.Table (empty strings / unset become nulls)."""
    _, strings, doubles, bools = FLAT_KINDS[kind]
    columns: dict[str, pa.Array] = {}
    messages = list(messages)  # iterating a repeated field builds new wrappers each time: once only
    for name in strings:
        values = list(map(attrgetter(name), messages))  # ~2x faster than transposing per-message tuples
        if any(values):  # "" means absent; a column nobody filled is all nulls (no conversion)
            arr = pa.array(values, pa.string())
            columns[name] = pc.if_else(pc.equal(arr, ""), pa.scalar(None, pa.string()), arr)
        else:
            columns[name] = pa.nulls(len(values), pa.string())
    for names, arrow_type in ((doubles, pa.float64()), (bools, pa.bool_())):
        for name in names:
            values = [getattr(m, name) if m.HasField(name) else None for m in messages]  # optional
            columns[name] = pa.array(values, arrow_type)
    return pa.table(columns)


def flat_tables(flat: ingest_pb2.FlatRecords) -> dict[str, pa.Table]:
    """Non-empty kinds of a FlatRecords message, each as a pa.Table."""
    out: dict[str, pa.Table] = {}
    for kind, (attr, *_) in FLAT_KINDS.items():
        messages = getattr(flat, attr)
        if len(messages):
            out[kind] = flat_table(kind, messages)
    return out


def arrow_table(arrow: ingest_pb2.ArrowRecords) -> tuple[str, pa.Table]:
    """Decode an ArrowRecords payload: (kind, table). Bad kind or bytes -> InvalidInput."""
    kind = KIND_OF_PROTO.get(arrow.kind)
    if kind is None:
        names = ", ".join(common_pb2.RecordKind.Name(v) for v in PROTO_KIND.values())
        raise InvalidInput(f"arrow.kind {arrow.kind} is not one of {names}", field="arrow.kind")
    if not arrow.ipc_stream:
        raise InvalidInput("arrow.ipc_stream is empty", field="arrow.ipc_stream")
    stream = pa.py_buffer(arrow.ipc_stream)
    try:
        size = decoded_bytes(stream)  # before decoding anything: compressed batches may be bombs
        if size > MAX_DECODED_BYTES:
            raise InvalidInput(f"arrow.ipc_stream decodes to {size / 2**20:,.0f} MiB, more than the "
                               f"{MAX_DECODED_BYTES // 2**20} MiB one request may hold: send it in parts",
                               field="arrow.ipc_stream")
        with pa.ipc.open_stream(stream) as reader:
            table = reader.read_all()
    except (pa.ArrowInvalid, OSError, ValueError, struct.error) as e:
        if isinstance(e, InvalidInput):
            raise
        raise InvalidInput(f"arrow.ipc_stream is not a valid Arrow IPC stream: {e}",
                           field="arrow.ipc_stream") from e
    return kind, table


def path_prefix(request: ingest_pb2.IngestRequest, kind: str) -> str:
    """Where a record's relative field paths ("[3].value") live in the request."""
    payload = request.WhichOneof("payload")
    if payload == "flat" and kind in FLAT_KINDS:
        return f"flat.{FLAT_KINDS[kind][0]}"
    if payload == "arrow":
        return "arrow.rows"
    return ""


def add_outcomes(target: Any, request: ingest_pb2.IngestRequest, outcomes: Sequence[records.RecordOutcome],
                 request_index: int = 0) -> list[int]:
    """Append RecordOutcome messages (per the request's outcome_detail) to ``target`` (a response's
    ``outcomes``); return the status of every record. Built in place: this runs once per record."""
    everything = request.outcome_detail == ingest_pb2.OUTCOME_DETAIL_ALL
    per_type: dict[str, tuple[int, str]] = {}  # resource_type -> (proto kind, field path prefix)
    add = target.add
    statuses = []
    for o in outcomes:
        status = _STATUS[o.status]
        statuses.append(status)
        if not (everything or o.issues):
            continue
        meta = per_type.get(o.resource_type)
        if meta is None:
            kind = o.kind
            proto_kind = PROTO_KIND.get(kind, common_pb2.RECORD_KIND_OTHER if kind else
                                        common_pb2.RECORD_KIND_UNSPECIFIED)
            meta = per_type[o.resource_type] = (proto_kind, path_prefix(request, kind))
        message = add(index=o.index, kind=meta[0], resource_type=o.resource_type, source_id=o.source_id or "",
                      status=status, request_index=request_index)
        if o.issues:
            add_issue, prefix = message.issues.add, meta[1]  # built in place, not built then copied
            for i in o.issues:
                add_issue(code=str(i.code), message=i.message, field_path=prefix + i.field_path,
                          severity=_SEVERITY.get(i.severity, common_pb2.SEVERITY_UNSPECIFIED))
    return statuses


def receipt_to_proto(batch_id: str, commits: Sequence[CommitResult]) -> ingest_pb2.Receipt:
    stored: dict[str, int] = {}
    for c in commits:
        for kind, n in c.stored.items():
            stored[kind] = stored.get(kind, 0) + n
    sequences = [c.sequence for c in commits if c.sequence]
    return ingest_pb2.Receipt(
        batch_id=batch_id,
        sequence=max(sequences, default=0),
        first_sequence=min(sequences, default=0),
        stored=stored,
        duplicates=sum(c.duplicates for c in commits),
        revised=sum(len(ids) for c in commits for ids in c.revised.values()),
        files=[f for c in commits for f in c.files],
    )


def mark_already_stored(outcomes: Sequence[ingest_pb2.RecordOutcome], commit: CommitResult) -> None:
    """Add an INFO issue ALREADY_STORED to non-rejected outcomes whose rows were skipped as duplicates
    (same source + record key stored before): idempotent re-sends are visible per record."""
    skipped = {k: t["resource_id"].to_pylist() for k, t in commit.skipped.items()
               if "resource_id" in t.column_names}
    _mark_info(outcomes, skipped, "ALREADY_STORED",
               "already stored from this source (same record key); not stored again")


def mark_revised(outcomes: Sequence[ingest_pb2.RecordOutcome], commit: CommitResult) -> None:
    """Add an INFO issue REVISED to outcomes whose rows were stored as a new version of a record
    already stored (same source + record key, other content)."""
    _mark_info(outcomes, commit.revised, "REVISED",
               "a new version of a record already stored from this source (same record key, other content): "
               "it replaces the earlier version in reads and counts")


def _mark_info(outcomes: Sequence[ingest_pb2.RecordOutcome], ids: Mapping[str, Sequence[str]], code: str,
               message: str) -> None:
    """An INFO issue ``code`` on the non-rejected outcomes of the resources ``ids`` (kind -> ids)."""
    by_kind = {PROTO_KIND[k]: set(v) for k, v in ids.items() if k in PROTO_KIND}
    if not by_kind:
        return
    for o in outcomes:
        if o.status != common_pb2.RECORD_STATUS_REJECTED and o.source_id in by_kind.get(o.kind, ()):
            o.issues.append(common_pb2.Issue(code=code, severity=common_pb2.SEVERITY_INFO, message=message))


def mark_generalized(outcomes: Sequence[ingest_pb2.RecordOutcome], commit: CommitResult) -> None:
    """Add a DATE_GENERALIZED warning to outcomes whose event date the store's birth-date guard cut
    (streams: their outcomes are built before the commit; single batches got it on the domain outcome)."""
    changed = {PROTO_KIND[k]: set(ids) for k, ids in commit.generalized.items() if k in PROTO_KIND}
    if not changed:
        return
    for o in outcomes:
        if o.source_id in changed.get(o.kind, ()) and not any(i.code == "DATE_GENERALIZED" for i in o.issues):
            o.issues.append(common_pb2.Issue(
                code="DATE_GENERALIZED", severity=common_pb2.SEVERITY_WARNING,
                message=f"{o.resource_type} date equals the patient's birth date: cut to the birth month"))
