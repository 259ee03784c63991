"""Every event time keeps the UTC offset it was written in (``<name>_utc_offset_min``), from FHIR,
flat strings and Arrow timestamps alike; the birth-date guard cuts an event whose date *as written*
is the birth date, even when its UTC date is the next day."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from healthai.normalize.context import NormalizeContext
from healthai.normalize.fhir import normalize_fhir
from healthai.normalize.fhir_types import DATE_ONLY, parse_datetime, utc_offset_minutes
from healthai.normalize.flat import normalize_table
from healthai.normalize.records import OFFSET_SUFFIX, SCHEMAS

UTC = dt.UTC


def condition(cid: str, onset: str, recorded: str | None = None) -> dict:
    res = {"resourceType": "Condition", "id": cid, "subject": {"reference": "Patient/p1"},
           "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "J10.1"}]},
           "onsetDateTime": onset}
    return res | ({"recordedDate": recorded} if recorded else {})


def bundle(*resources: dict) -> dict:
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}


PATIENT = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "2020-03-05",
           "address": [{"state": "IL", "country": "US"}]}


@pytest.mark.parametrize(("text", "minutes"), [
    ("2024-01-09T20:30:00-05:00", -300), ("2024-01-09T20:30:00+05:30", 330), ("2024-01-09T20:30:00Z", 0),
    ("2024-01-09T20:30:00+00:00", 0), ("2024-01-09", None), ("2024-01", None), ("2024", None),
])
def test_offset_as_written(text: str, minutes: int | None) -> None:
    value = parse_datetime(text, keep_offset=True)
    assert utc_offset_minutes(value) == minutes
    assert value == parse_datetime(text)  # the same instant either way
    assert (value.tzinfo is DATE_ONLY) == (minutes is None)


def test_every_event_column_has_an_offset_column() -> None:
    for kind, names in {"encounter": ("start", "end"), "condition": ("onset", "abatement", "recorded"),
                        "observation": ("effective",)}.items():
        for name in names:
            assert SCHEMAS[kind].field(name + OFFSET_SUFFIX).type == pa.int16()


def test_fhir_condition_keeps_utc_and_the_offset(ctx: NormalizeContext) -> None:
    out = normalize_fhir(bundle(PATIENT, condition("c1", "2024-01-09T20:30:00-05:00", "2024-01-10"),
                                condition("c2", "2024-01-09T20:30:00Z")), ctx=ctx, source="s")
    rows = out.tables["condition"].to_pylist()
    assert rows[0]["onset"] == dt.datetime(2024, 1, 10, 1, 30, tzinfo=UTC)  # stored in UTC, as before
    assert rows[0]["onset" + OFFSET_SUFFIX] == -300
    assert rows[0]["recorded"] == dt.datetime(2024, 1, 10, tzinfo=UTC)
    assert rows[0]["recorded" + OFFSET_SUFFIX] is None  # a date: no time, no offset
    assert rows[1]["onset" + OFFSET_SUFFIX] == 0
    assert rows[0]["abatement" + OFFSET_SUFFIX] is None


def test_flat_strings_keep_their_offsets(ctx: NormalizeContext) -> None:
    table = pa.table({"condition_id": ["a", "b", "c", "d", "e", "f"], "patient_id": ["p"] * 6,
                      "code": ["J10.1"] * 6, "code_system": ["ICD10CM"] * 6,
                      "onset": ["2024-01-09T20:30:00-05:00", "2024-01-09T20:30:00+0530",
                                "2024-01-09T20:30:00Z", "2024-01-09", None,
                                "2024-01-09T20:30:00.123456-08:00"]})
    out = normalize_table("condition", table, ctx=ctx, source="s")
    assert out.tables["condition"]["onset" + OFFSET_SUFFIX].to_pylist() == [-300, 330, 0, None, None, -480]
    assert out.tables["condition"]["onset"][0].as_py() == dt.datetime(2024, 1, 10, 1, 30, tzinfo=UTC)


def test_arrow_timestamps_in_a_named_zone_follow_daylight_saving(ctx: NormalizeContext) -> None:
    winter, summer = dt.datetime(2024, 1, 10, 2, 30, tzinfo=UTC), dt.datetime(2024, 7, 10, 1, 30, tzinfo=UTC)
    chicago = pa.array([winter, summer, None], pa.timestamp("us", tz="America/Chicago"))
    base = {"encounter_id": ["a", "b", "c"], "patient_id": ["p"] * 3, "class_code": ["AMB"] * 3}
    zoned = normalize_table("encounter", pa.table(base | {"start": chicago}), ctx=ctx, source="s")
    assert zoned.tables["encounter"]["start" + OFFSET_SUFFIX].to_pylist() == [-360, -300, None]
    naive = pa.array([dt.datetime(2024, 1, 9, 20, 30)] * 3, pa.timestamp("us"))  # no zone: read as UTC
    days = pa.array([dt.date(2024, 1, 9)] * 3, pa.date32())
    for column in (naive, days):
        out = normalize_table("encounter", pa.table(base | {"start": column}), ctx=ctx, source="s")
        assert out.tables["encounter"]["start" + OFFSET_SUFFIX].null_count == 3


def test_birth_guard_cuts_the_date_as_written(ctx: NormalizeContext) -> None:
    """Born 2020-03-05; seen at 21:00-05:00 that evening (03-06 in UTC): the stored time plus its offset
    would give the birth date back, so it is cut like any birth-day event."""
    encounter = {"resourceType": "Encounter", "id": "e1", "status": "finished", "class": {"code": "IMP"},
                 "subject": {"reference": "Patient/p1"}, "period": {"start": "2020-03-05T21:00:00-05:00"}}
    later = encounter | {"id": "e2", "period": {"start": "2020-03-06T21:00:00-05:00"}}
    out = normalize_fhir(bundle(PATIENT, encounter, later), ctx=ctx, source="s")
    rows = out.tables["encounter"].to_pylist()
    offset = "start" + OFFSET_SUFFIX
    assert rows[0]["start"] == dt.datetime(2020, 3, 1, tzinfo=UTC) and rows[0][offset] is None
    assert "DATE_GENERALIZED" in [i.code for i in out.outcomes[1].issues]
    assert rows[1]["start"] == dt.datetime(2020, 3, 7, 2, tzinfo=UTC) and rows[1][offset] == -300
    assert "DATE_GENERALIZED" not in [i.code for i in out.outcomes[2].issues]
