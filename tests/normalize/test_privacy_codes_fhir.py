"""Audit walkO, finding 1 (FHIR): identifier-like text in coded elements is never stored, and the warning
that says so never echoes it. Statuses with a required value set keep only its codes; codes of a known
system keep only text with that system's syntax (well-shaped invalid codes are still kept, flagged);
codes and systems of other systems keep only text shaped like a code or a URI."""

from __future__ import annotations

from typing import Any

import pytest

from healthai.normalize.context import NormalizeContext
from healthai.normalize.fhir import normalize_fhir
from healthai.normalize.records import NormalizedBatch, Status

from .fhir_builders import bundle, condition, encounter, observation, patient

SSN, PHONE, EMAIL, NAME = "123-45-6789", "617-555-0199", "zelda.q@example.org", "Quenneville-Ostrowski"
ICD10, ICD10_OID, SNOMED, LOINC = ("http://hl7.org/fhir/sid/icd-10-cm", "urn:oid:2.16.840.1.113883.6.90",
                                   "http://snomed.info/sct", "http://loinc.org")
ICD9 = "http://hl7.org/fhir/sid/icd-9-cm"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"


def run(ctx: NormalizeContext, *resources: dict) -> NormalizedBatch:
    return normalize_fhir(bundle(patient(), *resources), ctx=ctx, source="s")


def issues(out: NormalizedBatch, i: int) -> list[tuple[str, str]]:
    return [(x.code, x.field_path.split(".", 1)[1]) for x in out.outcomes[i].issues]


def assert_no_leak(out: NormalizedBatch) -> None:
    text = str({k: t.to_pylist() for k, t in out.tables.items()}) + str(out.outcomes)
    for secret in (SSN, PHONE, EMAIL, NAME, "zelda"):
        assert secret not in text


def status(code: str, system: str | None = None) -> dict[str, Any]:
    return {"coding": [{"code": code, **({"system": system} if system else {})}]}


def test_condition_statuses_outside_their_value_sets_are_not_stored(ctx: NormalizeContext) -> None:
    out = run(ctx, condition(ICD10, "J10.1", clinicalStatus=status(SSN, CLINICAL),
                             verificationStatus=status(PHONE)))
    assert out.outcomes[1].status is Status.ACCEPTED_WITH_WARNINGS
    row = out.tables["condition"].to_pylist()[0]
    assert (row["code"], row["clinical_status"], row["verification_status"]) == ("J10.1", None, None)
    assert issues(out, 1) == [("INVALID_FIELD", "resource.clinicalStatus"),
                              ("INVALID_FIELD", "resource.verificationStatus")]
    assert all("(value withheld): not stored" in i.message for i in out.outcomes[1].issues)
    assert_no_leak(out)


def test_condition_statuses_take_the_value_set_code_in_any_coding(ctx: NormalizeContext) -> None:
    clinical = {"coding": [{"system": "urn:oid:1.2.3", "code": "A"}, {"system": CLINICAL, "code": "Active"}]}
    out = run(ctx, condition(ICD10, "J10.1", clinicalStatus=clinical, verificationStatus=status("confirmed")))
    assert out.outcomes[1].status is Status.ACCEPTED
    row = out.tables["condition"].to_pylist()[0]
    assert (row["clinical_status"], row["verification_status"]) == ("active", "confirmed")


@pytest.mark.parametrize(("system", "code"), [
    (ICD10_OID, SSN), (ICD10, NAME), (ICD9, SSN), (SNOMED, PHONE), (SNOMED, EMAIL),
    ("http://example.org/local", SSN), ("http://example.org/local", PHONE), ("urn:oid:1.2.3", EMAIL),
    ("http://example.org/local", NAME),
], ids=["icd10-ssn", "icd10-name", "icd9-ssn", "snomed-phone", "snomed-email", "local-ssn", "local-phone",
        "local-email", "local-name"])
def test_a_condition_code_that_is_no_code_of_its_system_is_not_stored(ctx: NormalizeContext, system: str,
                                                                      code: str) -> None:
    out = run(ctx, condition(system, code))
    assert out.outcomes[1].status is Status.ACCEPTED_WITH_WARNINGS
    assert issues(out, 1) == [("CODE_NOT_STORED", "resource.code.coding[0].code"),
                              ("NOT_STORED", "resource.code")]
    assert "(value withheld: free text" in out.outcomes[1].issues[0].message
    assert out.tables["condition"].num_rows == 0
    assert_no_leak(out)


def test_a_code_that_is_no_code_gives_way_to_the_next_coding(ctx: NormalizeContext) -> None:
    res = condition(ICD10, SSN)
    res["code"]["coding"].append({"system": ICD10, "code": "E11.9"})
    out = run(ctx, res)
    row = out.tables["condition"].to_pylist()[0]
    assert (row["code"], row["icd10_code"]) == ("E11.9", "E11.9")
    assert issues(out, 1) == [("CODE_NOT_STORED", "resource.code.coding[0].code")]
    assert_no_leak(out)


def test_well_shaped_invalid_codes_are_still_kept_and_flagged(ctx: NormalizeContext) -> None:
    out = run(ctx, condition(ICD10, "Q99.999X", rid="a"), condition(SNOMED, "1234567", rid="b"))
    rows = out.tables["condition"].to_pylist()
    assert [(r["code_system"], r["code"]) for r in rows] == [("ICD10CM", "Q99.999X"),
                                                             ("OTHER", f"{SNOMED}|1234567")]
    assert [issues(out, i)[0][0] for i in (1, 2)] == ["ICD10_INVALID", "SNOMED_INVALID"]


