"""FHIR as other generators write it: MIMIC-IV on FHIR (own ICD system URIs, undotted codes, dates
shifted into 2100-2200), a sender's own system URIs, contained patients, date-only period ends."""

from __future__ import annotations

import datetime as dt

import pytest

from healthai.normalize.context import NormalizeContext
from healthai.normalize.fhir import normalize_fhir
from healthai.normalize.records import Status

from .conftest import KEY
from .fhir_builders import MIMIC, encounter, mimic_resources, observation, patient


def test_mimic_dates_are_refused_with_the_setting_that_admits_them() -> None:
    ctx = NormalizeContext.create(key=KEY, reference_date=dt.date(2026, 12, 1))
    out = normalize_fhir(mimic_resources(), ctx=ctx, source="mimic")
    patient_outcome = out.outcomes[0]
    assert patient_outcome.status is Status.REJECTED
    message = next(i.message for i in patient_outcome.issues if i.code == "DATE_IMPOSSIBLE")
    assert "2026-12-03" in message and "latest_event_date" in message and "2128" not in message


def test_mimic_with_a_latest_event_date_is_stored_and_its_diagnoses_coded() -> None:
    ctx = NormalizeContext.create(key=KEY, reference_date=dt.date(2215, 1, 1))
    out = normalize_fhir(mimic_resources(), ctx=ctx, source="mimic")
    assert all(o.status is not Status.REJECTED for o in out.outcomes)
    cond = out.tables["condition"].to_pylist()
    assert [(c["code_system"], c["icd10_code"], c["icd9_code"]) for c in cond] == [
        ("ICD10CM", "J10.1", None), ("ICD9CM", None, "401.9")]
    assert all(c["onset"] is None and c["recorded"] is None and c["encounter_id"] for c in cond)
    assert [i.code for i in out.outcomes[2].issues] == []  # the MIMIC ICD-10 system is known
    obs = out.tables["observation"].to_pylist()[0]
    # a MIMIC lab item is not LOINC: kept as system|code, flagged
    assert obs["loinc"] == f"{MIMIC}/CodeSystem/mimic-d-labitems|50912" and obs["value"] == 0.9
    assert out.tables["encounter"].to_pylist()[0]["start"] == dt.datetime(2180, 5, 7, 2, 23, tzinfo=dt.UTC)


def test_an_operator_declares_a_senders_own_system_uris() -> None:
    own_icd = "urn:oid:1.2.3.4.5.6"
    own_loinc = "https://lab.example.org/loinc"
    cond = {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": own_icd, "code": "J111"}]}, "onsetDateTime": "2024-01-05"}
    obs = observation("8310-5", 38.2, "Cel", rid="o1", subject={"reference": "Patient/p1"})
    obs["code"]["coding"][0]["system"] = own_loinc
    plain = NormalizeContext.create(key=KEY, reference_date=dt.date(2026, 1, 1))
    declared = NormalizeContext.create(key=KEY, reference_date=dt.date(2026, 1, 1),
                                       code_systems={own_icd: "ICD10CM", own_loinc: "LOINC"})
    before = normalize_fhir([cond, obs], ctx=plain, source="s").tables
    after = normalize_fhir([cond, obs], ctx=declared, source="s").tables
    assert before["condition"]["icd10_code"].to_pylist() == [None]
    assert after["condition"]["icd10_code"].to_pylist() == ["J11.1"]
    assert before["observation"]["loinc"].to_pylist() == [f"{own_loinc}|8310-5"]
    assert after["observation"]["loinc"].to_pylist() == ["8310-5"]
    with pytest.raises(ValueError, match="'ICD11' is not one of ICD10CM, ICD9CM, SNOMED, LOINC"):
        NormalizeContext.create(key=KEY, code_systems={own_icd: "ICD11"})


def test_contained_patients_of_two_resources_are_two_patients(ctx: NormalizeContext) -> None:
    def with_contained(rid: str, family: str) -> dict:
        o = observation("8310-5", 37.0, "Cel", rid=rid, subject={"reference": "#p1"})
        o["contained"] = [{"resourceType": "Patient", "id": "p1", "name": [{"family": family}]}]
        return o

    out = normalize_fhir([with_contained("o1", "A"), with_contained("o2", "B")], ctx=ctx, source="s")
    ids = out.tables["observation"]["patient_id"].to_pylist()
    assert len(ids) == 2 and ids[0] != ids[1] and all(len(i) == 64 for i in ids)
    again = normalize_fhir([with_contained("o1", "A")], ctx=ctx, source="s")
    assert again.tables["observation"]["patient_id"].to_pylist() == ids[:1]  # stable per container

    wrong = with_contained("o3", "C")
    wrong["contained"][0]["resourceType"] = "Organization"
    bad = normalize_fhir([wrong], ctx=ctx, source="s").outcomes[0]
    assert bad.status is Status.REJECTED
    assert [(i.message, i.field_path) for i in bad.issues if i.severity == "ERROR"] == [
        ("subject must reference a Patient", "[0].subject.reference")]


@pytest.mark.parametrize(("start", "end", "stored_end"), [
    ("2015-11-01T10:00:00-05:00", "2015-11-01", dt.datetime(2015, 11, 2, tzinfo=dt.UTC)),
    ("2015-11-01T10:00:00-05:00", "2015-11", dt.datetime(2015, 12, 1, tzinfo=dt.UTC)),
    ("2015-12-20T10:00:00Z", "2015-12", dt.datetime(2016, 1, 1, tzinfo=dt.UTC)),
    ("2015-11-01", "2015-11-01T01:00:00+05:00", dt.datetime(2015, 10, 31, 20, tzinfo=dt.UTC)),
], ids=["day", "month", "december", "local-start"])
def test_a_date_only_period_end_covers_its_whole_unit(ctx: NormalizeContext, start: str, end: str,
                                                      stored_end: dt.datetime) -> None:
    enc = encounter(period={"start": start, "end": end})
    out = normalize_fhir([patient(), enc], ctx=ctx, source="s")
    assert out.outcomes[1].status is not Status.REJECTED, out.outcomes[1].issues
    assert out.tables["encounter"]["end"].to_pylist() == [stored_end]


def test_an_end_before_the_start_is_still_refused(ctx: NormalizeContext) -> None:
    for period in ({"start": "2015-11-03T10:00:00Z", "end": "2015-11-01"},
                   {"start": "2015-11-02T10:00:00Z", "end": "2015-11-02T09:00:00Z"}):
        out = normalize_fhir([patient(), encounter(period=period)], ctx=ctx, source="s")
        assert out.outcomes[1].status is Status.REJECTED
        errors = [i.message for i in out.outcomes[1].issues if i.severity == "ERROR"]
        assert errors == ["period.end is before period.start"]
