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


def _on_disk(store: ParquetStore, kind: str, column: str) -> list[dt.datetime]:
    """What the Parquet files hold (not what ``read`` shows)."""
    return [v for path in store.files(kind) for v in pq.read_table(path)[column].to_pylist()]


def test_patient_after_its_events_rewrites_their_files(tmp_path: Path) -> None:
    core = IngestCore(context(), ParquetStore(str(tmp_path)).open(), 1000)
    assert _commit(core, fhir(bundle(BIRTH_ENCOUNTER, LATER_VISIT))) == {}  # birth date unknown yet
    assert _on_disk(core.store, "encounter", "start")[0] == dt.datetime(2020, 3, 15, 8, tzinfo=UTC)
    result = core.commit(core.normalize(fhir(PATIENT)).tables, new_batch_id())
    assert len(result.rewritten) == 1 and result.stored == {"patient": 1}
    starts = sorted(_on_disk(core.store, "encounter", "start"))
    assert starts == [GENERALIZED, dt.datetime(2020, 3, 16, 8, tzinfo=UTC)]  # only the birth-day date
    assert core.store.count("encounter") == 2
    # the rewrite keeps the rows and keys: a re-send is still a duplicate
    assert core.commit(core.normalize(fhir(bundle(BIRTH_ENCOUNTER))).tables, new_batch_id()).duplicates == 1


def test_patient_after_events_in_several_files_rewrites_each(tmp_path: Path) -> None:
    """A patient's events spread over three part files (two kinds, two commits): all rewritten."""
    core = IngestCore(context(), ParquetStore(str(tmp_path)).open(), 1000)
    _commit(core, fhir(bundle(BIRTH_ENCOUNTER, BIRTH_WEIGHT)))
    _commit(core, fhir(bundle({**BIRTH_WEIGHT, "id": "o2"}, {**BIRTH_ENCOUNTER, "id": "e3"}, LATER_VISIT)))
    result = core.commit(core.normalize(fhir(PATIENT)).tables, new_batch_id())
    assert len(result.rewritten) == 4  # encounter and observation files of both commits
    assert _on_disk(core.store, "observation", "effective") == [GENERALIZED, GENERALIZED]
    assert sorted(_on_disk(core.store, "encounter", "start")) == [GENERALIZED, GENERALIZED,
                                                                  dt.datetime(2020, 3, 16, 8, tzinfo=UTC)]


def test_late_patient_through_another_replica_or_after_a_restart(tmp_path: Path) -> None:
    writer = IngestCore(context(), ParquetStore(str(tmp_path / "a")).open(), 1000)
    other = IngestCore(context(), ParquetStore(str(tmp_path / "a")).open(), 1000)
    _commit(writer, fhir(bundle(BIRTH_ENCOUNTER)))
    _commit(other, fhir(PATIENT))  # learns the orphan event by catching up, rewrites its file
    assert _on_disk(writer.store, "encounter", "start") == [GENERALIZED]
    first = IngestCore(context(), ParquetStore(str(tmp_path / "b")).open(), 1000)
    _commit(first, fhir(bundle(BIRTH_WEIGHT)))
    first.store.close()
    # a restart: the orphan is learnt at open
    restarted = IngestCore(context(), ParquetStore(str(tmp_path / "b")).open(), 1000)
    _commit(restarted, fhir(PATIENT))
    assert _on_disk(restarted.store, "observation", "effective") == [GENERALIZED]


def test_read_applies_the_guard_to_rows_written_without_it(tmp_path: Path) -> None:
    """E.g. a replica of an older version wrote the event after the Patient: read() still cuts it."""
    core = IngestCore(context(), ParquetStore(str(tmp_path)).open(), 1000)
    _commit(core, fhir(PATIENT))
    plain = ParquetStore(str(tmp_path)).open()  # no guard
    plain.commit(core.normalize(fhir(bundle(BIRTH_ENCOUNTER))).tables)
    assert _on_disk(core.store, "encounter", "start") == [dt.datetime(2020, 3, 15, 8, tzinfo=UTC)]
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


def test_kafka_path_patient_message_then_event_message(tmp_path: Path) -> None:
    """The consumer commits through the same IngestCore and store: an Arrow patients message, then a
    protobuf FlatRecords message with the birth encounter in a later batch."""
    from confluent_kafka import Message

    from healthai.ingest.kafka.consumer import KafkaIngest
    from healthai.ingest.kafka.settings import KafkaSettings

    from .conftest import make_settings
    from .kafkakit import mock_cluster
    from .test_kafka import _arrow

    with mock_cluster() as cluster:
        producer = cluster.producer()
        producer.produce("health-events", value=b"", partition=0)  # the topic exists for the offset commit
        producer.flush(10)
        settings = make_settings(tmp_path / "store", kafka=KafkaSettings(bootstrap_servers=cluster.bootstrap))
        ingest = KafkaIngest(settings, ctx=context())
        ingest.store.open()
        try:
            patients = pa.table({"patient_id": ["k1"], "sex": ["F"], "birth_date": ["2022-11-30"]})
            arrow = [("content-type", b"application/vnd.apache.arrow.stream"), ("healthai-kind", b"patient")]
            ingest.process([Message(topic="health-events", partition=0, offset=0, value=_arrow(patients),
                                    headers=arrow)])
            flat = ingest_pb2.FlatRecords(encounters=[ingest_pb2.EncounterRecord(
                encounter_id="k-e1", patient_id="k1", class_code="IMP", start="2022-11-30T22:00:00Z")])
            ingest.process([Message(topic="health-events", partition=0, offset=1,
                                    value=flat.SerializeToString(),
                                    headers=[("content-type", b"application/x-protobuf")])])
            starts = ingest.store.read("encounter")["start"].to_pylist()
            assert starts == [dt.datetime(2022, 11, 1, tzinfo=UTC)]
        finally:
            ingest.consumer.close()
            ingest.dlq.peek.close()


def test_rewrite_claimed_but_not_promoted_is_rolled_forward(tmp_path: Path) -> None:
    """A writer dying between its claim and the promotion of a rewrite: the next open promotes it."""
    from healthai.store.commitlog import Entry, LocalCommitLog

    store = ParquetStore(str(tmp_path)).open()
    rows = pa.table({"source": ["s"], "record_key": ["k"], "resource_id": ["k"], "v": [1]})
    final = store.commit({"observation": rows}).files[0]
    log = LocalCommitLog(str(tmp_path))
    pending = final.rsplit("/", 1)[0] + "/.pending-rw"
    log.write_pending([(pending, rows.set_column(3, "v", pa.array([2])))])
    assert log.claim(Entry(2, "e" * 32, [], [(pending, final)]))
    reopened = ParquetStore(str(tmp_path)).open()
    assert reopened.read("observation")["v"].to_pylist() == [2] and reopened.sequence == 2
    assert not (tmp_path / pending).exists()
