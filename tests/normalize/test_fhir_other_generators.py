"""FHIR as other generators write it: MIMIC-IV on FHIR (own ICD system URIs, undotted codes, dates
shifted into 2100-2200), a sender's own system URIs, contained patients, date-only period ends."""

from __future__ import annotations

import datetime as dt

import pytest

from healthai.normalize import features, units
from healthai.normalize.context import NormalizeContext
from healthai.normalize.fhir import normalize_fhir
from healthai.normalize.records import Status

from .conftest import KEY
from .fhir_builders import MIMIC, bundle, encounter, mimic_resources, observation, patient


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


def test_hemoglobin_in_mmol_per_litre_is_converted(ctx: NormalizeContext) -> None:
    out = normalize_fhir([observation("718-7", 8.7, "mmol/L")], ctx=ctx, source="s")
    row = out.tables["observation"].to_pylist()[0]
    assert row["unit"] == "g/dL" and row["value"] == pytest.approx(14.019, abs=1e-3)


@pytest.mark.parametrize(("timing", "stored", "message"), [
    ({"effectivePeriod": {"end": "2020-01-02T10:00:00Z"}}, dt.datetime(2020, 1, 2, 10, tzinfo=dt.UTC),
     "effectivePeriod has no start: dated by its end"),
    ({"issued": "2020-01-03T08:00:00Z"}, dt.datetime(2020, 1, 3, 8, tzinfo=dt.UTC),
     "no effective time: dated by issued, when the result was released"),
    ({"effectiveTiming": {"event": ["2020-01-02"]}, "issued": "2020-01-03T08:00:00Z"},
     dt.datetime(2020, 1, 3, 8, tzinfo=dt.UTC),
     "no effective time (effectiveTiming is not stored): dated by issued, when the result was released"),
    ({}, None, "no effective time and no issued: stored undated"),
], ids=["period-end", "issued", "timing", "none"])
def test_an_observation_without_an_effective_time_says_how_it_was_dated(
        ctx: NormalizeContext, timing: dict, stored: dt.datetime | None, message: str) -> None:
    obs = observation("8310-5", 37.0, "Cel")
    del obs["effectiveDateTime"]
    out = normalize_fhir([patient(), {**obs, **timing}], ctx=ctx, source="s")
    assert out.tables["observation"]["effective"].to_pylist() == [stored]
    assert message in [i.message for i in out.outcomes[1].issues]


def test_an_onset_age_is_said_not_stored(ctx: NormalizeContext) -> None:
    cond = {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "386661006"}]},
            "onsetAge": {"value": 52, "unit": "a", "system": "http://unitsofmeasure.org", "code": "a"},
            "abatementString": "around April or May"}
    out = normalize_fhir([cond], ctx=ctx, source="s")
    assert out.tables["condition"].num_rows == 1
    said = [(i.code, i.field_path) for i in out.outcomes[0].issues if i.code == "NOT_STORED"]
    assert said == [("NOT_STORED", "[0].onsetAge"), ("NOT_STORED", "[0].abatementString")]


def ecr_message() -> dict:
    """A public-health reporting message (eCR): a MessageHeader, then the eICR document Bundle."""
    pat = patient(id="p1")
    cond = {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "J11.1"}]},
            "onsetDateTime": "2024-01-05"}
    composition = {"resourceType": "Composition", "id": "comp1", "status": "final", "date": "2024-01-05",
                   "type": {"coding": [{"system": "http://loinc.org", "code": "55751-2"}]},
                   "subject": {"reference": "Patient/p1"}, "author": [{"display": "EHR"}], "title": "eICR"}
    document = {"resourceType": "Bundle", "id": "eicr", "type": "document", "entry": [
        {"fullUrl": f"http://ehr.example/fhir/{r['resourceType']}/{r['id']}", "resource": r}
        for r in (composition, pat, cond)]}
    header = {"resourceType": "MessageHeader", "id": "h1", "source": {"endpoint": "http://ehr.example"},
              "eventCoding": {"system": "http://example.org/message-types", "code": "eicr-report"},
              "focus": [{"reference": "Bundle/eicr"}]}
    return {"resourceType": "Bundle", "id": "m1", "type": "message", "entry": [
        {"fullUrl": "http://ehr.example/fhir/MessageHeader/h1", "resource": header},
        {"fullUrl": "http://ehr.example/fhir/Bundle/eicr", "resource": document}]}


