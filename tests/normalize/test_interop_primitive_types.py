"""Wrongly typed FHIR primitives from non-Synthea EHR feeds (walk-through I, bugs 1, 6, 7, 8): every
element the normalizer reads is type-checked where it is read, so a number, array or object where R4
has a ``code``, ``uri``, ``string`` or ``id`` rejects that record with INVALID_FIELD naming the field
path: it never fails the whole payload (an Arrow or attribute error), is never stored as a Python repr,
and never reads as "absent"."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from healthai.normalize.context import NormalizeContext
from healthai.normalize.fhir import normalize_fhir
from healthai.normalize.records import Status

LOINC, SNOMED, ICD10 = "http://loinc.org", "http://snomed.info/sct", "http://hl7.org/fhir/sid/icd-10-cm"
UCUM = "http://unitsofmeasure.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"

PATIENT = {"resourceType": "Patient", "id": "mix-p", "gender": "male", "birthDate": "1971-04-02",
           "identifier": [{"system": "urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.14", "value": "E9990001"}],
           "address": [{"use": "home", "state": "MA", "postalCode": "02139", "country": "US"}]}
CONDITION = {"resourceType": "Condition", "id": "mix-c",
             "clinicalStatus": {"coding": [{"system": CLINICAL, "code": "active"}]},
             "verificationStatus": {"coding": [{"system": VERIFICATION, "code": "confirmed"}]},
             "code": {"coding": [{"system": ICD10, "code": "J10.1"}]},
             "subject": {"reference": "Patient/mix-p"}, "onsetDateTime": "2025-11-26"}
OBSERVATION = {"resourceType": "Observation", "id": "mix-o", "status": "final",
               "category": [{"coding": [{"system": CATEGORY, "code": "laboratory"}]}],
               "code": {"coding": [{"system": LOINC, "code": "2345-7"}]},
               "subject": {"reference": "Patient/mix-p"}, "effectiveDateTime": "2025-11-26T10:00:00Z",
               "valueQuantity": {"value": 100, "unit": "mg/dL", "system": UCUM, "code": "mg/dL"}}
LOCAL_GLUCOSE = {**OBSERVATION, "code": {"coding": [{"system": "urn:oid:1.2.3", "code": "GLU"}]}}
LAB_RESULT = {**OBSERVATION, "code": {"coding": [{"system": LOINC, "code": "92142-9"}]},
              "valueQuantity": None,
              "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "260373001"}]}}
BP = {"resourceType": "Observation", "id": "bp", "status": "final",
      "code": {"coding": [{"system": LOINC, "code": "85354-9"}]},
      "subject": {"reference": "Patient/mix-p"}, "effectiveDateTime": "2025-11-26T10:00:00Z",
      "component": [{"code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
                     "valueQuantity": {"value": 120, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}},
                    {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
                     "valueQuantity": {"value": 80, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}}]}
ENCOUNTER = {"resourceType": "Encounter", "id": "et-1", "status": "finished",
             "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
             "type": [{"coding": [{"system": SNOMED, "code": "185349003"}]}],
             "subject": {"reference": "Patient/mix-p"}, "period": {"start": "2025-11-05"}}


def _steps(path: str) -> list[str | int]:
    return [int(s) if s.isdigit() else s for s in path.replace("[", ".").replace("]", "").split(".")]


def _get(resource: dict, path: str) -> Any:
    node: Any = resource
    for step in _steps(path):
        node = node[step]
    return node


def _edit(resource: dict, path: str, value: Any) -> dict:
    """A copy of ``resource`` with the element at ``path`` (dotted, ``[i]`` indices) set to ``value``."""
    out = copy.deepcopy({k: v for k, v in resource.items() if v is not None})
    *head, last = _steps(path)
    node: Any = out
    for step in head:
        node = node[step]
    node[last] = value
    return out


def _batch(*resources: dict) -> bytes:
    return json.dumps({"resourceType": "Bundle", "type": "batch",
                       "entry": [{"resource": r} for r in resources]}).encode()


WRONG = [
    # bug 1: the Arrow error (a number in category), the AttributeError in units.ucum (unit / code)
    (OBSERVATION, "category[0].coding[0].code", 1),
    (LOCAL_GLUCOSE, "valueQuantity.unit", 5),
    (LOCAL_GLUCOSE, "valueQuantity.code", ["mg/dL"]),
    (OBSERVATION, "valueQuantity.unit", 5),
    (OBSERVATION, "code.coding[0].code", 2345),
    (BP, "component[0].code.coding[0].code", 8480),
    (BP, "component[1].valueQuantity.code", {"x": 1}),
    (ENCOUNTER, "type[0].coding[0].code", 185349003),
    (ENCOUNTER, "class.system", ["urn:x"]),
    (CONDITION, "code.coding[0].code", 101),
    (CONDITION, "code.coding[0].system", [ICD10]),
    (PATIENT, "identifier[0].value", 12345678),
    (PATIENT, "address[0].state", 25),
    (PATIENT, "address[0].postalCode", 2139),
    # bug 7: an object as a code was stored as its Python repr
    (LAB_RESULT, "valueCodeableConcept.coding[0].code", {"x": 1}),
    (CONDITION, "clinicalStatus.coding[0].code", {"a": 1}),
]


@pytest.mark.parametrize(("resource", "path", "value"), WRONG,
                         ids=[f"{r['resourceType']}.{p}" for r, p, _ in WRONG])
def test_a_wrongly_typed_primitive_rejects_only_its_record(ctx: NormalizeContext, resource: dict, path: str,
                                                           value: Any) -> None:
    bad = _edit(resource, path, value)
    good = [r for r in (PATIENT, CONDITION) if r["id"] != bad["id"]]
    out = normalize_fhir(_batch(*good, bad), ctx=ctx, source="crash2")
    *kept, rejected = out.outcomes
    assert [o.status for o in kept] == [Status.ACCEPTED] * len(good), [o.issues for o in kept]
    assert rejected.status is Status.REJECTED
    errors = [(i.code, i.field_path) for i in rejected.issues if i.severity == "ERROR"]
    assert errors == [("INVALID_FIELD", f"entry[{len(good)}].resource.{path}")]
    assert [i.message for i in rejected.issues if i.severity == "ERROR"] == [
        f"{path} must be a string, not {_json_type(value)}"]
    assert sum(t.num_rows for t in out.tables.values()) == len(good)  # the others are stored
    stored = json.dumps({k: t.to_pylist() for k, t in out.tables.items()}, default=str)
    assert "{'" not in stored and "['" not in stored  # never a Python repr


def test_the_report_batch_stores_its_patient_and_condition(ctx: NormalizeContext) -> None:
    """``f12_batch_one_bad_category.json``: the whole request used to fail with INTERNAL."""
    bad = _edit(OBSERVATION, "category[0].coding", [{"code": 1}])
    out = normalize_fhir(_batch(PATIENT, CONDITION, bad), ctx=ctx, source="crash2")
    assert [o.status for o in out.outcomes] == [Status.ACCEPTED, Status.ACCEPTED, Status.REJECTED]
    assert (out.tables["patient"].num_rows, out.tables["condition"].num_rows) == (1, 1)
    assert out.tables["observation"].num_rows == 0


@pytest.mark.parametrize("rid", [12345, 1.5, ["p1"], {"v": "p1"}, True], ids=str)
def test_an_id_that_is_not_a_string_is_said_so(ctx: NormalizeContext, rid: Any) -> None:
    """bug 8: ``"id": 12345`` was "Patient has no id and no fullUrl"."""
    out = normalize_fhir({**PATIENT, "id": rid}, ctx=ctx, source="s")
    (o,) = out.outcomes
    assert o.status is Status.REJECTED
    assert [(i.code, i.field_path, i.message) for i in o.issues] == [
        ("INVALID_FIELD", "resource.id", f"id must be a string, not {_json_type(rid)}")]
    # with a fullUrl too: the id is wrong, not replaced by the fullUrl's
    entry = {"fullUrl": "urn:uuid:3f1c0a52-4a8a-4c1e-9e0e-1c1d6f2a0001", "resource": {**PATIENT, "id": rid}}
    doc = {"resourceType": "Bundle", "type": "collection", "entry": [entry]}
    assert normalize_fhir(doc, ctx=ctx, source="s").outcomes[0].issues[0].code == "INVALID_FIELD"


def _json_type(value: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", list: "an array", dict: "an object"}[
        type(value)]


@pytest.mark.parametrize(("resource", "path"), [
    (CONDITION, "code"), (OBSERVATION, "code"), (LAB_RESULT, "valueCodeableConcept"),
    (CONDITION, "verificationStatus"), (ENCOUNTER, "type[0]"), (OBSERVATION, "category[0]"),
], ids=lambda v: v if isinstance(v, str) else v["resourceType"])
def test_a_coding_object_instead_of_an_array_is_invalid(ctx: NormalizeContext, resource: dict,
                                                        path: str) -> None:
    """bug 8: ``code.coding`` as an object was "code has no coding (absent or text only)", accepted."""
    bad = _edit(resource, f"{path}.coding", _get(resource, f"{path}.coding[0]"))  # the Coding, unwrapped
    (o,) = normalize_fhir([bad], ctx=ctx, source="s").outcomes
    assert o.status is Status.REJECTED
    assert [(i.code, i.field_path, i.message) for i in o.issues if i.severity == "ERROR"] == [
        ("INVALID_FIELD", f"[0].{path}.coding", f"{path}.coding must be an array, not an object")]


@pytest.mark.parametrize(("field", "code"), [("verificationStatus", "refuted"), ("clinicalStatus", "active"),
                                             ("verificationStatus", "entered-in-error")])
def test_a_stu3_status_string_is_rejected_never_read_as_no_status(ctx: NormalizeContext, field: str,
                                                                  code: str) -> None:
    """bug 6: STU3 ``"verificationStatus": "refuted"`` was ignored and the refuted diagnosis counted. R4
    has a CodeableConcept there: the string is a wrong type, rejected as every other wrong type is."""
    out = normalize_fhir(_batch(PATIENT, {**CONDITION, field: code}), ctx=ctx, source="bulk1")
    cond = out.outcomes[1]
    assert cond.status is Status.REJECTED
    assert [(i.code, i.field_path) for i in cond.issues] == [("INVALID_FIELD", f"entry[1].resource.{field}")]
    assert "CodeableConcept" in cond.issues[0].message and "STU3" in cond.issues[0].message
    assert code not in cond.issues[0].message
    assert out.tables["condition"].num_rows == 0
    # the R4 form of the same status is read
    r4 = {**CONDITION, field: {"coding": [{"system": VERIFICATION, "code": code}]}}
    rows = normalize_fhir(_batch(PATIENT, r4), ctx=ctx, source="bulk1").tables["condition"].to_pylist()
    column = "verification_status" if field == "verificationStatus" else "clinical_status"
    assert rows[0][column] == code


def test_messages_name_the_type_never_the_value(ctx: NormalizeContext) -> None:
    secret = "E9990001-MRN"
    bad = _edit(PATIENT, "identifier[0].value", [secret])
    bad = _edit(bad, "address[0].state", {"name": secret})
    out = normalize_fhir([bad, _edit(CONDITION, "code.coding[0].code", {"mrn": secret})], ctx=ctx, source="s")
    text = " ".join(i.message + i.field_path for o in out.outcomes for i in o.issues)
    assert secret not in text and "mrn" not in text
