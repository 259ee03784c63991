"""References a transaction resolves that a plain id lookup does not: conditional references
(``Patient?identifier=system|value``) and a subject that is a contained Patient."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from healthai.normalize.context import NormalizeContext
from healthai.normalize.fhir import normalize_fhir
from healthai.normalize.records import NormalizedBatch, RecordOutcome, Status

OID = "urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.14"
HTTP = "http://hospital.example.org/mrn"
MRN = "MRN-E7731903"
PATIENT_UUID = "urn:uuid:11111111-1111-4111-8111-111111111111"


def _patient(identifiers: list[dict] | None = None) -> dict:
    return {"resourceType": "Patient", "gender": "female", "birthDate": "1961-03-04",
            "name": [{"family": "Testperson"}], "identifier": identifiers or [],
            "address": [{"use": "home", "state": "Massachusetts", "postalCode": "02139"}]}


def _condition(subject: str, **extra: Any) -> dict:
    return {"resourceType": "Condition", "subject": {"reference": subject},
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "J10.1"}]},
            "onsetDateTime": "2024-02-01", **extra}


def _txn(patient_request: dict | None, *others: dict, patient: dict | None = None) -> dict:
    entries = [] if patient_request is None else [
        {"fullUrl": PATIENT_UUID, "resource": patient or _patient(), "request": patient_request}]
    for k, r in enumerate(others):
        entries.append({"fullUrl": f"urn:uuid:c0000000-0000-4000-8000-{k:012d}", "resource": copy.deepcopy(r),
                        "request": {"method": "POST", "url": r["resourceType"]}})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _codes(o: RecordOutcome) -> list[tuple[str, str]]:
    return [(i.code, i.field_path) for i in o.issues]


def _messages(out: NormalizedBatch) -> str:
    return " ".join(i.message for o in out.outcomes for i in o.issues)


# ---------------------------------------------------------------------------- conditional references
@pytest.mark.parametrize(("request_", "reference"), [
    ({"method": "PUT", "url": f"Patient?identifier={OID}|{MRN}"}, f"Patient?identifier={OID}|{MRN}"),
    ({"method": "PUT", "url": f"Patient?identifier={HTTP}|{MRN}"}, f"Patient?identifier={HTTP}|{MRN}"),
    ({"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={HTTP}|{MRN}"},
     f"Patient?identifier={HTTP}|{MRN}"),
    # same search, parameters in another order and percent-encoded
    ({"method": "PUT", "url": f"Patient?identifier={HTTP}|{MRN}&birthdate=1961-03-04"},
     f"Patient?birthdate=1961-03-04&identifier=http%3A%2F%2Fhospital.example.org%2Fmrn%7C{MRN}"),
], ids=["put-oid", "put-http", "post-ifnoneexist", "reordered-encoded"])
def test_a_conditional_reference_resolves_to_the_entry_created_on_that_condition(
        ctx: NormalizeContext, request_: dict, reference: str) -> None:
    # the Patient carries no identifier: the match is by its request's conditional URL
    out = normalize_fhir(_txn(request_, _condition(reference)), ctx=ctx, source="epic")
    patient, cond = out.outcomes
    assert patient.status is Status.ACCEPTED and cond.status is Status.ACCEPTED, _codes(cond)
    row = out.tables["condition"].to_pylist()[0]
    assert row["patient_id"] == patient.source_id  # as if it referenced the Patient's fullUrl
    assert (row["region"], row["county"]) == ("US-MA", "25017")


def test_a_conditional_reference_on_an_identifier_resolves_to_the_patient_carrying_it(
        ctx: NormalizeContext) -> None:
    # a plain POST (no ifNoneExist): the server would find the Patient it just created by its identifier
    payload = _txn({"method": "POST", "url": "Patient"}, _condition(f"Patient?identifier={HTTP}|{MRN}"),
                   patient=_patient([{"system": HTTP, "value": MRN}]))
    out = normalize_fhir(payload, ctx=ctx, source="s")
    assert out.outcomes[1].status is Status.ACCEPTED, _codes(out.outcomes[1])
    assert out.tables["condition"]["patient_id"].to_pylist() == [out.outcomes[0].source_id]
    other = _txn({"method": "POST", "url": "Patient"}, _condition(f"Patient?identifier=http://x.example|{MRN}"),
                 patient=_patient([{"system": HTTP, "value": MRN}]))
    assert _codes(normalize_fhir(other, ctx=ctx, source="s").outcomes[1]) == [
        ("REFERENCE_UNRESOLVED", "entry[1].resource.subject.reference")]  # another system: no match


@pytest.mark.parametrize("system", [OID, HTTP], ids=["oid", "http"])
def test_an_unmatched_conditional_reference_is_warned_not_misparsed(ctx: NormalizeContext,
                                                                    system: str) -> None:
    reference = f"Patient?identifier={system}|{MRN}&active=true"
    out = normalize_fhir(_txn(None, _condition(reference)), ctx=ctx, source="s")
    (cond,) = out.outcomes
    assert cond.status is Status.ACCEPTED_WITH_WARNINGS
    assert _codes(cond) == [("REFERENCE_UNRESOLVED", "entry[0].resource.subject.reference")]
    message = cond.issues[0].message
    assert "conditional reference" in message and "cannot be resolved" in message
    assert MRN not in _messages(out) and system not in _messages(out)
    row = out.tables["condition"].to_pylist()[0]
    assert row["region"] is None and len(row["patient_id"]) == 64
    # keyed by its normalized search: stable whatever the parameter order
    again = normalize_fhir(_txn(None, _condition(f"Patient?active=true&identifier={system}|{MRN}")), ctx=ctx,
                           source="s")
    assert again.tables["condition"]["patient_id"].to_pylist() == [row["patient_id"]]


def test_a_conditional_reference_to_another_type_or_two_entries(ctx: NormalizeContext) -> None:
    wrong = normalize_fhir(_txn(None, _condition(f"Group?identifier={HTTP}|{MRN}")), ctx=ctx, source="s")
    assert wrong.outcomes[0].status is Status.REJECTED
    assert [(i.message, i.field_path) for i in wrong.outcomes[0].issues if i.severity == "ERROR"] == [
        ("subject must reference a Patient", "entry[0].resource.subject.reference")]
    # two entries created on the same condition: the reference is ambiguous, so unresolved
    url = f"Patient?identifier={HTTP}|{MRN}"
    twice = _txn({"method": "PUT", "url": url}, _condition(url))
    twice["entry"].append({"fullUrl": "urn:uuid:99999999-9999-4999-8999-999999999999", "resource": _patient(),
                           "request": {"method": "PUT", "url": url}})
    out = normalize_fhir(twice, ctx=ctx, source="s")
    assert ("REFERENCE_UNRESOLVED", "entry[1].resource.subject.reference") in _codes(out.outcomes[1])
    assert out.tables["condition"]["region"].to_pylist() == [None]


# ---------------------------------------------------------------------------- contained Patient
def _contained(resource: dict, **patient: Any) -> dict:
    p1 = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1970-01-01",
          "name": [{"family": "Containedperson"}], "identifier": [{"system": HTTP, "value": MRN}],
          "address": [{"line": ["9 Elm St"], "state": "NY", "postalCode": "10001"}], **patient}
    return {**resource, "subject": {"reference": "#p1"}, "contained": [p1]}


_ENCOUNTER = {"resourceType": "Encounter", "status": "finished",
              "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
              "period": {"start": "2024-02-01T10:00:00Z"}}
_OBSERVATION = {"resourceType": "Observation", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "8310-5"}]},
                "valueQuantity": {"value": 38.2, "unit": "Cel", "system": "http://unitsofmeasure.org",
                                  "code": "Cel"}, "effectiveDateTime": "2024-02-01T08:00:00Z"}


@pytest.mark.parametrize("resource", [_condition("#p1"), _ENCOUNTER, _OBSERVATION],
                         ids=["Condition", "Encounter", "Observation"])
def test_a_contained_patient_gives_its_record_a_patient(ctx: NormalizeContext, resource: dict) -> None:
    out = normalize_fhir(_txn(None, _contained(resource)), ctx=ctx, source="s")
    (o,) = out.outcomes
    assert o.status is Status.ACCEPTED_WITH_WARNINGS
    assert _codes(o) == [("REFERENCE_CONTAINED", "entry[0].resource.subject.reference")]
    assert "contained Patient" in o.issues[0].message
    row = out.tables[resource["resourceType"].lower()].to_pylist()[0]
    (pat,) = out.tables["patient"].to_pylist()
    assert row["patient_id"] == pat["resource_id"] == pat["patient_id"] != o.source_id
    assert (row["region"], row["county"]) == ("US-NY", "36061")
    assert (pat["sex"], pat["birth_year"], pat["birth_month"], pat["region"]) == ("female", 1970, 1, "US-NY")
    assert len(pat["identifier_pseudonyms"]) == 1 and MRN not in str(pat)
    assert "Containedperson" not in str(pat) and "Elm" not in str(pat)
    # deterministic: the same record sent again is the same patient
    again = normalize_fhir(_txn(None, _contained(resource)), ctx=ctx, source="s")
    assert again.tables["patient"]["resource_id"].to_pylist() == [pat["resource_id"]]


def test_a_contained_patients_problems_are_warnings_of_its_record(ctx: NormalizeContext) -> None:
    bad = _contained(_condition("#p1"), birthDate="1970-13-45")
    out = normalize_fhir(_txn(None, bad), ctx=ctx, source="s")
    (o,) = out.outcomes
    assert o.status is Status.ACCEPTED_WITH_WARNINGS
    assert _codes(o) == [("INVALID_FIELD", "entry[0].resource.contained[0].birthDate"),
                         ("REFERENCE_CONTAINED", "entry[0].resource.subject.reference")]
    assert "not stored" in o.issues[0].message and "1970-13-45" not in _messages(out)
    assert out.tables["patient"].num_rows == 0  # invalid: not stored; its address still places the case
    assert out.tables["condition"]["region"].to_pylist() == ["US-NY"]


def test_a_contained_patients_birth_date_is_guarded(ctx: NormalizeContext) -> None:
    out = normalize_fhir(_txn(None, _contained(_condition("#p1", onsetDateTime="1970-01-01"))), ctx=ctx,
                         source="s")
    assert ("DATE_GENERALIZED", "entry[0].resource.onset[x]") in _codes(out.outcomes[0])
    assert str(out.tables["condition"]["onset"][0].as_py().date()) == "1970-01-02"
