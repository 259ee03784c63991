"""Small hand-written FHIR R4 resources for the bad-input and unit tests."""

from __future__ import annotations

import copy
from typing import Any

PATIENT_URL = "urn:uuid:11111111-1111-4111-8111-111111111111"
ENCOUNTER_URL = "urn:uuid:22222222-2222-4222-8222-222222222222"


def patient(**extra: Any) -> dict:
    return {
        "resourceType": "Patient",
        "id": "11111111-1111-4111-8111-111111111111",
        "gender": "female",
        "birthDate": "1960-05-17",
        "name": [{"family": "Testperson", "given": ["Alice"]}],
        "identifier": [{"system": "http://hl7.org/fhir/sid/us-ssn", "value": "999-11-2222"}],
        "address": [{"line": ["1 Main St"], "city": "Springfield", "state": "IL", "country": "US"}],
        **extra,
    }


def encounter(**extra: Any) -> dict:
    return {
        "resourceType": "Encounter",
        "id": "22222222-2222-4222-8222-222222222222",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": {"reference": PATIENT_URL},
        "period": {"start": "2020-01-01T10:00:00+00:00", "end": "2020-01-03T10:00:00+00:00"},
        **extra,
    }


def condition(system: str, code: str, rid: str = "c1", **extra: Any) -> dict:
    return {
        "resourceType": "Condition",
        "id": rid,
        "subject": {"reference": PATIENT_URL},
        "code": {"coding": [{"system": system, "code": code}]},
        "onsetDateTime": "2020-01-01T10:00:00+00:00",
        **extra,
    }


def observation(
    loinc: str, value: float | None, unit: str, rid: str = "o1", *, ucum: bool = True, **extra: Any
) -> dict:
    q: dict[str, Any] = {"unit": unit}
    if value is not None:
        q["value"] = value
    if ucum:
        q.update(system="http://unitsofmeasure.org", code=unit)
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
        "subject": {"reference": PATIENT_URL},
        "effectiveDateTime": "2020-01-02T10:00:00+00:00",
        "valueQuantity": q,
        **extra,
    }


def bp_panel(panel: str, sbp: float, dbp: float, unit: str = "mm[Hg]", rid: str = "bp1") -> dict:
    def comp(code: str, v: float) -> dict:
        return {
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "valueQuantity": {"value": v, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
        }

    return {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": panel}]},
        "subject": {"reference": PATIENT_URL},
        "effectiveDateTime": "2020-01-02T10:00:00+00:00",
        "component": [comp("8480-6", sbp), comp("8462-4", dbp)],
    }


def bundle(*resources: dict, btype: str = "transaction") -> dict:
    entries = []
    for r in resources:
        r = copy.deepcopy(r)
        url = {"Patient": PATIENT_URL, "Encounter": ENCOUNTER_URL}.get(
            r["resourceType"], f"urn:uuid:{r.get('id')}"
        )
        entries.append(
            {"fullUrl": url, "resource": r, "request": {"method": "POST", "url": r["resourceType"]}}
        )
    return {"resourceType": "Bundle", "type": btype, "entry": entries}


MIMIC = "http://mimic.mit.edu/fhir/mimic"
PID = "8f5a0b6e-1111-5c1d-9a3e-000000000001"
EID = "9a1b2c3d-2222-5c1d-9a3e-000000000002"


def mimic_resources() -> list[dict]:
    """The shape MIMIC-IV on FHIR writes (no address, no condition dates, labs on MIMIC item codes)."""
    subject = {"reference": f"Patient/{PID}"}
    enc = {"reference": f"Encounter/{EID}"}

    def diagnosis(rid: str, version: int, code: str) -> dict:
        return {"resourceType": "Condition", "id": rid, "subject": subject, "encounter": enc,
                "category": [{"coding": [{"code": "encounter-diagnosis", "system":
                                          "http://terminology.hl7.org/CodeSystem/condition-category"}]}],
                "code": {"coding": [{"system": f"{MIMIC}/CodeSystem/mimic-diagnosis-icd{version}",
                                     "code": code}]}}

    return [
        {"resourceType": "Patient", "id": PID, "gender": "female", "birthDate": "2128-05-06",
         "identifier": [{"system": f"{MIMIC}/identifier/patient", "value": "10000032"}]},
        {"resourceType": "Encounter", "id": EID, "status": "finished", "subject": subject,
         "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "EMER"},
         "period": {"start": "2180-05-06T22:23:00-04:00", "end": "2180-05-07T17:15:00-04:00"}},
        diagnosis("d1", 10, "J101"),
        diagnosis("d2", 9, "4019"),
        {"resourceType": "Observation", "id": "o1", "status": "final", "subject": subject, "encounter": enc,
         "code": {"coding": [{"system": f"{MIMIC}/CodeSystem/mimic-d-labitems", "code": "50912"}]},
         "effectiveDateTime": "2180-05-06T23:10:00-04:00",
         "valueQuantity": {"value": 0.9, "unit": "mg/dL", "code": "mg/dL",
                           "system": f"{MIMIC}/CodeSystem/mimic-units"}},
    ]
