"""All 23 Synthea bundles through gRPC into Parquet: every resource accounted for, counts per type,
pseudonyms only, canonical units, flagged codes; both RPCs; re-sending stores nothing twice."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from healthai.app.testing import serve_in_thread
from healthai.ingest.plugin import IngestPlugin
from healthai.v1 import common_pb2, ingest_pb2, ingest_pb2_grpc

from .conftest import IngestServer, make_settings, serve

# From ../shared/data/fhir/README.md (counted independently of our code).
RESOURCES = {
    "Observation": 2886, "Claim": 662, "Encounter": 463, "ExplanationOfBenefit": 463, "Procedure": 252,
    "Immunization": 218, "DiagnosticReport": 210, "MedicationRequest": 199, "Condition": 168,
    "CarePlan": 52, "Goal": 39, "Organization": 35, "Practitioner": 35, "Patient": 23, "ImagingStudy": 14,
    "AllergyIntolerance": 5,
}
STORED_KINDS = {"Patient": "patient", "Encounter": "encounter", "Condition": "condition",
                "Observation": "observation"}
BP_PANELS = 169  # 55284-4 panels: each gives a systolic and a diastolic row


def bundles(shared_data: Path) -> list[Path]:
    files = sorted((shared_data / "fhir").glob("*.json"))
    assert len(files) == 23
    return files


def raw_identifiers(files: list[Path]) -> set[str]:
    """Patient identifiers, names and resource ids as sent — none may appear in the store."""
    found: set[str] = set()
    for f in files:
        for entry in json.loads(f.read_bytes())["entry"]:
            res = entry["resource"]
            if res["resourceType"] == "Patient":
                found.update(i["value"] for i in res.get("identifier", []))
                for name in res.get("name", []):
                    found.update([name["family"], *name.get("given", [])])
                found.update(line for a in res.get("address", []) for line in a.get("line", []))
            if res["resourceType"] in STORED_KINDS:
                found.add(res["id"])
    return found


def all_strings(table: pa.Table) -> set[str]:
    out: set[str] = set()
    for col in table.columns:
        if pa.types.is_string(col.type):
            out.update(v for v in col.to_pylist() if v)
        elif pa.types.is_list(col.type):
            out.update(v for vs in col.to_pylist() if vs for v in vs if v)
    return out


def test_all_synthea_bundles_end_to_end(ingest_server: IngestServer, shared_data: Path) -> None:
    files = bundles(shared_data)
    per_type: collections.Counter[str] = collections.Counter()
    stored: collections.Counter[str] = collections.Counter()
    sequences = []
    for f in files:
        payload = f.read_bytes()
        reply = ingest_server.stub.IngestBatch(fhir_request(payload), timeout=60)
        n_entries = len(json.loads(payload)["entry"])
        assert [o.index for o in reply.outcomes] == list(range(n_entries))  # every entry answered, in order
        assert reply.accepted + reply.rejected == n_entries
        for o in reply.outcomes:
            per_type[o.resource_type] += 1
            if o.status == common_pb2.RECORD_STATUS_REJECTED:
                errors = [i for i in o.issues if i.severity == common_pb2.SEVERITY_ERROR]
                assert errors and all(i.code and i.field_path and i.message for i in errors)
            elif o.resource_type not in STORED_KINDS:
                assert o.kind == common_pb2.RECORD_KIND_OTHER
                assert [i.code for i in o.issues] == ["RESOURCE_TYPE_NOT_STORED"]
            else:
                assert o.status in (common_pb2.RECORD_STATUS_ACCEPTED,
                                    common_pb2.RECORD_STATUS_ACCEPTED_WITH_WARNINGS)
                assert len(o.source_id) == 64  # the pseudonymized id, never the raw one
        stored.update(dict(reply.receipt.stored))
        sequences.append(reply.receipt.sequence)
        assert len(reply.receipt.batch_id) == 32 and reply.receipt.duplicates == 0
        for rel in reply.receipt.files:
            assert (ingest_server.store_dir / rel).is_file()
    assert dict(per_type) == RESOURCES
    assert sequences == list(range(1, 24))
    assert stored["patient"] == 23 and stored["encounter"] == 463 and stored["condition"] == 168
    assert stored["observation"] == RESOURCES["Observation"] + BP_PANELS

    store = ingest_server.plugin.store
    tables = {kind: store.read(kind) for kind in ("patient", "encounter", "condition", "observation")}
    assert {k: t.num_rows for k, t in tables.items()} == dict(stored)
    leaked = raw_identifiers(files) & set().union(*(all_strings(t) for t in tables.values()))
    assert not leaked, f"{len(leaked)} raw identifiers/names stored"
    obs = tables["observation"]
    systolic = obs.filter(pa.compute.equal(obs["loinc"], "8480-6"))
    assert systolic.num_rows == BP_PANELS and set(systolic["unit"].to_pylist()) == {"mm[Hg]"}
    cond = tables["condition"]
    assert set(cond["code_system"].to_pylist()) == {"SNOMED"}
    assert cond["icd10_code"].null_count == 168  # no map loaded: kept and flagged, not dropped
    assert set(tables["patient"]["region"].to_pylist()) == {"US-MA"}
    files_on_disk = list(ingest_server.store_dir.rglob("*.parquet"))
    assert sum(pq.read_metadata(p).num_rows for p in files_on_disk) == sum(stored.values())

    again = ingest_server.stub.IngestBatch(fhir_request(files[0].read_bytes()))
    assert dict(again.receipt.stored) == {} and again.receipt.sequence == 0
    assert again.receipt.duplicates > 0 and not again.receipt.files
    marked = [o for o in again.outcomes if any(i.code == "ALREADY_STORED" for i in o.issues)]
    assert {o.resource_type for o in marked} == set(STORED_KINDS)  # every stored record, per record
    assert all(i.severity == common_pb2.SEVERITY_INFO for o in marked for i in o.issues
               if i.code == "ALREADY_STORED")
    assert len(marked) == sum(1 for o in again.outcomes if o.resource_type in STORED_KINDS)


def fhir_request(payload: bytes) -> ingest_pb2.IngestRequest:
    return ingest_pb2.IngestRequest(source="synthea", fhir=ingest_pb2.FhirPayload(json=payload))


def resource_chunks(f: Path, size: int) -> list[bytes]:
    """A bundle's resources as JSON arrays of at most ``size`` resources."""
    resources = [e["resource"] for e in json.loads(f.read_bytes())["entry"]]
    return [json.dumps(resources[k:k + size]).encode() for k in range(0, len(resources), size)]