def test_a_reporting_message_with_its_eicr_document_is_read_entry_by_entry(ctx: NormalizeContext) -> None:
    out = normalize_fhir(ecr_message(), ctx=ctx, source="ecr")
    assert [o.resource_type for o in out.outcomes] == [
        "MessageHeader", "Bundle", "Composition", "Patient", "Condition"]
    assert [o.index for o in out.outcomes] == [0, 1, 2, 3, 4]
    assert all(o.status is not Status.REJECTED for o in out.outcomes)
    assert not [i for o in out.outcomes for i in o.issues if i.code == "REFERENCE_UNRESOLVED"]
    cond = out.tables["condition"].to_pylist()
    assert [(c["icd10_code"], c["region"]) for c in cond] == [("J11.1", "US-IL")]

    message = ecr_message()
    message["entry"][1]["resource"]["entry"][2]["resource"]["onsetDateTime"] = "not a date"
    bad = normalize_fhir(message, ctx=ctx, source="ecr").outcomes[4]
    assert bad.status is Status.REJECTED
    assert [i.field_path for i in bad.issues] == ["entry[1].resource.entry[2].resource.onsetDateTime"]


FEATURE_UNITS = {"glucose_mg_dl": "mg/dL", "hba1c_pct": "%", "creatinine_mg_dl": "mg/dL",
                 "egfr": "mL/min/{1.73_m2}", "cholesterol_total_mg_dl": "mg/dL", "ldl_mg_dl": "mg/dL",
                 "hdl_mg_dl": "mg/dL", "sodium_mmol_l": "mmol/L", "potassium_mmol_l": "mmol/L"}


def test_every_lab_code_of_a_feature_converts_to_the_features_unit() -> None:
    assert set(features.LAB_CODES) == set(FEATURE_UNITS)
    for name, loincs in features.LAB_CODES.items():
        for loinc in loincs:
            assert units.CANONICAL[loinc].unit == FEATURE_UNITS[name], (name, loinc)


def test_labs_on_other_codes_and_molar_units_reach_the_features(ctx: NormalizeContext) -> None:
    """A European lab: creatinine and lipids in µmol/L and mmol/L on their molar LOINC codes, HbA1c by
    HPLC, eGFR by CKD-EPI."""
    labs = [observation("14682-9", 88.4, "umol/L", rid="l1"), observation("22748-8", 3.0, "mmol/L", rid="l2"),
            observation("14646-4", 1.2, "mmol/L", rid="l3"), observation("17856-6", 6.5, "%", rid="l4"),
            observation("62238-1", 75.0, "mL/min/{1.73_m2}", rid="l5"),
            observation("14749-6", 5.5, "mmol/L", rid="l6")]
    out = normalize_fhir(bundle(patient(), *labs), ctx=ctx, source="s")
    assert all(o.status is Status.ACCEPTED for o in out.outcomes[1:]), [o.issues for o in out.outcomes]
    f = features.patient_features(out.tables["patient"].to_pylist()[0],
                                  observations=out.tables["observation"], at=dt.date(2020, 6, 1))
    assert f["creatinine_mg_dl"] == pytest.approx(1.0, abs=1e-3)
    assert f["ldl_mg_dl"] == pytest.approx(116.01) and f["hdl_mg_dl"] == pytest.approx(46.404)
    assert (f["hba1c_pct"], f["egfr"]) == (6.5, 75.0)
    assert f["glucose_mg_dl"] == pytest.approx(99.088)
