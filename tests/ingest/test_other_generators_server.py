"""The server's settings for other generators, through the real Ingest server: a date-shifted MIMIC-IV
on FHIR extract needs ``latest_event_date``; a sender's own ICD-10 URI is declared in ``code_systems``."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pyarrow.compute as pc

from healthai.app.settings import load_settings
from healthai.app.testing import serve_in_thread
from healthai.ingest.plugin import IngestPlugin
from healthai.v1 import common_pb2, ingest_pb2, ingest_pb2_grpc
from tests.normalize.fhir_builders import PID, mimic_resources

OWN_ICD10 = "urn:oid:1.2.3.4.5.6"


def ingest(store: Path, flags: dict,
           resources: list[dict]) -> tuple[ingest_pb2.IngestResponse, IngestPlugin]:
    base = {"port": 0, "store_uri": str(store), "dev_mode": True}
    settings = load_settings(config=None, flags={**base, **flags})
    plugin = IngestPlugin(settings)
    with serve_in_thread(settings, [plugin]) as running, \
            grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        request = ingest_pb2.IngestRequest(source="mimic", fhir=ingest_pb2.FhirPayload(
            json=json.dumps(resources).encode()))
        return ingest_pb2_grpc.IngestStub(channel).IngestBatch(request, timeout=60), plugin


def test_mimic_extract_needs_the_latest_event_date(tmp_path: Path) -> None:
    own = {"resourceType": "Condition", "id": "own1", "subject": {"reference": f"Patient/{PID}"},
           "code": {"coding": [{"system": OWN_ICD10, "code": "J111"}]}, "recordedDate": "2180-05-07"}
    resources = [*mimic_resources(), own]
    refused, _ = ingest(tmp_path / "default", {}, resources)
    kinds = [(o.resource_type, o.status) for o in refused.outcomes]
    assert ("Patient", common_pb2.RECORD_STATUS_REJECTED) in kinds
    assert any("latest_event_date" in i.message for o in refused.outcomes for i in o.issues)

    reply, plugin = ingest(tmp_path / "shifted", {"latest_event_date": "2215-01-01",
                                                  "code_systems": {OWN_ICD10: "ICD10CM"}}, resources)
    assert reply.rejected == 0 and reply.accepted == len(resources)
    conditions = plugin.store.read("condition")
    assert sorted(pc.drop_null(conditions["icd10_code"]).to_pylist()) == ["J10.1", "J11.1"]
    assert conditions["icd9_code"].to_pylist().count("401.9") == 1