def test_a_code_system_with_user_info_is_not_stored(ctx: NormalizeContext) -> None:
    out = run(ctx, condition(f"http://{EMAIL}", "J10", rid="a"), condition("Marguerite Smith", "X1", rid="b"))
    assert [r["code"] for r in out.tables["condition"].to_pylist()] == ["|J10", "|X1"]
    assert ("CODE_NOT_STORED", "resource.code.coding[0].system") in issues(out, 1)
    assert ("CODE_NOT_STORED", "resource.code.coding[0].system") in issues(out, 2)
    assert "Marguerite" not in str(out.outcomes) + str(out.tables["condition"].to_pylist())
    assert_no_leak(out)


def _coded_result(coding: list[dict], rid: str = "o1") -> dict:
    res = observation("94500-6", None, "", rid=rid)
    del res["valueQuantity"]
    return {**res, "valueCodeableConcept": {"coding": coding, "text": NAME}}


def test_a_coded_result_of_an_unknown_system_that_is_no_code_is_not_stored(ctx: NormalizeContext) -> None:
    out = run(ctx, _coded_result([{"system": f"http://{EMAIL}", "code": SSN, "display": NAME}], "o1"),
              _coded_result([{"system": f"http://{EMAIL}", "code": "DET"}], "o2"),
              _coded_result([{"system": "urn:oid:1.2.3", "code": PHONE},
                             {"system": SNOMED, "code": "260373001"}], "o3"))
    assert [o.status for o in out.outcomes[1:]] == [Status.ACCEPTED_WITH_WARNINGS] * 3
    rows = out.tables["observation"].to_pylist()
    assert [r["value_code"] for r in rows] == [None, "|DET", f"{SNOMED}|260373001"]
    assert issues(out, 1) == [("CODE_NOT_STORED", "resource.valueCodeableConcept.coding[0].code")]
    assert issues(out, 2) == [("CODE_NOT_STORED", "resource.valueCodeableConcept.coding[0].system")]
    assert_no_leak(out)


def test_an_observation_code_that_is_no_code_rejects_the_observation(ctx: NormalizeContext) -> None:
    loinc_ssn = observation(SSN, 1.0, "1", rid="o1")
    local_phone = observation("8310-5", 37.0, "Cel", rid="o2")
    local_phone["code"]["coding"] = [{"system": f"http://{EMAIL}", "code": PHONE}]
    both = observation("8310-5", 37.0, "Cel", rid="o3")
    both["code"]["coding"].insert(0, {"system": LOINC, "code": SSN})
    out = run(ctx, loinc_ssn, local_phone, both)
    assert [o.status for o in out.outcomes[1:]] == [Status.REJECTED, Status.REJECTED,
                                                    Status.ACCEPTED_WITH_WARNINGS]
    assert issues(out, 1) == [("CODE_NOT_STORED", "resource.code.coding[0].code"),
                              ("LOINC_INVALID", "resource.code.coding")]
    assert issues(out, 2) == [("CODE_NOT_STORED", "resource.code.coding[0].code"),
                              ("CODE_NOT_STORED", "resource.code.coding")]
    assert out.tables["observation"]["loinc"].to_pylist() == ["8310-5"]
    assert_no_leak(out)


def test_observation_category_and_absent_reason_that_are_no_codes_are_not_stored(
        ctx: NormalizeContext) -> None:
    cat = "http://terminology.hl7.org/CodeSystem/observation-category"
    odd = observation("8310-5", None, "Cel", rid="o1", category=[{"coding": [{"code": PHONE}]}],
                      dataAbsentReason={"coding": [{"code": SSN}]})
    del odd["valueQuantity"]
    named = observation("8310-5", 37.0, "Cel", rid="o2",
                        category=[{"coding": [{"code": "x y"}]},
                                  {"coding": [{"system": cat, "code": "Vital-Signs"}]}])
    local = observation("8310-5", 37.0, "Cel", rid="o3", category=[{"coding": [{"code": "vital-sign"}]}])
    out = run(ctx, odd, named, local)
    rows = out.tables["observation"].to_pylist()
    assert [(r["category"], r["data_absent_reason"]) for r in rows] == [
        (None, "|unknown"), ("vital-signs", None), ("vital-sign", None)]
    assert issues(out, 1) == [("CODE_NOT_STORED", "resource.category[0].coding[0].code"),
                              ("CODE_NOT_STORED", "resource.dataAbsentReason.coding[0].code")]
    assert [o.status for o in out.outcomes[2:]] == [Status.ACCEPTED, Status.ACCEPTED]
    assert_no_leak(out)


def test_encounter_class_and_type_that_are_no_codes_are_not_stored(ctx: NormalizeContext) -> None:
    bad = encounter(**{"class": {"code": SSN}, "type": [{"coding": [{"system": SNOMED, "code": PHONE}]}]})
    out = run(ctx, bad)
    row = out.tables["encounter"].to_pylist()[0]
    assert (row["class_code"], row["type_code"]) == (None, None)
    assert issues(out, 1) == [("CODE_NOT_STORED", "resource.type[0].coding[0].code"),
                              ("INVALID_FIELD", "resource.class.code")]
    assert_no_leak(out)
    good = encounter(**{"class": {"code": "amb"},
                        "type": [{"coding": [{"system": SNOMED, "code": "185345009"}]}]})
    row = run(ctx, good).tables["encounter"].to_pylist()[0]
    assert (row["class_code"], row["type_system"], row["type_code"]) == ("AMB", "SNOMED", "185345009")

