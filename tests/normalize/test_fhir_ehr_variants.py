"""FHIR as EHRs other than Synthea write it (Epic, Cerner, InterSystems IRIS, OpenMRS, IPS documents):
patient classes from HL7 v2 or a vendor's own system, panel codes listed before the measurement's own,
WHO ICD-10 codes, text-only codes, addresses that ended, near-miss system URIs."""

from __future__ import annotations

import pytest

from healthai.normalize.context import NormalizeContext
from healthai.normalize.fhir import normalize_fhir
from healthai.normalize.records import Status

from .fhir_builders import bundle, encounter, observation, patient

LOINC = "http://loinc.org"
WHO = "http://hl7.org/fhir/sid/icd-10"
EPIC_CLASS = "urn:oid:1.2.840.114350.1.72.1.7.7.10.696784.13260"


def issues(outcome) -> list[tuple[str, str]]:
    return [(i.code, i.field_path) for i in outcome.issues]


@pytest.mark.parametrize(("cls", "stored", "warned"), [
    ({"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"}, "IMP", False),
    ({"code": "EMER"}, "EMER", False),
    ({"system": "http://terminology.hl7.org/CodeSystem/v2-0004", "code": "O"}, "AMB", False),
    ({"system": "http://terminology.hl7.org/CodeSystem/v2-0004", "code": "I"}, "IMP", False),
    ({"system": "http://terminology.hl7.org/CodeSystem/v2-0004", "code": "P"}, None, True),
    ({"system": EPIC_CLASS, "code": "13", "display": "Support OP Encounter"}, None, True),
], ids=["v3", "no-system", "v2-outpatient", "v2-inpatient", "v2-preadmit", "epic"])
def test_encounter_class_is_a_v3_actcode_or_said_unknown(ctx: NormalizeContext, cls: dict,
                                                         stored: str | None, warned: bool) -> None:
    out = normalize_fhir(bundle(patient(), encounter(**{"class": cls})), ctx=ctx, source="s")
    assert out.outcomes[1].status is not Status.REJECTED
    assert out.tables["encounter"]["class_code"].to_pylist() == [stored]
    assert (("CODE_SYSTEM_UNKNOWN", "entry[1].resource.class") in issues(out.outcomes[1])) is warned


def test_the_measurements_own_loinc_wins_over_a_panel_code_listed_first(ctx: NormalizeContext) -> None:
    obs = observation("9279-1", 18, "/min")
    obs["code"]["coding"] = [{"system": "urn:oid:1.2.840.114350.1.13.0.1.7.2.707679", "code": "9"},
                             {"system": LOINC, "code": "8716-3", "display": "Vital signs"},
                             {"system": LOINC, "code": "9279-1", "display": "Respiratory rate"}]
    out = normalize_fhir(bundle(patient(), obs), ctx=ctx, source="s")
    assert out.tables["observation"]["loinc"].to_pylist() == ["9279-1"]
    obs["code"]["coding"] = [{"system": LOINC, "code": "8716-3"}, {"system": LOINC, "code": "75539-7"}]
    first = normalize_fhir(bundle(patient(), obs), ctx=ctx, source="s")  # neither known: the first
    assert first.tables["observation"]["loinc"].to_pylist() == ["8716-3"]


def condition(coding: list[dict] | None, text: str | None = None) -> dict:
    code = {k: v for k, v in (("coding", coding), ("text", text)) if v is not None}
    return {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
            "onsetDateTime": "2021-03-01", **({"code": code} if code else {})}


