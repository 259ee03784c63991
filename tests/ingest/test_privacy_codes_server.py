"""Audit walkO over gRPC. Finding 1: identifiers sent in code and status fields (FHIR and flat) never
reach the Parquet store. Finding 5: a JSON number of 309 or 4,301+ digits rejects its record
(INVALID_FIELD naming the field), never the request with INTERNAL."""

from __future__ import annotations

import json

from healthai.v1 import common_pb2, ingest_pb2

from .conftest import IngestServer

SSN, PHONE, EMAIL = "123-45-6789", "617-555-0199", "zelda.q@example.org"
KINDS = ("patient", "encounter", "condition", "observation")
PATIENT = {"resourceType": "Patient", "id": "pz", "gender": "female",
           "address": [{"state": "MA", "country": "US"}]}


def _fhir(body: bytes) -> ingest_pb2.IngestRequest:
    return ingest_pb2.IngestRequest(source="audit", fhir=ingest_pb2.FhirPayload(json=body))


def _stored(server: IngestServer) -> str:
    return str({k: server.plugin.store.read(k).to_pylist() for k in KINDS})


def test_a_huge_number_rejects_its_record_not_the_request(ingest_server: IngestServer) -> None:
    for digits in (309, 4301):
        body = ('{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Patient",'
                f'"id":"bn-p{digits}","gender":"female"}}}},{{"resource":{{"resourceType":"Observation",'
                f'"id":"bn-o{digits}","status":"final","code":{{"coding":[{{"system":"http://loinc.org",'
                f'"code":"8310-5"}}]}},"subject":{{"reference":"Patient/bn-p{digits}"}},'
                '"effectiveDateTime":"2025-01-01","valueQuantity":'
                '{"value":' + "9" * digits + ',"code":"Cel","system":"http://unitsofmeasure.org"}}}]}')
        reply = ingest_server.stub.IngestBatch(_fhir(body.encode()), timeout=30)
        got = [(o.status, [(i.code, i.field_path) for i in o.issues]) for o in reply.outcomes]
        assert got == [(common_pb2.RECORD_STATUS_ACCEPTED, []),
                       (common_pb2.RECORD_STATUS_REJECTED,
                        [("INVALID_FIELD", "entry[1].resource.valueQuantity.value")])], digits
    assert ingest_server.plugin.store.count("patient") == 2
    assert ingest_server.plugin.store.count("observation") == 0


def test_identifiers_in_codes_and_statuses_never_reach_the_store(ingest_server: IngestServer) -> None:
    subject = {"reference": "Patient/pz"}
    resources = [
        PATIENT,
        {"resourceType": "Condition", "id": "c1", "subject": subject, "onsetDateTime": "2025-01-08",
         "code": {"coding": [{"system": "http://snomed.info/sct", "code": "6142004"}]},
         "clinicalStatus": {"coding": [{"code": SSN}]}, "verificationStatus": {"coding": [{"code": PHONE}]}},
        {"resourceType": "Condition", "id": "c5", "subject": subject, "onsetDateTime": "2025-01-08",
         "code": {"coding": [{"system": "urn:oid:2.16.840.1.113883.6.90", "code": SSN}]}},
        {"resourceType": "Observation", "id": "o2", "status": "final", "subject": subject,
         "effectiveDateTime": "2025-01-08",
         "code": {"coding": [{"system": "http://loinc.org", "code": "94500-6"}]},
         "valueCodeableConcept": {"coding": [{"system": f"http://{EMAIL}", "code": SSN}]}},
    ]
    body = json.dumps({"resourceType": "Bundle", "type": "collection",
                       "entry": [{"resource": r} for r in resources]}).encode()
    reply = ingest_server.stub.IngestBatch(_fhir(body), timeout=30)
    assert [o.status for o in reply.outcomes] == [common_pb2.RECORD_STATUS_ACCEPTED] + \
        [common_pb2.RECORD_STATUS_ACCEPTED_WITH_WARNINGS] * 3
    flat = ingest_pb2.FlatRecords(
        conditions=[ingest_pb2.ConditionRecord(condition_id="f1", patient_id="fp", code=SSN,
                                               code_system=f"http://{EMAIL}", onset="2025-01-08"),
                    ingest_pb2.ConditionRecord(condition_id="f2", patient_id="fp", code=SSN,
                                               code_system="ICD10CM", onset="2025-01-08")],
        observations=[ingest_pb2.ObservationRecord(observation_id="fo", patient_id="fp", loinc="8310-5",
                                                   value=37, unit="Cel", panel_loinc=PHONE,
                                                   effective="2025-01-08")])
    reply = ingest_server.stub.IngestBatch(ingest_pb2.IngestRequest(source="audit", flat=flat), timeout=30)
    got = [(o.status, [i.code for i in o.issues]) for o in reply.outcomes]
    warned = common_pb2.RECORD_STATUS_ACCEPTED_WITH_WARNINGS
    assert got == [(warned, ["CODE_NOT_STORED", "NOT_STORED"])] * 2 + [
        (common_pb2.RECORD_STATUS_REJECTED, ["LOINC_INVALID"])]
    stored = _stored(ingest_server)
    assert "6142004" in stored  # the condition with withheld statuses is stored
    for secret in (SSN, PHONE, EMAIL):
        assert secret not in stored
        assert secret not in str(reply)
