"""Bad input over gRPC: exact status codes, field names in messages, rejected records write nothing,
one bad resource does not reject its bundle, and the server stays up."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest

from healthai.v1 import common_pb2, ingest_pb2

from .conftest import IngestServer

ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
UCUM = "http://unitsofmeasure.org"
KINDS = ("patient", "encounter", "condition", "observation")
PATIENT = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1970-05-02",
           "identifier": [{"system": "urn:mrn", "value": "MRN-777"}], "address": [{"state": "NY"}]}


def obs(rid: str, loinc: str, value: float, unit: str, subject: str = "Patient/p1") -> dict[str, Any]:
    return {"resourceType": "Observation", "id": rid, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
            "subject": {"reference": subject}, "effectiveDateTime": "2026-01-05T10:00:00Z",
            "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit}}


def cond(rid: str, code: str) -> dict[str, Any]:
    return {"resourceType": "Condition", "id": rid, "code": {"coding": [{"system": ICD10, "code": code}]},
            "subject": {"reference": "Patient/p1"}, "onsetDateTime": "2026-01-05"}


def fhir(payload: Any, source: str = "clinic") -> ingest_pb2.IngestRequest:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return ingest_pb2.IngestRequest(source=source, fhir=ingest_pb2.FhirPayload(json=data))


def bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}


def rpc_error(server: IngestServer, request: ingest_pb2.IngestRequest) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        server.stub.IngestBatch(request, timeout=30)
    return err.value


def stored_rows(server: IngestServer) -> dict[str, int]:
    return {k: server.plugin.store.count(k) for k in KINDS}


def test_mixed_bundle_each_record_answered_and_only_good_ones_stored(ingest_server: IngestServer) -> None:
    reply = ingest_server.stub.IngestBatch(fhir(bundle(
        PATIENT,
        obs("o1", "29463-7", 70, "kg"),
        obs("o2", "29463-7", 5000, "kg"),                                        # impossible value
        {"resourceType": "Observation", "id": "o3", "status": "final", "effectiveDateTime": "2026-01-05",
         "subject": {"reference": "Patient/p1"}},                               # missing code
        {"resourceType": "Banana", "id": "b1"},                                  # wrong resourceType
        cond("c1", "J10.1"),
        cond("c2", "Q99.999X"),                                                  # invalid ICD-10-CM
        obs("o1", "29463-7", 71, "kg"),                                          # duplicate id
        obs("o4", "8310-5", 101.3, "[degF]", subject="Patient/nope"),           # dangling reference
    )))
    S = common_pb2
    warned = S.RECORD_STATUS_ACCEPTED_WITH_WARNINGS
    got = [(o.status, [(i.code, i.field_path) for i in o.issues]) for o in reply.outcomes]
    assert got == [
        (S.RECORD_STATUS_ACCEPTED, []),
        (S.RECORD_STATUS_ACCEPTED, []),
        (S.RECORD_STATUS_REJECTED, [("VALUE_IMPOSSIBLE", "entry[2].resource.valueQuantity.value")]),
        (S.RECORD_STATUS_REJECTED, [("MISSING_FIELD", "entry[3].resource.code.coding")]),
        (S.RECORD_STATUS_REJECTED, [("WRONG_RESOURCE_TYPE", "entry[4].resource.resourceType")]),
        (S.RECORD_STATUS_ACCEPTED, []),
        (warned, [("ICD10_INVALID", "entry[6].resource.code.coding[0].code")]),
        (S.RECORD_STATUS_REJECTED, [("DUPLICATE_ID", "entry[7].resource.id")]),
        (warned, [("REFERENCE_UNRESOLVED", "entry[8].resource.subject.reference")]),
    ]
    assert "5000" in reply.outcomes[2].issues[0].message
    assert (reply.accepted, reply.rejected) == (5, 4)
    assert stored_rows(ingest_server) == {"patient": 1, "encounter": 0, "condition": 2, "observation": 2}
    obs_rows = ingest_server.plugin.store.read("observation")
    assert sorted(obs_rows["value"].to_pylist()) == [38.5, 70.0]  # 101.3 [degF] stored as 38.5 Cel
    assert "MRN-777" not in str(ingest_server.plugin.store.read("patient").to_pylist())
    counts = ingest_server.plugin.surveillance.counts("ili", "D")  # c1 is J10.1 (influenza)
    assert list(counts.columns) == ["US-NY"] and len(counts) == 1
    assert counts.loc["2026-01-05", "US-NY"] == 1


@pytest.mark.parametrize(("payload", "message"), [
    (b"{not json", "fhir.json: malformed JSON at line 1 column 2"),
    (b"42", "fhir.json: FHIR payload must be a JSON object or array, got int"),
    (b'{"resourceType": "Bundle", "entry": []}', "fhir.json.type: Bundle.type is required"),
    (b"", "fhir.json is empty"),
])
def test_malformed_payload_is_invalid_argument(ingest_server: IngestServer, payload: bytes,
                                               message: str) -> None:
    err = rpc_error(ingest_server, fhir(payload))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details().startswith(message)
    assert stored_rows(ingest_server) == dict.fromkeys(KINDS, 0)


def test_request_level_errors_and_server_stays_up(ingest_server: IngestServer) -> None:
    err = rpc_error(ingest_server, fhir(PATIENT, source=""))
    assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                           "source is empty: name the sending system (e.g. 'hospital-a/ehr')")
    err = rpc_error(ingest_server, ingest_pb2.IngestRequest(source="clinic"))
    assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                           "payload: one of fhir, flat or arrow is required")
    big = fhir(bundle(*[obs(f"o{i}", "29463-7", 70, "kg") for i in range(5001)]))
    err = rpc_error(ingest_server, big)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "5001 FHIR resources; the limit is max_records_per_request=5000" in err.details()
    huge = fhir(b" " * (4 * 1024 * 1024 + 1))
    err = rpc_error(ingest_server, huge)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert str(4 * 1024 * 1024) in err.details()
    ok = ingest_server.stub.IngestBatch(fhir(PATIENT), timeout=30)  # still serving
    assert ok.outcomes[0].status == common_pb2.RECORD_STATUS_ACCEPTED
    assert stored_rows(ingest_server)["patient"] == 1 and ingest_server.plugin.store.count("observation") == 0


def test_stream_error_names_the_request(ingest_server: IngestServer) -> None:
    with pytest.raises(grpc.RpcError) as err:
        ingest_server.stub.IngestStream(iter([fhir(PATIENT), fhir(b"[")]), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("request 1: fhir.json: malformed JSON")
    assert stored_rows(ingest_server)["patient"] == 0  # nothing acknowledged, nothing committed
    too_many = fhir([{**PATIENT, "id": f"p{i}"} for i in range(5001)])
    with pytest.raises(grpc.RpcError) as err:
        ingest_server.stub.IngestStream(iter([fhir(PATIENT), too_many]), timeout=30)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.value.details() == ("request 1: request holds 5001 FHIR resources; the limit is "
                                   "max_records_per_request=5000")


@pytest.mark.parametrize("depth", [5000, 101])
def test_deep_json_nesting_is_invalid_argument_naming_the_limit(ingest_server: IngestServer,
                                                               depth: int) -> None:
    """json.loads recurses per level: 5,000 levels used to end in RecursionError (INTERNAL)."""
    levels = depth - 2  # the resource and its extension array are 2 levels; each object one more
    payload = ('{"resourceType": "Patient", "id": "deep", "extension": ['
               + '{"url": "urn:x", "valueString":\n' * levels + '"leaf"' + "}" * levels + "]}").encode()
    err = rpc_error(ingest_server, fhir(payload))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "fhir.json: JSON arrays/objects nest more than 100 levels deep; the limit is 100"
    assert stored_rows(ingest_server) == dict.fromkeys(KINDS, 0)
    # brackets inside strings (escaped quotes and backslashes around them) are not nesting
    tricky = {**PATIENT, "name": [{"text": '\\"[[[[{{' * 60 + '\\\\"' + "]]]" * 40}]}
    ok = ingest_server.stub.IngestBatch(fhir(bundle(tricky)), timeout=30)
    assert ok.outcomes[0].status != common_pb2.RECORD_STATUS_REJECTED
