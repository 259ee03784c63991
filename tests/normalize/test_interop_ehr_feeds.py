"""What Epic, Cerner, HAPI and US Core feeds send that Synthea does not (walk-through I, bugs 2, 3, 4,
5, 9), at the normalizer: a coded result whose local code comes first, version-specific references, a
conditional subject that is not in its payload, a future home address, a leap second."""

from __future__ import annotations

import datetime as dt

import pytest

from healthai.normalize.context import NormalizeContext
from healthai.normalize.fhir import normalize_fhir
from healthai.normalize.fhir_types import parse_datetime
from healthai.normalize.identity import record_system
from healthai.normalize.records import Status

from .conftest import KEY, REFERENCE_DATE

LOINC, SNOMED, ICD10 = "http://loinc.org", "http://snomed.info/sct", "http://hl7.org/fhir/sid/icd-10-cm"
EPIC_RESULT = "urn:oid:1.2.840.114350.1.13.0.1.7.2.768076"
MRN_SYSTEM = "urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.14"
MRN = "E9990001"


def _flu_test(result: list[dict]) -> dict:
    return {"resourceType": "Observation", "id": "flu-2", "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "92142-9"}]},
            "subject": {"reference": "Patient/flu-p"}, "effectiveDateTime": "2025-11-04T09:00:00-05:00",
            "valueCodeableConcept": {"coding": result, "text": "Detected"}}


DETECTED = {"system": SNOMED, "code": "260373001", "display": "Detected"}
LOCAL = {"system": EPIC_RESULT, "code": "DET", "display": "Detected"}
LA_DETECTED = {"system": LOINC, "code": "LA11882-0", "display": "Detected"}


@pytest.mark.parametrize(("codings", "stored"), [
    ([LOCAL, DETECTED], f"{SNOMED}|260373001"),            # Epic: the local result code first
    ([LOCAL, LA_DETECTED], f"{LOINC}|LA11882-0"),          # LOINC answer codes next
    ([LOCAL, LA_DETECTED, DETECTED], f"{SNOMED}|260373001"),
    ([DETECTED, LOCAL], f"{SNOMED}|260373001"),
    ([LOCAL], f"{EPIC_RESULT}|DET"),                       # nothing standard: the first, as before
    ([{"system": SNOMED, "code": "123"}, LA_DETECTED], f"{LOINC}|LA11882-0"),  # not an SCTID
], ids=["local-snomed", "local-loinc", "all-three", "snomed-first", "local-only", "bad-sctid"])
def test_a_coded_result_stores_its_standard_coding(ctx: NormalizeContext, codings: list[dict],
                                                   stored: str) -> None:
    """bug 2: value_code kept the first coding, so flu_lab never saw Epic's and Cerner's positives."""
    out = normalize_fhir([_flu_test(codings)], ctx=ctx, source="lab")
    assert out.outcomes[0].status is not Status.REJECTED
    assert out.tables["observation"]["value_code"].to_pylist() == [stored]


# ---------------------------------------------------------------------------- references
def _condition(rid: str, subject: str) -> dict:
    return {"resourceType": "Condition", "id": rid, "subject": {"reference": subject},
            "code": {"coding": [{"system": ICD10, "code": "J10.1"}]}, "onsetDateTime": "2025-11-04"}


def test_a_version_specific_reference_links_to_the_patient(ctx: NormalizeContext) -> None:
    """bug 3: ``Patient/x/_history/3`` was "subject must reference a Patient" when x was not in the
    payload (the type was read from ``_history``)."""
    refs = ["Patient/vr-pat/_history/3", "https://fhir.example-hospital.org/R4/Patient/vr-pat/_history/3",
            "https://fhir.example-hospital.org/R4/Patient/vr-pat", "Patient/vr-pat"]
    split = normalize_fhir([_condition(f"vr-{k}", r) for k, r in enumerate(refs)], ctx=ctx, source="hapi")
    assert [o.status for o in split.outcomes] == [Status.ACCEPTED_WITH_WARNINGS] * 4
    assert {i.code for o in split.outcomes for i in o.issues} == {"REFERENCE_UNRESOLVED"}
    patient = ctx.pseudonymizer.pseudonym(record_system("hapi", "Patient"), "vr-pat")
    assert split.tables["condition"]["patient_id"].to_pylist() == [patient] * 4
    # in one payload with the Patient: resolved, with its region
    pat = {"resourceType": "Patient", "id": "vr-pat", "address": [{"use": "home", "state": "RI"}]}
    together = normalize_fhir([pat, *(_condition(f"vr-{k}", r) for k, r in enumerate(refs))], ctx=ctx,
                              source="hapi")
    assert [o.status for o in together.outcomes] == [Status.ACCEPTED] * 5
    assert together.tables["condition"]["region"].to_pylist() == ["US-RI"] * 4
    # another type behind _history is still refused
    wrong = normalize_fhir([_condition("vr-x", "Group/vr-pat/_history/3")], ctx=ctx, source="hapi")
    assert [i.message for i in wrong.outcomes[0].issues if i.severity == "ERROR"] == [
        "subject must reference a Patient"]


def _txn_condition(reference: str) -> dict:
    return {"resourceType": "Bundle", "type": "transaction", "entry": [{
        "fullUrl": "urn:uuid:0b9f6a52-4a8a-4c1e-9e0e-1c1d6f2a0002",
        "resource": {**_condition("x", reference), "id": None, "onsetDateTime": "2025-11-25"},
        "request": {"method": "POST", "url": "Condition"}}]}


def _without_id(doc: dict) -> dict:
    for e in doc["entry"]:
        e["resource"] = {k: v for k, v in e["resource"].items() if v is not None}
    return doc