@pytest.mark.parametrize("chunked", [False, True], ids=["one-commit", "chunked"])
def test_client_streaming_rpc(tmp_path: Path, shared_data: Path, chunked: bool) -> None:
    files = bundles(shared_data)[:3]
    n_resources = sum(len(json.loads(f.read_bytes())["entry"]) for f in files)
    limit = {"max_records_per_request": 400} if chunked else {}
    for server in serve(tmp_path / "store", **limit):
        if chunked:  # commits happen every 400 buffered rows
            requests = [fhir_request(c) for f in files for c in resource_chunks(f, 300)]
        else:
            requests = [fhir_request(f.read_bytes()) for f in files]
        reply = server.stub.IngestStream(iter(requests), timeout=60)
        assert sorted({o.request_index for o in reply.outcomes}) == list(range(len(requests)))
        assert len(reply.outcomes) == n_resources == reply.accepted + reply.rejected
        assert reply.receipt.stored["patient"] == 3
        kinds = ("patient", "encounter", "condition", "observation")
        assert sum(reply.receipt.stored.values()) == sum(server.plugin.store.count(k) for k in kinds)
        if chunked:
            assert reply.receipt.sequence > reply.receipt.first_sequence >= 1
        else:
            assert reply.receipt.sequence == reply.receipt.first_sequence == 1


FIXTURES = Path(__file__).resolve().parent.parent / "normalize" / "fixtures"
MAPS = {
    "nlm": {"snomed_map_nlm": FIXTURES / "der2_iisssccRefset_ExtendedMapSnapshot_FIXTURE.txt"},
    "omop": {"omop_concept": FIXTURES / "CONCEPT.csv",
             "omop_concept_relationship": FIXTURES / "CONCEPT_RELATIONSHIP.csv"},
}


@pytest.mark.parametrize("map_format", sorted(MAPS))
def test_snomed_map_from_settings_codes_conditions(tmp_path: Path, shared_data: Path,
                                                   map_format: str) -> None:
    """The operator's map (a settings path) reaches normalization: SNOMED conditions get ICD-10-CM."""
    settings = make_settings(tmp_path / "store", **MAPS[map_format])
    plugin = IngestPlugin(settings)  # builds the normalize context from settings (dev key)
    bundle = next(f for f in bundles(shared_data) if f.name.startswith("Dirk_Kuhlman"))  # diabetes, CKD
    with serve_in_thread(settings, [plugin]) as running, \
            grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
        reply = ingest_pb2_grpc.IngestStub(ch).IngestBatch(fhir_request(bundle.read_bytes()), timeout=60)
    cond = plugin.store.read("condition")
    records = set(cond["resource_id"].to_pylist())
    assert len(records) == 18  # 18 Conditions; a concept of two ICD-10-CM map groups adds a row
    groups = [k for k in cond["record_key"].to_pylist() if "#group" in k]
    assert reply.receipt.stored["condition"] == 18 + len(groups)
    mapped = {s: i for s, i, m, k in zip(cond["snomed_code"].to_pylist(), cond["icd10_code"].to_pylist(),
                                         cond["icd10_mapped"].to_pylist(), cond["record_key"].to_pylist(),
                                         strict=True) if m and "#group" not in k}
    assert mapped["44054006"].startswith("E11")  # diabetes -> E11.x
    unmapped = [o for o in reply.outcomes if any(i.code == "CODE_UNMAPPED" for i in o.issues)]
    keys = cond["record_key"].to_pylist()
    first_rows = [s for s, k in zip(cond["snomed_code"].to_pylist(), keys, strict=True) if "#group" not in k]
    assert len(unmapped) == 18 - sum(1 for s in first_rows if s in mapped)
