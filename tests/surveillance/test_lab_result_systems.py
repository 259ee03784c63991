"""A lab result is positive by its code under its code system: SNOMED CT Detected/Positive/Present under
SNOMED CT (URI, OID or a near miss), LOINC answers under LOINC; the same code under a laboratory's own
system, or under the other standard, is not a case. Stored for real (normalize → Parquet store → counts)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from healthai.normalize.context import NormalizeContext
from healthai.normalize.fhir import normalize_fhir
from healthai.store import ParquetStore
from healthai.surveillance import SurveillanceCounts

SNOMED, LOINC, LOCAL = "http://snomed.info/sct", "http://loinc.org", "http://example.org/local-results"
FLU_A = "92142-9"

POSITIVE = [
    (SNOMED, "10828004"),
    ("urn:oid:2.16.840.1.113883.6.96", "260373001"),  # SNOMED CT's OID
    ("https://snomed.info/sct/", "52101004"),  # a near miss of its URI
    (LOINC, "LA11882-0"),
    ("urn:oid:2.16.840.1.113883.6.1", "LA6576-8"),  # LOINC's OID
]
NOT_POSITIVE = [
    (LOCAL, "10828004"),  # a local code that happens to be spelled like SNOMED CT Positive
    (LOCAL, "LA6576-8"),
    (SNOMED, "LA6576-8"),  # a LOINC answer under SNOMED CT
    (LOINC, "260373001"),  # a SNOMED CT code under LOINC
    (None, "10828004"),  # no system at all
]


def patient(pid: str) -> dict:
    return {"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "1980-02-03",
            "address": [{"use": "home", "state": "MA", "country": "US"}]}


def lab_result(rid: str, pid: str, system: str | None, code: str) -> dict:
    coding = {"code": code} if system is None else {"system": system, "code": code}
    return {"resourceType": "Observation", "id": rid, "status": "final",
            "code": {"coding": [{"system": LOINC, "code": FLU_A}]},
            "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": "2026-01-05T09:00:00Z",
            "valueCodeableConcept": {"coding": [coding]}}


def flu_lab_count(tmp_path: Path, results: list[tuple[str | None, str]]) -> int:
    store = ParquetStore(str(tmp_path)).open()
    ctx = NormalizeContext.create(key=bytes(range(32)), reference_date=dt.date(2026, 6, 1))
    payload = [r for i, (system, code) in enumerate(results)
               for r in (patient(f"p{i}"), lab_result(f"o{i}", f"p{i}", system, code))]
    out = normalize_fhir(payload, ctx=ctx, source="lab")
    assert all(o.status != "REJECTED" for o in out.outcomes), [o.issues for o in out.outcomes]
    stored = out.tables["observation"]["value_code"].to_pylist()
    assert len(stored) == len(results)
    store.commit({k: t for k, t in out.tables.items() if t.num_rows})
    df = SurveillanceCounts(store).counts("flu_lab", "D")
    return int(df.to_numpy().sum()) if not df.empty else 0


@pytest.mark.parametrize(("system", "code"), POSITIVE)
def test_a_positive_code_under_its_own_system_is_a_case(tmp_path: Path, system: str, code: str) -> None:
    assert flu_lab_count(tmp_path, [(system, code)]) == 1


@pytest.mark.parametrize(("system", "code"), NOT_POSITIVE)
def test_the_code_under_another_system_is_no_case(tmp_path: Path, system: str | None, code: str) -> None:
    assert flu_lab_count(tmp_path, [(system, code)]) == 0


def test_one_store_with_both(tmp_path: Path) -> None:
    assert flu_lab_count(tmp_path, POSITIVE + NOT_POSITIVE) == len(POSITIVE)