@pytest.mark.parametrize(("system", "code", "icd10"), [
    (WHO, "E14.9", "E14.9"),            # WHO only (unspecified diabetes): in the WHO classification
    (WHO, "E11.9", "E11.9"),            # in both
    (WHO, "E11.65", "E11.65"),          # ICD-10-CM sent under the WHO URI (common in US feeds)
    ("urn:oid:2.16.840.1.113883.6.3", "I250", "I25.0"),  # WHO only (CM splits I25.1x)
    ("http://hl7.org/fhir/sid/icd-10-cm", "E14.9", None),  # not ICD-10-CM
], ids=["who-only", "both", "cm-under-who", "who-oid", "who-code-under-cm"])
def test_who_icd10_codes_under_the_who_uri(ctx: NormalizeContext, system: str, code: str,
                                           icd10: str | None) -> None:
    out = normalize_fhir([condition([{"system": system, "code": code}])], ctx=ctx, source="s")
    assert out.tables["condition"]["icd10_code"].to_pylist() == [icd10]
    invalid = [i.message for i in out.outcomes[0].issues if i.code == "ICD10_INVALID"]
    assert bool(invalid) is (icd10 is None)


def test_a_condition_without_a_coding_is_accepted_and_said_not_stored(ctx: NormalizeContext) -> None:
    for cond in (condition(None, text="Worried about housing"), condition(None)):
        out = normalize_fhir([cond], ctx=ctx, source="s")
        assert out.outcomes[0].status is Status.ACCEPTED_WITH_WARNINGS
        assert [c for c, _ in issues(out.outcomes[0]) if c != "REFERENCE_UNRESOLVED"] == ["NOT_STORED"]
        assert out.tables["condition"].num_rows == 0
    obs = observation("8310-5", 37.0, "Cel")
    obs["code"] = {"text": "Temperature (free text)"}
    out = normalize_fhir(bundle(patient(), obs), ctx=ctx, source="s")
    assert issues(out.outcomes[1]) == [("NOT_STORED", "entry[1].resource.code")]
    obs["code"] = {}
    assert normalize_fhir(bundle(patient(), obs), ctx=ctx, source="s").outcomes[1].status is Status.REJECTED


def test_the_primary_code_is_the_first_of_a_known_system(ctx: NormalizeContext) -> None:
    coding = [{"code": "156587AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},  # OpenMRS concept uuid, no system
              {"system": "http://snomed.info/sct/", "code": "195662009"}]  # trailing slash
    row = normalize_fhir([condition(coding)], ctx=ctx, source="s").tables["condition"].to_pylist()[0]
    assert (row["code_system"], row["code"], row["snomed_code"]) == ("SNOMED", "195662009", "195662009")


def test_near_miss_system_uris_are_read_as_the_standard_one(ctx: NormalizeContext) -> None:
    obs = observation("8310-5", 37.0, "Cel")
    obs["code"]["coding"][0]["system"] = "https://loinc.org"
    out = normalize_fhir(bundle(patient(), obs), ctx=ctx, source="s")
    assert out.tables["observation"]["loinc"].to_pylist() == ["8310-5"]


def test_the_region_is_the_current_home_address(ctx: NormalizeContext) -> None:
    moved = patient(address=[
        {"use": "home", "state": "WI", "country": "US", "period": {"end": "2019-12-31"}},
        {"use": "home", "state": "IL", "country": "US", "period": {"start": "2020-01-01"}},
    ])
    assert normalize_fhir([moved], ctx=ctx, source="s").tables["patient"]["region"].to_pylist() == ["US-IL"]
    only_old = patient(address=[{"use": "home", "state": "WI", "period": {"end": "2019-12-31"}}])
    region = normalize_fhir([only_old], ctx=ctx, source="s").tables["patient"]["region"]
    assert region.to_pylist() == ["US-WI"]


def test_a_coding_that_is_not_an_array_is_rejected(ctx: NormalizeContext) -> None:
    """``"coding": 5`` once met a TypeError, then was read as no coding; it is a wrongly typed element
    (R4 ``coding`` is an array), rejected as every other one is."""
    cond = condition([{"system": "http://snomed.info/sct", "code": "6142004"}])
    cond["clinicalStatus"] = {"coding": 5}
    out = normalize_fhir([cond], ctx=ctx, source="s")
    assert out.tables["condition"].num_rows == 0
    assert [(i.code, i.field_path) for i in out.outcomes[0].issues if i.severity == "ERROR"] == [
        ("INVALID_FIELD", "[0].clinicalStatus.coding")]
