"""A record re-sent with other content is a new version: it replaces the earlier one in reads and counts
(a Condition corrected to entered-in-error stops counting; a corrected lab result likewise); the same
content re-sent is still a duplicate. Real FHIR through a real gRPC server, a real Parquet store, and a
second store process-view (a replica) on the same directory."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from healthai.store import ParquetStore
from healthai.store.versions import VersionIndex, row_digests
from healthai.surveillance import SurveillanceCounts
from healthai.v1 import common_pb2, ingest_pb2

from .conftest import IngestServer

VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
SNOMED = "http://snomed.info/sct"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"


def _bundle(verification: str = "confirmed", flu_result: str = "260373001") -> dict:
    patient = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1970-03-04",
               "address": [{"use": "home", "state": "VT", "country": "US"}]}
    condition = {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
                 "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "J10.1"}]},
                 "verificationStatus": {"coding": [{"system": VERIFICATION, "code": verification}]},
                 "onsetDateTime": "2025-11-24"}
    lab = {"resourceType": "Observation", "id": "o1", "status": "final",
           "subject": {"reference": "Patient/p1"},
           "code": {"coding": [{"system": "http://loinc.org", "code": "92142-9"}]},
           "effectiveDateTime": "2025-11-25",
           "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": flu_result}]}}
    return {"resourceType": "Bundle", "type": "collection",
            "entry": [{"resource": r} for r in (patient, condition, lab)]}


def _send(server: IngestServer, bundle: dict) -> ingest_pb2.IngestResponse:
    payload = ingest_pb2.FhirPayload(json=json.dumps(bundle).encode())
    request = ingest_pb2.IngestRequest(source="ehr-1", fhir=payload)
    return server.stub.IngestBatch(request, timeout=30)


def _codes(response: ingest_pb2.IngestResponse, resource_type: str) -> set[str]:
    return {i.code for o in response.outcomes if o.resource_type == resource_type for i in o.issues}


def _day_counts(store: ParquetStore, syndrome: str) -> dict[pd.Timestamp, int]:
    frame = SurveillanceCounts(store).counts(syndrome, "D", start="2025-11-24", end="2025-11-25")
    return frame["US-VT"].to_dict() if "US-VT" in frame else {}


def test_a_correction_replaces_the_stored_version_in_counts_and_reads(ingest_server: IngestServer) -> None:
    first = _send(ingest_server, _bundle())
    assert first.receipt.stored["condition"] == 1 and first.receipt.revised == 0
    counts = SurveillanceCounts(ingest_server.plugin.store)
    ili = {pd.Timestamp("2025-11-24"): 1, pd.Timestamp("2025-11-25"): 0}
    assert _day_counts(ingest_server.plugin.store, "ili") == ili
    assert counts.counts("flu_lab", "D")["US-VT"].to_dict() == {pd.Timestamp("2025-11-25"): 1}

    again = _send(ingest_server, _bundle())  # the same content: a duplicate, as before
    assert again.receipt.duplicates == 3 and dict(again.receipt.stored) == {} and again.receipt.revised == 0

    fixed = _send(ingest_server, _bundle("entered-in-error", flu_result="260415000"))  # not detected
    assert fixed.receipt.revised == 2 and dict(fixed.receipt.stored) == {"condition": 1, "observation": 1}
    assert "REVISED" in _codes(fixed, "Condition") and "REVISED" in _codes(fixed, "Observation")
    assert "REVISED" not in _codes(fixed, "Patient") and "ALREADY_STORED" in _codes(fixed, "Patient")
    assert all(o.status != common_pb2.RECORD_STATUS_REJECTED for o in fixed.outcomes)
    # The same SurveillanceCounts, read incrementally: the earlier versions' cases are withdrawn.
    assert counts.counts("ili", "D", start="2025-11-24", end="2025-11-25").to_numpy().sum() == 0
    assert counts.counts("flu_lab", "D", start="2025-11-25", end="2025-11-25").to_numpy().sum() == 0
    store = ingest_server.plugin.store
    assert store.read("condition", ["verification_status"])["verification_status"].to_pylist() == [
        "entered-in-error"]
    assert store.count("condition") == 1 and store.superseded("condition") == 1

    # Re-asserted: a third version, counted again, reported on the day it was stored.
    third = _send(ingest_server, _bundle())
    assert third.receipt.revised == 2
    cases = counts.cases("ili")
    assert len(cases) == 1 and cases["day"].iloc[0] == pd.Timestamp("2025-11-24")
    assert list(cases.columns) == ["patient_id", "place", "day", "reported"]

    # A fresh reader (a restart) sees the same latest versions.
    reopened = ParquetStore(str(ingest_server.store_dir)).open()
    assert _day_counts(reopened, "ili") == ili
    assert reopened.read("condition", ["verification_status"])["verification_status"].to_pylist() == [
        "confirmed"]
    assert reopened.superseded("condition") == 2


def test_a_replica_sees_the_other_writers_version(tmp_path: Path) -> None:
    a, b = ParquetStore(str(tmp_path)).open(), ParquetStore(str(tmp_path)).open()
    row = {"source": ["s"], "record_key": ["k"], "resource_id": ["k"], "value": [1.0]}
    a.commit({"observation": pa.table(row)})
    counts_b = b.read("observation")["value"].to_pylist()
    b.commit({"observation": pa.table({**row, "value": [2.0]})})
    assert counts_b == [1.0]
    assert a.read("observation")["value"].to_pylist() == [2.0]  # caught up: the latest version only
    again = a.commit({"observation": pa.table({**row, "value": [2.0]})})  # b's version, re-sent to a
    assert again.duplicates == 1 and again.sequence == 0


def test_within_one_batch_the_last_version_wins_and_repeats_are_duplicates(tmp_path: Path) -> None:
    store = ParquetStore(str(tmp_path)).open()
    table = pa.table({"source": ["s"] * 4, "record_key": ["k", "k", "k", "j"],
                      "resource_id": ["k", "k", "k", "j"], "value": [1.0, 1.0, 3.0, 5.0]})
    result = store.commit({"observation": table})
    assert result.duplicates == 1 and result.stored == {"observation": 3} and result.revised == {
        "observation": ["k"]}
    assert sorted(store.read("observation")["value"].to_pylist()) == [3.0, 5.0]


def test_the_digest_leaves_out_the_payloads_region_except_on_patients() -> None:
    base = pa.table({"source": ["s"], "record_key": ["k"], "region": ["US-VT"], "code": ["J10.1"]})
    moved = base.set_column(2, "region", pa.array([None], pa.string()))
    assert row_digests("condition", base) == row_digests("condition", moved)  # sent alone, same record
    assert row_digests("patient", base) != row_digests("patient", moved)  # a new address is a new version
    other = base.set_column(3, "code", pa.array(["J11.1"]))
    assert row_digests("condition", base) != row_digests("condition", other)


def test_rows_stored_before_digests_existed_get_versions_from_their_content(tmp_path: Path) -> None:
    store = ParquetStore(str(tmp_path)).open()
    row = {"source": ["s"], "record_key": ["k"], "resource_id": ["k"], "value": [1.0]}
    written = store.commit({"observation": pa.table(row)}).files[0]
    pq.write_table(pq.read_table(tmp_path / written).drop_columns(["row_digest", "row_place_digest"]),
                   tmp_path / written)  # as a release before digests wrote it (test_record_versions_legacy)
    reopened = ParquetStore(str(tmp_path)).open()
    assert reopened.commit({"observation": pa.table(row)}).duplicates == 1  # the same content
    fixed = reopened.commit({"observation": pa.table({**row, "value": [2.0]})})
    assert fixed.revised == {"observation": ["k"]}
    index = VersionIndex()  # a row indexed without a version is never taken for the same content
    index.add("condition", ["s\x1fk"], [None])
    assert index.split("condition", ["s\x1fk", "s\x1fj"], [b"7", b"8"]) == ([True, True], [0])


@pytest.mark.parametrize("kind", ["observation", "patient"])
def test_digests_are_stable_across_calls_and_copies(kind: str) -> None:
    table = pa.table({"source": ["s", "s"], "record_key": ["a", "b"], "value": [1.5, None],
                      "ids": pa.array([["x", "y"], None], pa.list_(pa.string())),
                      "when": pa.array([0, None], pa.timestamp("us", tz="UTC"))})
    assert row_digests(kind, table) == row_digests(kind, copy.deepcopy(table))
    assert row_digests(kind, table)[0] != row_digests(kind, table)[1]


def _ili(cid: str, pid: str, status: str = "confirmed", onset: str = "2025-11-24") -> dict:
    return {"resourceType": "Condition", "id": cid, "subject": {"reference": f"Patient/{pid}"},
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "J11.1"}]},
            "verificationStatus": {"coding": [{"system": VERIFICATION, "code": status}]},
            "onsetDateTime": onset}


def _patient(pid: str, state: str = "VT", birth: str = "1970-03-04") -> dict:
    return {"resourceType": "Patient", "id": pid, "gender": "male", "birthDate": birth,
            "address": [{"use": "home", "state": state, "country": "US"}]}


def _resources(*resources: dict) -> dict:
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}


def _places(store: ParquetStore) -> dict[str, int]:
    frame = SurveillanceCounts(store).counts("ili", "D", start="2025-11-24", end="2025-11-24")
    return {c: int(frame[c].sum()) for c in frame.columns if frame[c].sum()}


def test_a_birth_date_rewrite_keeps_the_later_versions_of_its_files_rows(
        ingest_server: IngestServer) -> None:
    birthday = _ili("y", "p2", onset="1970-03-04")  # an event on the birth date: the guard rewrites it
    _send(ingest_server, _resources(_ili("x", "p2"), birthday))  # the Patient comes later (bulk export)
    assert _send(ingest_server, _resources(_ili("x", "p2", "entered-in-error"))).receipt.revised == 1
    assert _send(ingest_server, _resources(_patient("p2"))).receipt.stored["patient"] == 1  # rewrites file 1
    assert _places(ingest_server.plugin.store) == {}
    back = _send(ingest_server, _resources(_ili("x", "p2")))  # re-confirmed: a version, not a duplicate
    assert back.receipt.revised == 1 and _places(ingest_server.plugin.store) == {"US-VT": 1}
    assert _send(ingest_server, _resources(_ili("x", "p2"))).receipt.duplicates == 1
    assert _send(ingest_server, _resources(birthday)).receipt.duplicates == 1  # its generalized self
    reopened = ParquetStore(str(ingest_server.store_dir)).open()  # a restart indexes the same versions
    assert reopened.commit({}).duplicates == 0 and _places(reopened) == {"US-VT": 1}


def test_a_patient_stored_anew_moves_the_cases_it_placed_for_every_reader(
        ingest_server: IngestServer) -> None:
    _send(ingest_server, _resources(_patient("p3", "VT")))
    _send(ingest_server, _resources(_ili("c3", "p3")))  # sent alone: its place comes from the patient
    running = SurveillanceCounts(ingest_server.plugin.store)
    assert running.counts("ili", "D")["US-VT"].sum() == 1
    assert _send(ingest_server, _resources(_patient("p3", "NH"))).receipt.revised == 1
    fresh = SurveillanceCounts(ParquetStore(str(ingest_server.store_dir)).open())
    for reader in (running, fresh):
        frame = reader.counts("ili", "D", start="2025-11-24", end="2025-11-24")
        assert {c: int(frame[c].sum()) for c in frame.columns} == {"US-NH": 1}


def test_a_flat_conditions_corrected_state_is_a_new_version(ingest_server: IngestServer) -> None:
    def send(state: str) -> ingest_pb2.IngestResponse:
        row = ingest_pb2.ConditionRecord(condition_id="f1", patient_id="fp1", code="J10.1",
                                         onset="2025-11-24", state=state, country="US")
        request = ingest_pb2.IngestRequest(source="lab", flat=ingest_pb2.FlatRecords(conditions=[row]))
        return ingest_server.stub.IngestBatch(request, timeout=30)

    send("VT")
    assert send("VT").receipt.duplicates == 1
    assert send("NH").receipt.revised == 1 and _places(ingest_server.plugin.store) == {"US-NH": 1}


def test_a_corrected_birth_date_guards_the_events_stored_after_it(ingest_server: IngestServer) -> None:
    _send(ingest_server, _resources(_patient("p4", birth="1976-01-16")))
    assert _send(ingest_server, _resources(_patient("p4", birth="1980-03-05"))).receipt.revised == 1
    _send(ingest_server, _resources(_ili("c4", "p4", onset="1980-03-05T10:00:00Z")))
    onset = ingest_server.plugin.store.read("condition", ["onset"])["onset"].to_pylist()
    assert [(d.year, d.month, d.day) for d in onset] == [(1980, 3, 1)]  # cut to the birth month


def test_an_update_that_leaves_the_case_as_it_was_keeps_its_first_report_day(tmp_path: Path) -> None:
    import datetime as dt

    from healthai.normalize.fhir import normalize_fhir

    from .conftest import context

    store = ParquetStore(str(tmp_path)).open()
    condition = _ili("c5", "p5")
    resolved = {**condition, "clinicalStatus": {"coding": [{"code": "resolved", "system": CLINICAL}]}}
    for day, resource in ((1, condition), (20, resolved)):
        tables = normalize_fhir(_resources(_patient("p5"), resource), ctx=context(), source="s").tables
        store.commit({k: t for k, t in tables.items() if t.num_rows},
                     now=dt.datetime(2025, 12, day, tzinfo=dt.UTC))
    assert store.superseded("condition") == 1  # stored again: a new version
    cases = SurveillanceCounts(store).cases("ili")
    assert cases["reported"].tolist() == [pd.Timestamp("2025-12-01")]


def test_the_latest_version_is_the_last_committed_whatever_its_ingest_day(tmp_path: Path) -> None:
    import datetime as dt

    store = ParquetStore(str(tmp_path)).open()
    row = {"source": ["s"], "record_key": ["k"], "resource_id": ["k"], "patient_id": ["p"],
           "region": ["US-VT"], "icd10_code": ["J10.1"], "onset": pa.array([0], pa.timestamp("us", tz="UTC"))}
    for status, day in (("entered-in-error", 2), ("confirmed", 1), ("entered-in-error", 2)):
        store.commit({"condition": pa.table({**row, "verification_status": [status]})},
                     now=dt.datetime(2025, 12, day, tzinfo=dt.UTC))  # a replica's clock a day behind
    assert store.read("condition", ["verification_status"])["verification_status"].to_pylist() == [
        "entered-in-error"]
    assert SurveillanceCounts(store).cases("ili").empty
