"""Corrections within one consumed batch end on the version at the highest offset (README "Kafka replays
keep order"), whatever the message formats and Arrow schemas: the consumer normalizes messages in
groups, but the store commit must keep each partition's offset order for every record key."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import numpy as np
import pyarrow as pa

from healthai.ingest.kafka import batching
from healthai.normalize.context import NormalizeContext
from healthai.store import ParquetStore
from tests.ingest.kafkakit import mock_cluster, start_consumer, stop, wait_for
from tests.ingest.test_kafka import GROUP, TOPIC, _arrow

ARROW = {"content-type": "application/vnd.apache.arrow.stream", "healthai-kind": "observation"}
HR, TEMP = ("8867-4", "/min"), ("8310-5", "Cel")


def _obs(source: str, rows: list[tuple[str, tuple[str, str], float]], status: bool = False
         ) -> tuple[bytes, dict[str, str]]:
    cols: dict[str, list] = {"observation_id": [r[0] for r in rows], "patient_id": ["pz"] * len(rows),
                             "loinc": [r[1][0] for r in rows], "value": [r[2] for r in rows],
                             "unit": [r[1][1] for r in rows],
                             "effective": ["2026-05-03T10:00:00Z"] * len(rows)}
    if status:  # this producer also sends the optional status column: another Arrow schema
        cols["status"] = ["final"] * len(rows)
    return _arrow(pa.table(cols)), {**ARROW, "healthai-source": source}


def _messages() -> list[tuple[bytes, dict[str, str]]]:
    patient = {"resourceType": "Patient", "id": "p9", "gender": "female", "address": [{"state": "MA"}]}
    flat_patient = pa.table({"patient_id": ["p9"], "sex": ["male"], "state": ["NY"]})
    return [
        # 1. one record corrected twice; the middle version has another schema
        _obs("lab1", [("X1", HR, 50.0)]),
        _obs("lab1", [("X1", HR, 60.0)], status=True),
        _obs("lab1", [("X1", HR, 70.0)]),
        # 2. the first and last messages share a schema and no id: normalized together, while the
        #    middle one (another schema) corrects a record of each
        _obs("lab2", [("X2", HR, 50.0)]),
        _obs("lab2", [("X2", HR, 60.0), ("Y2", TEMP, 36.0)], status=True),
        _obs("lab2", [("Y2", TEMP, 37.0)]),
        # 3. a FHIR Patient, then the same patient corrected as a flat Arrow record
        (json.dumps(patient).encode(), {"content-type": "application/fhir+json", "healthai-source": "ehr"}),
        (_arrow(flat_patient), {"content-type": "application/vnd.apache.arrow.stream",
                                "healthai-kind": "patient", "healthai-source": "ehr"}),
    ]


def test_corrections_in_one_batch_end_on_the_highest_offset(tmp_path: Path) -> None:
    key_hex = secrets.token_hex(32)
    store, log = tmp_path / "store", tmp_path / "consumer.log"
    msgs = _messages()
    with mock_cluster() as cluster:
        producer = cluster.producer()
        for value, headers in msgs:  # one partition: offset order is the order sent
            producer.produce(TOPIC, value=value, key=b"k", headers=list(headers.items()), partition=0)
        producer.flush(10)
        end = cluster.high_watermarks(TOPIC)[0]
        proc = start_consumer(cluster, store, key_hex, log, extra=["--batch-max-messages", "100"])
        wait_for(lambda: cluster.committed(TOPIC, GROUP)[0] == end, 90, "offsets committed", proc, log)
        assert stop(proc) == 0, log.read_text()[-3000:]
    assert f"batch of {len(msgs)} messages" in log.read_text(), "the messages were not consumed as one batch"
    s = ParquetStore(str(store)).open()
    try:
        obs = s.read("observation", ["source", "loinc", "value"]).to_pylist()
        patients = s.read("patient", ["source", "sex", "region"]).to_pylist()
    finally:
        s.close()
    latest = sorted((r["source"], r["loinc"], r["value"]) for r in obs)
    assert latest == [("lab1", HR[0], 70.0), ("lab2", TEMP[0], 37.0), ("lab2", HR[0], 60.0)]
    assert patients == [{"source": "ehr", "sex": "male", "region": "US-NY"}]


def test_grouped_rows_keep_their_message_positions() -> None:
    """In process: a group's rows are tagged with their own message's position, and a kind's rows are
    put in batch order (stable within a message)."""
    ctx = NormalizeContext.create(key=b"k" * 32)

    def pending(pos: int, ids: list[str], value: float, status: bool = False) -> batching.Pending:
        cols: dict[str, list] = {"observation_id": ids, "patient_id": ["pz"] * len(ids),
                                 "loinc": ["8867-4"] * len(ids), "value": [value] * len(ids),
                                 "unit": ["/min"] * len(ids),
                                 "effective": ["2026-05-03T10:00:00Z"] * len(ids)}
        if status:
            cols["status"] = ["final"] * len(ids)
        return batching.Pending("arrow", pos, source="lab", tables={"observation": pa.table(cols)})

    msgs = [pending(0, ["a", "b"], 61.0), pending(1, ["a", "c"], 62.0, status=True),
            pending(2, ["c", "d"], 63.0), pending(3, ["e"], 64.0)]
    rows = batching.normalize_flat(ctx, msgs)
    assert sorted(len(r.members) for r in rows) == [1, 3]  # messages 0, 2, 3 normalized together
    grouped = next(r for r in rows if len(r.members) == 3)
    assert grouped.positions().tolist() == [0, 0, 2, 2, 3]
    assert np.array_equal(grouped.table["value"].to_numpy(), [61.0, 61.0, 63.0, 63.0, 64.0])
    table = batching.in_batch_order(rows)
    assert table["value"].to_pylist() == [61.0, 61.0, 62.0, 62.0, 63.0, 63.0, 64.0]
    assert all(m.counts.total() == len(m.tables["observation"]) and not m.rejected and m.error is None
               for m in msgs)
