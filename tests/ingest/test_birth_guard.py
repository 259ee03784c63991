"""The store-wide birth-date guard: an event on a patient's full birth date is generalized whatever
the payload, the format (FHIR, flat records, Arrow), the replica, or a restart in between."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from healthai.ingest.service import IngestCore
from healthai.normalize.birth_guard import TOKEN_COLUMN
from healthai.normalize.context import NormalizeContext
from healthai.store import ParquetStore, new_batch_id
from healthai.v1 import common_pb2, ingest_pb2

from .conftest import KEY, REFERENCE_DATE, IngestServer, context
from .test_flat_arrow import arrow_request

UTC = dt.UTC
GENERALIZED = dt.datetime(2020, 3, 1, tzinfo=UTC)  # 2020-03-15 cut to the birth month


def fhir(doc: dict, source: str = "h") -> ingest_pb2.IngestRequest:
    return ingest_pb2.IngestRequest(source=source, fhir=ingest_pb2.FhirPayload(json=json.dumps(doc).encode()))


def bundle(*resources: dict) -> dict:
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}


PATIENT = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "2020-03-15"}
BIRTH_ENCOUNTER = {"resourceType": "Encounter", "id": "e1", "status": "finished", "class": {"code": "IMP"},
                   "subject": {"reference": "Patient/p1"},
                   "period": {"start": "2020-03-15T08:00:00Z", "end": "2020-03-17T09:00:00Z"}}
BIRTH_WEIGHT = {"resourceType": "Observation", "id": "o1", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
                "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2020-03-15T09:30:00Z",
                "valueQuantity": {"value": 3.4, "unit": "kg", "system": "http://unitsofmeasure.org",
                                  "code": "kg"}}
LATER_VISIT = {**BIRTH_ENCOUNTER, "id": "e2", "period": {"start": "2020-03-16T08:00:00Z"}}


def issue_codes(reply: ingest_pb2.IngestResponse) -> list[list[str]]:
    return [[i.code for i in o.issues] for o in reply.outcomes]


def test_fhir_patient_in_one_payload_events_in_the_next(ingest_server: IngestServer) -> None:
    stub, store = ingest_server.stub, ingest_server.plugin.store
    assert stub.IngestBatch(fhir(PATIENT), timeout=30).accepted == 1
    reply = stub.IngestBatch(fhir(bundle(BIRTH_ENCOUNTER, BIRTH_WEIGHT, LATER_VISIT)), timeout=30)
    assert reply.rejected == 0
    codes = issue_codes(reply)
    assert "DATE_GENERALIZED" in codes[0] and "DATE_GENERALIZED" in codes[1]
    assert "DATE_GENERALIZED" not in codes[2]
    assert reply.outcomes[0].status == common_pb2.RECORD_STATUS_ACCEPTED_WITH_WARNINGS
    enc = {r["start"]: r["end"] for r in store.read("encounter").to_pylist()}
    assert enc == {GENERALIZED: dt.datetime(2020, 3, 17, 9, tzinfo=UTC),  # only the birth-day date is cut
                   dt.datetime(2020, 3, 16, 8, tzinfo=UTC): None}
    assert store.read("observation")["effective"].to_pylist() == [GENERALIZED]
    # what is on disk (not only what read() shows) holds no full birth date
    for path in store.files("encounter") + store.files("observation"):
        for col in ("start", "effective"):
            table = pq.read_table(path)
            if col in table.column_names:
                assert dt.date(2020, 3, 15) not in [t.date() for t in table[col].to_pylist() if t]


def test_flat_records_patients_then_events_in_later_requests(ingest_server: IngestServer) -> None:
    stub, store = ingest_server.stub, ingest_server.plugin.store
    patients = [ingest_pb2.PatientRecord(patient_id="a", sex="M", birth_date="2019-07-04"),
                ingest_pb2.PatientRecord(patient_id="b", sex="F", birth_date="2019-07")]  # no day: no token
    first = ingest_pb2.IngestRequest(source="clinic", flat=ingest_pb2.FlatRecords(patients=patients))
    stub.IngestBatch(first, timeout=30)
    flat = ingest_pb2.FlatRecords(
        encounters=[ingest_pb2.EncounterRecord(encounter_id="e1", patient_id="a", class_code="IMP",
                                               start="2019-07-04T10:00:00Z"),
                    ingest_pb2.EncounterRecord(encounter_id="e2", patient_id="b", class_code="IMP",
                                               start="2019-07-01T10:00:00Z")],
        observations=[ingest_pb2.ObservationRecord(observation_id="o1", patient_id="a", loinc="29463-7",
                                                   value=3.1, unit="kg", effective="2019-07-04"),
                      ingest_pb2.ObservationRecord(observation_id="o2", patient_id="a", loinc="29463-7",
                                                   value=3.3, unit="kg", effective="2019-07-05")])
    reply = stub.IngestBatch(ingest_pb2.IngestRequest(source="clinic", flat=flat), timeout=30)
    assert [("DATE_GENERALIZED" in c) for c in issue_codes(reply)] == [True, False, True, False]
    starts = sorted(store.read("encounter")["start"].to_pylist())
    assert starts == [dt.datetime(2019, 7, 1, tzinfo=UTC), dt.datetime(2019, 7, 1, 10, tzinfo=UTC)]
    assert sorted(store.read("observation")["effective"].to_pylist()) == [
        dt.datetime(2019, 7, 1, tzinfo=UTC), dt.datetime(2019, 7, 5, tzinfo=UTC)]
    tokens = store.read("patient", columns=["birth_year", "birth_month", TOKEN_COLUMN]).to_pylist()
    assert sorted(tokens, key=lambda r: r[TOKEN_COLUMN] is None)[1][TOKEN_COLUMN] is None  # "2019-07"
    assert all("2019-07-04" not in str(r) for r in store.read("patient").to_pylist())


def test_arrow_birth_on_the_first_goes_to_the_second(ingest_server: IngestServer) -> None:
    stub, store = ingest_server.stub, ingest_server.plugin.store
    patients = pa.table({"patient_id": ["p"], "sex": ["F"], "birth_date": [dt.date(2021, 5, 1)]})
    stub.IngestBatch(arrow_request(common_pb2.RECORD_KIND_PATIENT, patients), timeout=30)
    obs = pa.table({"observation_id": ["o"], "patient_id": ["p"], "loinc": ["8302-2"], "value": [50.0],
                    "unit": ["cm"], "effective": ["2021-05-01T03:00:00Z"]})
    reply = stub.IngestBatch(arrow_request(common_pb2.RECORD_KIND_OBSERVATION, obs), timeout=30)
    assert "DATE_GENERALIZED" in issue_codes(reply)[0]
    assert store.read("observation")["effective"].to_pylist() == [dt.datetime(2021, 5, 2, tzinfo=UTC)]


def _commit(core: IngestCore, request: ingest_pb2.IngestRequest) -> dict[str, list[str]]:
    return core.commit(core.normalize(request).tables, new_batch_id()).generalized


def test_other_replica_and_restart_know_the_birth_date(tmp_path: Path) -> None:
    """Patient committed by one store instance (replica or earlier process), events by another."""
    a = IngestCore(context(), ParquetStore(str(tmp_path)).open(), 1000)
    b = IngestCore(context(), ParquetStore(str(tmp_path)).open(), 1000)  # opened before the Patient
    _commit(a, fhir(PATIENT))
    assert list(_commit(b, fhir(bundle(BIRTH_ENCOUNTER)))) == ["encounter"]  # learnt by catching up
    c = IngestCore(context(), ParquetStore(str(tmp_path)).open(), 1000)  # a restart: learnt at open
    assert list(_commit(c, fhir(bundle(BIRTH_WEIGHT)))) == ["observation"]
    assert c.store.read("observation")["effective"].to_pylist() == [GENERALIZED]


def test_patient_after_its_events_is_guarded_on_read(tmp_path: Path) -> None:
    core = IngestCore(context(), ParquetStore(str(tmp_path)).open(), 1000)
    assert _commit(core, fhir(bundle(BIRTH_ENCOUNTER))) == {}  # birth date unknown yet: stored as sent
    _commit(core, fhir(PATIENT))
    assert core.store.read("encounter")["start"].to_pylist() == [GENERALIZED]
    assert core.store.read("encounter", columns=["start"]).column_names == ["start"]
    assert core.store.read("encounter", columns=["start"])["start"].to_pylist() == [GENERALIZED]


def test_token_is_keyed(tmp_path: Path) -> None:
    """Another key gives another token: the stored column cannot be checked without the key."""
    tokens = []
    for i, key in enumerate((KEY, bytes(range(1, 33)))):
        ctx = NormalizeContext.create(key=key, reference_date=REFERENCE_DATE)
        core = IngestCore(ctx, ParquetStore(str(tmp_path / str(i))).open(), 1000)
        _commit(core, fhir(PATIENT))
        tokens.append(core.store.read("patient")[TOKEN_COLUMN][0].as_py())
    assert tokens[0] != tokens[1] and all(len(t) == 32 for t in tokens)