def test_a_conditional_subject_on_an_identifier_carries_the_identifier_pseudonym(
        ctx: NormalizeContext) -> None:
    """bug 4: the condition's patient_id was the pseudonym of the search string, which no stored row
    carries; it is now the keyed pseudonym of the identifier, the value the Patient sent in another
    payload stores in ``identifier_pseudonyms`` (the counts link the two: tests/ingest)."""
    patient = {"resourceType": "Bundle", "type": "transaction", "entry": [{
        "fullUrl": "urn:uuid:0b9f6a52-4a8a-4c1e-9e0e-1c1d6f2a0001",
        "resource": {"resourceType": "Patient", "identifier": [{"system": MRN_SYSTEM, "value": MRN}],
                     "address": [{"use": "home", "state": "NJ", "country": "US"}]},
        "request": {"method": "PUT", "url": f"Patient?identifier={MRN_SYSTEM}|{MRN}"}}]}
    stored = normalize_fhir(patient, ctx=ctx, source="epic-tx").tables["patient"].to_pylist()[0]
    out = normalize_fhir(_without_id(_txn_condition(f"Patient?identifier={MRN_SYSTEM}|{MRN}")), ctx=ctx,
                         source="epic-tx")
    (cond,) = out.outcomes
    assert cond.status is Status.ACCEPTED_WITH_WARNINGS
    assert [i.code for i in cond.issues] == ["REFERENCE_UNRESOLVED"]
    message = cond.issues[0].message
    assert "linked by that identifier to the Patient stored with it" in message
    assert MRN not in message and MRN_SYSTEM not in message
    row = out.tables["condition"].to_pylist()[0]
    assert row["patient_id"] in stored["identifier_pseudonyms"] and row["region"] is None


@pytest.mark.parametrize("reference", [f"Patient?identifier={MRN}",                 # any system
                                       f"Patient?identifier={MRN_SYSTEM}|{MRN}&active=true",
                                       "Patient?name=Smith&birthdate=1970-01-01"],
                         ids=["no-system", "two-parameters", "demographics"])
def test_an_unlinkable_conditional_subject_says_it_is_never_linked(ctx: NormalizeContext,
                                                                   reference: str) -> None:
    out = normalize_fhir(_without_id(_txn_condition(reference)), ctx=ctx, source="epic-tx")
    (cond,) = out.outcomes
    message = cond.issues[0].message
    assert cond.issues[0].code == "REFERENCE_UNRESOLVED"
    assert "never linked to a stored Patient" in message and "linked by that identifier" not in message
    assert MRN not in message and "Smith" not in message


# ---------------------------------------------------------------------------- addresses
def test_a_future_home_address_is_not_the_current_one(ctx: NormalizeContext) -> None:
    """bug 5: a home address whose period starts after today (a planned move) was the region."""
    assert dt.date(2026, 11, 1) == REFERENCE_DATE  # "today" of the test context
    moving = {"resourceType": "Patient", "id": "g1", "address": [
        {"use": "home", "state": "CA", "postalCode": "94103", "period": {"start": "2027-03-01"}},
        {"use": "home", "state": "OR", "postalCode": "97201", "period": {"start": "2010-01-01"}}]}
    row = normalize_fhir([moving], ctx=ctx, source="g").tables["patient"].to_pylist()[0]
    assert (row["region"], row["county"]) == ("US-OR", "41051")
    # started already (today counts): current
    moved = {**moving, "address": [{**moving["address"][0], "period": {"start": "2026-11-01"}},
                                   moving["address"][1]]}
    assert normalize_fhir([moved], ctx=ctx, source="g").tables["patient"]["region"].to_pylist() == ["US-CA"]
    # only a future address: no region, and the warning says why
    only = {**moving, "address": moving["address"][:1]}
    out = normalize_fhir([only], ctx=ctx, source="g")
    assert out.tables["patient"]["region"].to_pylist() == [None]
    assert [(i.code, i.field_path) for i in out.outcomes[0].issues] == [("MISSING_FIELD", "[0].address")]
    assert "starts after today" in out.outcomes[0].issues[0].message


# ---------------------------------------------------------------------------- leap second
@pytest.mark.parametrize(("text", "utc"), [
    ("2025-06-30T23:59:60Z", "2025-06-30T23:59:59.999999+00:00"),
    ("2016-12-31T23:59:60.5+00:00", "2016-12-31T23:59:59.999999+00:00"),
    ("2016-12-31T18:59:60-05:00", "2016-12-31T23:59:59.999999+00:00"),
])
def test_a_leap_second_is_a_valid_datetime(text: str, utc: str) -> None:
    """bug 9: R4's dateTime regex allows second 60; it was "not a FHIR date/dateTime"."""
    assert parse_datetime(text).isoformat() == utc
    with pytest.raises(ValueError, match="time zone"):
        parse_datetime("2025-06-30T23:59:60")
    with pytest.raises(ValueError):
        parse_datetime("2025-06-30T23:59:61Z")


def test_an_observation_at_a_leap_second_is_stored_on_its_day() -> None:
    ctx = NormalizeContext.create(key=KEY, reference_date=REFERENCE_DATE)
    obs = {"resourceType": "Observation", "id": "leap", "status": "final",
           "code": {"coding": [{"system": LOINC, "code": "8867-4"}]}, "subject": {"reference": "Patient/p"},
           "effectiveDateTime": "2025-06-30T23:59:60Z", "valueQuantity": {"value": 80, "unit": "/min"}}
    out = normalize_fhir([obs], ctx=ctx, source="s")
    assert out.outcomes[0].status is not Status.REJECTED, out.outcomes[0].issues
    (when,) = out.tables["observation"]["effective"].to_pylist()
    assert when.replace(tzinfo=None) == dt.datetime(2025, 6, 30, 23, 59, 59, 999999)
