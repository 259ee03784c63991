"""Flat records and Arrow IPC batches over gRPC, including hypothesis-generated flat batches."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from healthai.ingest import convert
from healthai.normalize.flat import INPUT_COLUMNS
from healthai.v1 import common_pb2, ingest_pb2

from .conftest import IngestServer, serve

S = common_pb2


def arrow_request(kind: int, table: pa.Table, source: str = "lab") -> ingest_pb2.IngestRequest:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=2)  # several record batches
    return ingest_pb2.IngestRequest(source=source, arrow=ingest_pb2.ArrowRecords(
        kind=kind, ipc_stream=sink.getvalue().to_pybytes()))


def test_flat_fields_match_the_normalizer_columns() -> None:
    for kind, (_, strings, doubles, bools) in convert.FLAT_KINDS.items():
        assert set(strings + doubles + bools) == set(INPUT_COLUMNS[kind])


def test_flat_records_of_all_kinds(ingest_server: IngestServer) -> None:
    flat = ingest_pb2.FlatRecords(
        patients=[ingest_pb2.PatientRecord(patient_id="p1", sex="F", birth_date="1970-02-03", state="NY")],
        encounters=[ingest_pb2.EncounterRecord(encounter_id="e1", patient_id="p1", class_code="AMB",
                                               start="2026-01-05T09:00:00Z", region="US-NY")],
        conditions=[ingest_pb2.ConditionRecord(condition_id="c1", patient_id="p1", code="j101",
                                               onset="2026-01-05", region="US-NY"),
                    ingest_pb2.ConditionRecord(condition_id="c2", patient_id="p1", code="XX9")],
        observations=[
            ingest_pb2.ObservationRecord(observation_id="o1", patient_id="p1", loinc="29463-7", value=70,
                                         unit="kg"),
            ingest_pb2.ObservationRecord(observation_id="o2", patient_id="p1", loinc="29463-7", unit="kg"),
            ingest_pb2.ObservationRecord(observation_id="bp", patient_id="p1", loinc="8480-6", value=120,
                                         unit="mmHg", panel_loinc="85354-9"),
            ingest_pb2.ObservationRecord(observation_id="bp", patient_id="p1", loinc="8462-4", value=80,
                                         unit="mmHg", panel_loinc="85354-9"),
        ],
    )
    reply = ingest_server.stub.IngestBatch(ingest_pb2.IngestRequest(source="clinic", flat=flat), timeout=30)
    got = [(o.kind, o.index, o.status, [(i.code, i.field_path) for i in o.issues]) for o in reply.outcomes]
    ok, warned = S.RECORD_STATUS_ACCEPTED, S.RECORD_STATUS_ACCEPTED_WITH_WARNINGS
    rejected = S.RECORD_STATUS_REJECTED
    assert got == [
        (S.RECORD_KIND_PATIENT, 0, ok, []),
        (S.RECORD_KIND_ENCOUNTER, 0, ok, []),
        (S.RECORD_KIND_CONDITION, 0, ok, []),
        (S.RECORD_KIND_CONDITION, 1, warned, [("ICD10_INVALID", "flat.conditions[1].code")]),  # kept, flagged
        (S.RECORD_KIND_OBSERVATION, 0, ok, []),
        (S.RECORD_KIND_OBSERVATION, 1, rejected, [("MISSING_FIELD", "flat.observations[1].value")]),
        # mmHg: a non-UCUM spelling, converted and flagged
        (S.RECORD_KIND_OBSERVATION, 2, warned, [("UNIT_NOT_UCUM", "flat.observations[2].unit")]),
        (S.RECORD_KIND_OBSERVATION, 3, warned, [("UNIT_NOT_UCUM", "flat.observations[3].unit")]),
    ]
    assert dict(reply.receipt.stored) == {"patient": 1, "encounter": 1, "condition": 2, "observation": 3}
    assert list(reply.statuses) == [status for _, _, status, _ in got]
    terse = ingest_server.stub.IngestBatch(ingest_pb2.IngestRequest(
        source="clinic", flat=flat, outcome_detail=ingest_pb2.OUTCOME_DETAIL_ISSUES), timeout=30)
    assert list(terse.statuses) == list(reply.statuses)  # every record's status, always
    assert [(o.kind, o.index) for o in terse.outcomes] == [(S.RECORD_KIND_CONDITION, 1),
                                                           (S.RECORD_KIND_OBSERVATION, 1),
                                                           (S.RECORD_KIND_OBSERVATION, 2),
                                                           (S.RECORD_KIND_OBSERVATION, 3)]
    assert terse.receipt.duplicates == 7 and dict(terse.receipt.stored) == {}
    obs = ingest_server.plugin.store.read("observation")
    assert sorted(zip(obs["loinc"].to_pylist(), obs["unit"].to_pylist(), strict=True)) == [
        ("29463-7", "kg"), ("8462-4", "mm[Hg]"), ("8480-6", "mm[Hg]")]
    cond = ingest_server.plugin.store.read("condition")
    assert cond["icd10_code"].to_pylist() == ["J10.1", None] and cond["code"].to_pylist()[1] == "XX9"
    assert ingest_server.plugin.surveillance.counts().loc["2026-01-05", "US-NY"] == 1


def test_arrow_batches_and_their_errors(ingest_server: IngestServer) -> None:
    table = pa.table({"observation_id": ["a1", "a2", "a3"], "patient_id": ["p1", "p1", "p2"],
                      "loinc": ["8310-5", "8310-5", "8310-5"], "value": [98.6, 37.0, 80.0],
                      "unit": ["[degF]", "Cel", "Cel"], "extra_column": [1, 2, 3]})
    reply = ingest_server.stub.IngestBatch(arrow_request(S.RECORD_KIND_OBSERVATION, table), timeout=30)
    assert [o.status for o in reply.outcomes] == [S.RECORD_STATUS_ACCEPTED, S.RECORD_STATUS_ACCEPTED,
                                                  S.RECORD_STATUS_REJECTED]
    issues = [(i.code, i.field_path) for i in reply.outcomes[2].issues]
    assert issues == [("VALUE_IMPOSSIBLE", "arrow.rows[2].value")]
    values = ingest_server.plugin.store.read("observation")["value"].to_pylist()
    assert sorted(round(v, 1) for v in values) == [37.0, 37.0]
    again = ingest_server.stub.IngestBatch(arrow_request(S.RECORD_KIND_OBSERVATION, table), timeout=30)
    assert dict(again.receipt.stored) == {} and again.receipt.duplicates == 2

    def error(request: ingest_pb2.IngestRequest) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.RpcError) as err:
            ingest_server.stub.IngestBatch(request, timeout=30)
        return err.value.code(), err.value.details()

    code, msg = error(arrow_request(S.RECORD_KIND_OBSERVATION, table.drop_columns(["value"])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert msg == "arrow.ipc_stream: observation records lack required column(s): value"
    code, msg = error(ingest_pb2.IngestRequest(source="lab", arrow=ingest_pb2.ArrowRecords(
        kind=S.RECORD_KIND_PATIENT, ipc_stream=b"not arrow at all")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert msg.startswith("arrow.ipc_stream is not a valid Arrow IPC stream")
    for wrong in (S.RECORD_KIND_PATIENT, S.RECORD_KIND_ENCOUNTER):  # would store empty patients/encounters
        code, msg = error(arrow_request(wrong, table.append_column("encounter_id", pa.array(["e1"] * 3))))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert msg.endswith("hold the column(s) of observation records (observation_id, loinc, value): "
                            "send this table with kind observation")
    code, msg = error(arrow_request(S.RECORD_KIND_UNSPECIFIED, table))
    assert (code, msg) == (grpc.StatusCode.INVALID_ARGUMENT,
                           "arrow.kind 0 is not one of RECORD_KIND_PATIENT, RECORD_KIND_ENCOUNTER, "
                           "RECORD_KIND_CONDITION, RECORD_KIND_OBSERVATION")
    assert ingest_server.plugin.store.count("observation") == 2  # nothing more written


# ---------------------------------------------------------------- hypothesis on the flat path
LOINCS = ["29463-7", "8302-2", "8480-6", "8310-5", "2339-0", "1234-5", "", "x"]
UNITS = ["kg", "g", "[lb_av]", "cm", "mmHg", "mm[Hg]", "Cel", "[degF]", "C", "mg/dL", "mmol/L", "furlong",
         ""]
CODES = [("J10.1", "ICD10CM"), ("j101", ""), ("E11.9", "ICD10CM"), ("250.01", "ICD9CM"),
         ("6142004", "SNOMED"), ("ZZZ", "ICD10CM"), ("", ""), ("J10.1", "http://hl7.org/fhir/sid/icd-10-cm"),
         ("1", "LOCAL")]
ids = st.sampled_from(["1", "2", "3", "a", "b"]) | st.text(min_size=1, max_size=8)  # empty: see below
dates = st.sampled_from(["", "2026-01-05", "2026-01-05T10:00:00Z", "1850", "2999-01-01", "2026-13-40",
                         "soon"])
values = st.none() | st.floats(allow_nan=True, allow_infinity=True) | st.floats(-10, 500)

observations = st.builds(
    ingest_pb2.ObservationRecord, observation_id=ids, patient_id=ids, loinc=st.sampled_from(LOINCS),
    value=values, unit=st.sampled_from(UNITS), effective=dates,
    region=st.sampled_from(["", "US-MA", "US-NY", "XX-00"]))
conditions = st.builds(
    lambda code, **kw: ingest_pb2.ConditionRecord(code=code[0], code_system=code[1], **kw),
    code=st.sampled_from(CODES), condition_id=ids, patient_id=ids, onset=dates,
    state=st.sampled_from(["", "Massachusetts", "NY", "Atlantis"]))


@pytest.mark.parametrize(("kind", "empty"), [
    ("observations", "observation_id"), ("observations", "patient_id"),
    ("conditions", "condition_id"), ("conditions", "patient_id")])
def test_empty_required_id_rejects_only_that_record(ingest_server: IngestServer, kind: str,
                                                    empty: str) -> None:
    id_field = "observation_id" if kind == "observations" else "condition_id"
    make = {"observations": lambda **kw: ingest_pb2.ObservationRecord(loinc="29463-7", value=70, **kw),
            "conditions": lambda **kw: ingest_pb2.ConditionRecord(code="J10.1", **kw)}[kind]
    good = make(**{id_field: "x1", "patient_id": "p1"})
    bad = make(**{id_field: "x2", "patient_id": "p1", empty: ""})
    reply = ingest_server.stub.IngestBatch(ingest_pb2.IngestRequest(
        source="clinic", flat=ingest_pb2.FlatRecords(**{kind: [good, bad]})), timeout=30)
    assert [o.status for o in reply.outcomes] == [S.RECORD_STATUS_ACCEPTED, S.RECORD_STATUS_REJECTED]
    issues = [(i.code, i.field_path) for i in reply.outcomes[1].issues]
    assert issues == [("MISSING_FIELD", f"flat.{kind}[1].{empty}")]
    assert sum(reply.receipt.stored.values()) == 1


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IngestServer]:
    yield from serve(Path(tmp_path_factory.mktemp("hypothesis")) / "store")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(obs=st.lists(observations, max_size=12), conds=st.lists(conditions, max_size=8))
def test_flat_batches_are_fully_accounted_for(shared_server: IngestServer, obs: list, conds: list) -> None:
    source = f"hyp-{uuid.uuid4().hex}"  # a fresh idempotency namespace per example
    request = ingest_pb2.IngestRequest(source=source, flat=ingest_pb2.FlatRecords(observations=obs,
                                                                                    conditions=conds))
    before = {k: shared_server.plugin.store.count(k) for k in ("condition", "observation")}
    reply = shared_server.stub.IngestBatch(request, timeout=30)
    by_kind = {S.RECORD_KIND_CONDITION: len(conds), S.RECORD_KIND_OBSERVATION: len(obs)}
    for kind, n in by_kind.items():
        assert [o.index for o in reply.outcomes if o.kind == kind] == list(range(n))
    assert reply.accepted + reply.rejected == len(obs) + len(conds) == len(reply.outcomes)
    for o in reply.outcomes:
        if o.status == S.RECORD_STATUS_REJECTED:
            assert any(i.severity == S.SEVERITY_ERROR for i in o.issues)
        assert all(i.field_path.startswith(("flat.observations[", "flat.conditions[")) for i in o.issues)
    def stays(o: ingest_pb2.RecordOutcome) -> bool:  # accepted, and not a condition left without a code
        return o.status != S.RECORD_STATUS_REJECTED and not any(i.code == "NOT_STORED" for i in o.issues)

    kept = {k: sum(1 for o in reply.outcomes if o.kind == pk and stays(o))
            for k, pk in (("condition", S.RECORD_KIND_CONDITION), ("observation", S.RECORD_KIND_OBSERVATION))}
    # every accepted row is stored once, or counted as a duplicate of a row with the same record key
    stored = {k: reply.receipt.stored.get(k, 0) for k in kept}
    assert all(stored[k] <= kept[k] for k in kept)
    assert sum(stored.values()) + reply.receipt.duplicates == sum(kept.values())
    assert {k: shared_server.plugin.store.count(k) - before[k] for k in kept} == stored
    if stored["observation"]:  # non-finite values never get in (null = kept unconverted, flagged)
        values = shared_server.plugin.store.read("observation")["value"].to_pylist()
        assert all(v is None or math.isfinite(v) for v in values)
    again = shared_server.stub.IngestBatch(request, timeout=30)
    assert dict(again.receipt.stored) == {} and again.receipt.duplicates == sum(kept.values())
    assert {k: shared_server.plugin.store.count(k) - before[k] for k in kept} == stored


def test_too_large_response_falls_back_to_issue_outcomes(tmp_path: Path) -> None:
    records = [ingest_pb2.ObservationRecord(observation_id=f"o{i}", patient_id="p", loinc="29463-7",
                                            value=70 if i else 7000, unit="kg") for i in range(1500)]
    request = ingest_pb2.IngestRequest(source="bulk", flat=ingest_pb2.FlatRecords(observations=records))
    assert request.ByteSize() < 64 * 1024
    for server in serve(tmp_path / "store", max_message_bytes=64 * 1024):
        reply = server.stub.IngestBatch(request, timeout=30)
        assert reply.ByteSize() <= 64 * 1024
        assert len(reply.statuses) == 1500 and reply.statuses[0] == S.RECORD_STATUS_REJECTED
        assert [(o.index, o.issues[0].code) for o in reply.outcomes] == [(0, "VALUE_IMPOSSIBLE")]
        assert reply.receipt.stored["observation"] == 1499


def test_concurrent_resends_store_each_record_once(ingest_server: IngestServer) -> None:
    table = pa.table({"observation_id": [f"c{i}" for i in range(300)], "patient_id": ["p"] * 300,
                      "loinc": ["29463-7"] * 300, "value": [70.0] * 300, "unit": ["kg"] * 300})
    request = arrow_request(S.RECORD_KIND_OBSERVATION, table, source="racing")
    with ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(lambda _: ingest_server.stub.IngestBatch(request, timeout=60), range(6)))
    assert sum(r.receipt.stored.get("observation", 0) for r in replies) == 300
    assert sum(r.receipt.duplicates for r in replies) == 5 * 300
    assert ingest_server.plugin.store.read("observation").num_rows == 300


def test_a_compressed_batch_that_decodes_past_the_limit_is_refused_before_decoding(
        ingest_server: IngestServer) -> None:
    size = convert.MAX_DECODED_BYTES + 2**20  # one value: a few kilobytes of zstd on the wire
    junk = pa.array(["A" * size], pa.large_string())
    table = pa.table({"patient_id": ["p1"], "sex": ["female"], "junk": junk})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as writer:
        writer.write_table(table)
    del table, junk
    payload = sink.getvalue().to_pybytes()
    assert len(payload) < 64 * 1024
    request = ingest_pb2.IngestRequest(source="lab", arrow=ingest_pb2.ArrowRecords(
        kind=S.RECORD_KIND_PATIENT, ipc_stream=payload))
    with pytest.raises(grpc.RpcError) as err:
        ingest_server.stub.IngestBatch(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "decodes to 257 MiB, more than the 256 MiB one request may hold" in err.value.details()
    small = pa.table({"patient_id": ["p2"], "sex": ["female"]})  # compressed within the limit: read
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, small.schema, options=pa.ipc.IpcWriteOptions(compression="lz4")) as writer:
        writer.write_table(small)
    ok = ingest_server.stub.IngestBatch(ingest_pb2.IngestRequest(source="lab", arrow=ingest_pb2.ArrowRecords(
        kind=S.RECORD_KIND_PATIENT, ipc_stream=sink.getvalue().to_pybytes())), timeout=30)
    assert ok.accepted == 1
