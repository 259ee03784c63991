"""Non-Synthea EHR feeds stored for real and counted (walk-through I): one wrongly typed code no longer
fails a whole request, Epic/Cerner coded results count as lab cases, split feeds with version-specific
or conditional subject references count once their Patient is stored, and a STU3 ``refuted`` string
is never counted."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from healthai.normalize.fhir import normalize_fhir
from healthai.store import ParquetStore
from healthai.surveillance import SurveillanceCounts
from healthai.v1 import common_pb2, ingest_pb2

from .conftest import IngestServer, context

LOINC, SNOMED, ICD10 = "http://loinc.org", "http://snomed.info/sct", "http://hl7.org/fhir/sid/icd-10-cm"
MRN_SYSTEM = "urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.14"
CONDREF = f"Patient?identifier={MRN_SYSTEM}|E9990001"


def patient(pid: str, state: str) -> dict:
    return {"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "1980-02-03",
            "address": [{"use": "home", "state": state, "country": "US"}]}


def condition(rid: str, subject: str, onset: str, **extra: object) -> dict:
    return {"resourceType": "Condition", "id": rid, "subject": {"reference": subject},
            "code": {"coding": [{"system": ICD10, "code": "J10.1"}]}, "onsetDateTime": onset, **extra}


def store_payloads(store: ParquetStore, *payloads: object, source: str = "feed") -> list:
    outcomes = []
    for payload in payloads:
        out = normalize_fhir(payload, ctx=context(), source=source)
        outcomes += out.outcomes
        store.commit({k: t for k, t in out.tables.items() if t.num_rows})
    return outcomes


def day_counts(counts: SurveillanceCounts, syndrome: str, **kw: object) -> dict[str, dict[str, int]]:
    df = counts.counts(syndrome, "D", **kw)
    return {str(d.date()): {k: v for k, v in row.items() if v} for d, row in df.to_dict("index").items()
            if any(row.values())}


def test_a_positive_result_with_a_local_code_first_is_a_flu_lab_case(tmp_path: Path) -> None:
    """bug 2 (``b2_flu_lab.json``, ``b2b_flu_local_first.json``)."""
    def flu_test(rid: str, when: str, codings: list[dict]) -> dict:
        return {"resourceType": "Observation", "id": rid, "status": "final",
                "code": {"coding": [{"system": LOINC, "code": "92142-9"}]},
                "subject": {"reference": "Patient/p"},
                "effectiveDateTime": when, "valueCodeableConcept": {"coding": codings}}

    store = ParquetStore(str(tmp_path)).open()
    detected = {"system": SNOMED, "code": "260373001", "display": "Detected"}
    local = {"system": "urn:oid:1.2.840.114350.1.13.0.1.7.2.768076", "code": "DET"}
    store_payloads(store, [patient("p", "RI"), flu_test("o1", "2025-11-03T10:00:00Z", [detected])],
                   [flu_test("o2", "2025-11-04T10:00:00Z", [local, detected])])
    assert day_counts(SurveillanceCounts(store), "flu_lab") == {
        "2025-11-03": {"US-RI": 1}, "2025-11-04": {"US-RI": 1}}


def test_version_specific_references_of_a_split_feed_are_counted(tmp_path: Path) -> None:
    """bug 3 (``b3_versioned_refs.json`` then ``b3b_patient.json``)."""
    store = ParquetStore(str(tmp_path)).open()
    outcomes = store_payloads(store, [
        condition("vr-1", "Patient/vr-pat/_history/3", "2025-11-04"),
        condition("vr-2", "https://fhir.example-hospital.org/R4/Patient/vr-pat/_history/3", "2025-11-05")],
        [patient("vr-pat", "RI")])
    assert all(o.status != "REJECTED" for o in outcomes), [o.issues for o in outcomes]
    counts = SurveillanceCounts(store)
    assert day_counts(counts, "ili") == {"2025-11-04": {"US-RI": 1}, "2025-11-05": {"US-RI": 1}}
    assert counts.uncounted("ili") == 0


def _patient_by_mrn() -> dict:
    """``d1_patient_mrn.json``: an Epic transaction updating the Patient by its MRN (no id)."""
    return {"resourceType": "Bundle", "type": "transaction", "entry": [{
        "fullUrl": "urn:uuid:0b9f6a52-4a8a-4c1e-9e0e-1c1d6f2a0001",
        "resource": {"resourceType": "Patient", "identifier": [{"system": MRN_SYSTEM, "value": "E9990001"}],
                     "birthDate": "1950-07-01", "address": [{"use": "home", "state": "NJ", "country": "US"}]},
        "request": {"method": "PUT", "url": CONDREF}}]}


def _condition_by_mrn() -> dict:
    """``d2_condition_condref.json``: a Condition whose subject is the conditional reference."""
    cond = condition("x", CONDREF, "2025-11-25")
    del cond["id"]
    return {"resourceType": "Bundle", "type": "transaction", "entry": [{
        "fullUrl": "urn:uuid:0b9f6a52-4a8a-4c1e-9e0e-1c1d6f2a0002", "resource": cond,
        "request": {"method": "POST", "url": "Condition"}}]}


@pytest.mark.parametrize("patient_first", [True, False], ids=["patient-first", "condition-first"])
def test_a_conditional_subject_is_counted_as_the_patient_stored_with_that_identifier(
        tmp_path: Path, patient_first: bool) -> None:
    """bug 4: the condition waited for a region for good ("1 matching records wait")."""
    store = ParquetStore(str(tmp_path)).open()
    counts = SurveillanceCounts(store)
    if not patient_first:
        store_payloads(store, _condition_by_mrn(), source="epic-tx")
        assert counts.counts("ili", "D").empty and counts.uncounted("ili") == 1  # no such Patient yet
        store_payloads(store, _patient_by_mrn(), source="epic-tx")
    else:
        store_payloads(store, _patient_by_mrn(), _condition_by_mrn(), source="epic-tx")
    assert day_counts(counts, "ili", start="2025-11-24", end="2025-11-26") == {"2025-11-25": {"US-NJ": 1}}
    assert counts.uncounted("ili") == 0
    # counted as that patient: its pseudonym, and its age
    stored_patient = store.read("patient")["patient_id"].to_pylist()
    assert counts.cases("ili")["patient_id"].to_list() == stored_patient
    aged = counts.counts_by_age("ili", "D")
    assert aged.loc[pd.Timestamp("2025-11-25"), ("US-NJ", "65+")] == 1


def test_a_stu3_refuted_string_is_rejected_not_counted(tmp_path: Path) -> None:
    """bug 6 (``bulk/Condition.ndjson`` entry ``bk-c-ref``)."""
    store = ParquetStore(str(tmp_path)).open()
    outcomes = store_payloads(store, [patient("bk-p", "MA"),
                                      condition("bk-c-ref", "Patient/bk-p", "2025-11-20",
                                                verificationStatus="refuted"),
                                      condition("bk-c-ok", "Patient/bk-p", "2025-11-12")], source="bulk1")
    assert [o.status for o in outcomes] == ["ACCEPTED", "REJECTED", "ACCEPTED"]
    assert [(i.code, i.field_path) for i in outcomes[1].issues] == [
        ("INVALID_FIELD", "[1].verificationStatus")]
    assert day_counts(SurveillanceCounts(store), "ili") == {"2025-11-12": {"US-MA": 1}}


def test_one_wrongly_typed_code_no_longer_fails_the_request(ingest_server: IngestServer) -> None:
    """bug 1 (``f12_batch_one_bad_category.json``, ``f2_unit_int_nonloinc.json``): INTERNAL, nothing
    stored; now that entry is rejected with INVALID_FIELD and the others are stored."""
    obs = {"resourceType": "Observation", "id": "mix-o", "status": "final",
           "category": [{"coding": [{"code": 1}]}], "code": {"coding": [{"system": LOINC, "code": "8867-4"}]},
           "subject": {"reference": "Patient/mix-p"}, "effectiveDateTime": "2025-11-26T10:00:00Z",
           "valueQuantity": {"value": 80, "unit": "/min"}}
    unit = {**obs, "id": "unit-int", "category": [],
            "code": {"coding": [{"system": "urn:oid:1.2.3", "code": "GLU"}]},
            "valueQuantity": {"value": 5, "unit": 5}}
    entries = [patient("mix-p", "MA"), condition("mix-c", "Patient/mix-p", "2025-11-26"), obs, unit]
    payload = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
        for r in entries]}
    reply = ingest_server.stub.IngestBatch(ingest_pb2.IngestRequest(
        source="crash2", fhir=ingest_pb2.FhirPayload(json=json.dumps(payload).encode())), timeout=30)
    S = common_pb2
    assert [o.status for o in reply.outcomes] == [S.RECORD_STATUS_ACCEPTED, S.RECORD_STATUS_ACCEPTED,
                                                  S.RECORD_STATUS_REJECTED, S.RECORD_STATUS_REJECTED]
    assert [(i.code, i.field_path) for i in reply.outcomes[2].issues if i.severity == S.SEVERITY_ERROR] == [
        ("INVALID_FIELD", "entry[2].resource.category[0].coding[0].code")]
    assert [(i.code, i.field_path) for i in reply.outcomes[3].issues if i.severity == S.SEVERITY_ERROR] == [
        ("INVALID_FIELD", "entry[3].resource.valueQuantity.unit")]
    store = ingest_server.plugin.store
    assert (store.count("patient"), store.count("condition"), store.count("observation")) == (1, 1, 0)
