"""Flat records' dates and places as FHIR's: a year- or month-only onset is warned (DATE_PARTIAL), a
naive date-time is UTC, a county FIPS or ZIP code alone places a row, and a row sent with its patient
keeps the patient's place of that request — in the normalizer and through the real Ingest server."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pytest

from healthai.normalize.context import NormalizeContext
from healthai.normalize.flat import normalize_table, normalize_tables
from healthai.normalize.records import Status
from healthai.store import ParquetStore
from healthai.surveillance import SurveillanceCounts
from healthai.v1 import common_pb2, ingest_pb2
from tests.ingest.conftest import serve


def _issues(batch) -> list[list[tuple[str, str]]]:
    return [[(i.code, i.field_path) for i in o.issues] for o in batch.outcomes]


def _conditions(**columns: list) -> pa.Table:
    n = len(next(iter(columns.values())))
    return pa.table({"condition_id": [f"c{i}" for i in range(n)], "patient_id": ["p"] * n,
                     "code": ["J11.1"] * n, **columns})


# ---------------------------------------------------------------- partial dates
def test_a_year_or_month_onset_is_warned_as_fhir_warns_it(ctx: NormalizeContext) -> None:
    table = _conditions(onset=["2026", "2026-03", "2026-03-04", "2026-03-04T10:00:00Z", None],
                        recorded=["2026", "2026-05", "2026-05-20", None, "2026"])
    out = normalize_table("condition", table, ctx=ctx, source="s")
    assert _issues(out) == [[("DATE_PARTIAL", "[0].onset")], [("DATE_PARTIAL", "[1].onset")], [], [], []]
    assert [i.message for o in out.outcomes[:2] for i in o.issues] == [
        "onset gives only a year: stored as its first day, where daily and weekly counts place the case",
        "onset gives only a month: stored as its first day, where daily and weekly counts place the case"]
    assert [o.status for o in out.outcomes[:3]] == [Status.ACCEPTED_WITH_WARNINGS] * 2 + [Status.ACCEPTED]
    onsets = out.tables["condition"]["onset"].to_pylist()
    assert [t.date() if t else None for t in onsets] == [dt.date(2026, 1, 1), dt.date(2026, 3, 1),
                                                         dt.date(2026, 3, 4), dt.date(2026, 3, 4), None]


# ---------------------------------------------------------------- naive date-times
def test_a_naive_date_time_is_utc_as_documented(ctx: NormalizeContext) -> None:
    table = _conditions(onset=["2026-01-03T23:59:00", "2026-01-03T23:59", "2026-01-03T25:00:00",
                               "2026-01-03T10:00:00-05:00"],
                        recorded=["2026-01-03T23:59:00.5", None, None, None])
    out = normalize_table("condition", table, ctx=ctx, source="s")
    assert _issues(out) == [[], [], [("INVALID_FIELD", "[2].onset")], []]
    rows = out.tables["condition"].to_pylist()
    utc = dt.UTC
    assert [r["onset"] for r in rows] == [dt.datetime(2026, 1, 3, 23, 59, tzinfo=utc)] * 2 + [
        dt.datetime(2026, 1, 3, 15, 0, tzinfo=utc)]
    assert rows[0]["recorded"] == dt.datetime(2026, 1, 3, 23, 59, 0, 500000, tzinfo=utc)
    # written without a zone: no offset kept, so its local date is its UTC date (as written)
    assert [r["onset_utc_offset_min"] for r in rows] == [None, None, -300]


# ---------------------------------------------------------------- places
def test_a_county_fips_or_zip_code_alone_places_the_row(ctx: NormalizeContext) -> None:
    table = pa.table({
        "patient_id": ["fips", "zip", "zip+4", "ct", "nozip", "name", "abroad", "both"],
        "county": ["25017", None, None, None, None, "Middlesex", None, "25025"],
        "postal_code": [None, "02139", "02139-4307", "06103", "00000", None, "10115", "02139"],
        "country": [None, None, "US", None, None, None, "DE", None],
    })
    out = normalize_table("patient", table, ctx=ctx, source="s")
    rows = out.tables["patient"].to_pylist()
    assert [(r["region"], r["county"]) for r in rows] == [
        ("US-MA", "25017"), ("US-MA", "25017"), ("US-MA", "25017"),
        ("US-CT", None),  # Connecticut's ZIP codes give no county yet: its state still
        (None, None), (None, None), (None, None),  # a 5-digit postal code abroad is no ZIP code
        ("US-MA", "25025")]  # the county named wins over the ZIP code
    assert _issues(out) == [[], [], [], [], [("INVALID_FIELD", "[4].postal_code")],
                            [("INVALID_FIELD", "[5].county")], [("INVALID_FIELD", "[6].postal_code")], []]
    messages = [i.message for o in out.outcomes for i in o.issues]
    assert "the row has no state to find a county name in" in messages[1]
    assert "of the row's state" not in messages[1]
    assert not any("00000" in m or "10115" in m or "Middlesex" in m for m in messages)
    assert "02139" not in json.dumps(rows, default=str)


def test_a_county_of_the_rows_state_is_still_checked_against_it(ctx: NormalizeContext) -> None:
    table = pa.table({"patient_id": ["a", "b"], "state": ["NY", "MA"], "county": ["25017", "Gotham"]})
    out = normalize_table("patient", table, ctx=ctx, source="s")
    assert [(r["region"], r["county"]) for r in out.tables["patient"].to_pylist()] == [("US-NY", None),
                                                                                       ("US-MA", None)]
    assert all(i.message.startswith("county is not a US county (FIPS or name) of the row's state")
               for o in out.outcomes for i in o.issues)


def test_rows_sent_with_their_patient_take_its_place(ctx: NormalizeContext) -> None:
    tables = {
        "patient": pa.table({"patient_id": ["p1", "p2"], "region": ["US-ME", None],
                             "postal_code": ["04101", None]}),
        "encounter": pa.table({"encounter_id": ["e1"], "patient_id": ["p1"], "start": ["2026-02-02"]}),
        "condition": pa.table({"condition_id": ["own", "theirs", "zipped", "unplaced", "away"],
                               "patient_id": ["p1", "p1", "p1", "p2", "p3"], "code": ["J11.1"] * 5,
                               "region": ["US-NH", None, None, None, None],
                               "postal_code": [None, None, "05401", None, None]}),
        "observation": pa.table({"observation_id": ["o1"], "patient_id": ["p1"], "loinc": ["8310-5"],
                                 "value": [38.5]}),
    }
    batches = normalize_tables(tables, ctx=ctx, source="s")
    assert [b.outcomes[0].kind for b in batches] == list(tables)
    out = {kind: b.tables[kind].to_pylist() for kind, b in zip(tables, batches, strict=True)}
    assert [(r["region"], r["county"]) for r in out["patient"]] == [("US-ME", "23005"), (None, None)]
    assert [(r["region"], r["county"]) for r in out["condition"]] == [
        ("US-NH", None),       # its own place
        ("US-ME", "23005"),    # its patient's, of this request
        ("US-VT", "50007"),    # its own (by ZIP code)
        (None, None),          # a patient with no place gives none
        (None, None)]          # a patient not in the request: linked to the stored one when counted
    assert [(r["region"], r["county"]) for r in out["encounter"] + out["observation"]] == [
        ("US-ME", "23005")] * 2
    alone = normalize_table("condition", tables["condition"], ctx=ctx, source="s")
    assert alone.tables["condition"]["region"].to_pylist() == ["US-NH", None, "US-VT", None, None]


# ---------------------------------------------------------------- through the real server
def _counts(store_dir: Path) -> list[tuple[str, str, int]]:
    store = ParquetStore(str(store_dir)).open()
    try:
        frame = SurveillanceCounts(store).counts("ili", "D")
    finally:
        store.close()
    return [(place, str(day.date()), int(n)) for (place, day), n in frame.unstack().items() if n]


@pytest.fixture
def server(tmp_path: Path):
    yield from serve(tmp_path / "store")


def _send(server, **records: list) -> ingest_pb2.IngestReply:
    flat = ingest_pb2.FlatRecords(**records)
    return server.stub.IngestBatch(ingest_pb2.IngestRequest(source="s", flat=flat), timeout=30)


def test_a_flat_condition_keeps_the_place_it_was_sent_with(server) -> None:
    """The patient moves ME -> VT later: the case sent with it stays a Maine case (as FHIR's)."""
    _send(server, patients=[ingest_pb2.PatientRecord(patient_id="p", region="US-ME")],
          conditions=[ingest_pb2.ConditionRecord(condition_id="c", patient_id="p", code="J11.1",
                                                 onset="2026-02-02")])
    assert _counts(server.store_dir) == [("US-ME", "2026-02-02", 1)]
    _send(server, patients=[ingest_pb2.PatientRecord(patient_id="p", region="US-VT")])
    assert _counts(server.store_dir) == [("US-ME", "2026-02-02", 1)]


def test_flat_dates_and_places_through_the_server(server) -> None:
    reply = _send(server, patients=[ingest_pb2.PatientRecord(patient_id="a", county="25017"),
                                    ingest_pb2.PatientRecord(patient_id="b", postal_code="02139")],
                  conditions=[ingest_pb2.ConditionRecord(condition_id="ca", patient_id="a", code="J11.1",
                                                         onset="2026"),
                              ingest_pb2.ConditionRecord(condition_id="cb", patient_id="b", code="J11.1",
                                                         onset="2026-03-04T23:59:00")])
    got = [(o.status, [(i.code, i.field_path) for i in o.issues]) for o in reply.outcomes]
    ok, warned = common_pb2.RECORD_STATUS_ACCEPTED, common_pb2.RECORD_STATUS_ACCEPTED_WITH_WARNINGS
    assert got == [(ok, []), (ok, []), (warned, [("DATE_PARTIAL", "flat.conditions[0].onset")]), (ok, [])]
    assert _counts(server.store_dir) == [("US-MA", "2026-01-01", 1), ("US-MA", "2026-03-04", 1)]
