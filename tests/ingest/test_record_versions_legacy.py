"""Rows stored by a release before row digests existed (part files without ``row_digest``, or with a null
one) are indexed with digests computed from their content when the store indexes their file: at open,
when catching up on a replica's commit, and through the birth-date guard's rewrites. So after an upgrade
such a record re-sent unchanged is still a duplicate, and re-sent corrected (a Condition entered in
error) is a new version that stops counting. The earlier release's files are made here by taking the
digest columns out of files this release wrote (real gRPC server, real Parquet files)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from healthai.store import ParquetStore
from healthai.store.versions import DIGEST_COLUMN, PLACE_COLUMN, digests_of, stored_digests, with_digests
from healthai.surveillance import SurveillanceCounts
from healthai.v1 import ingest_pb2

from .conftest import IngestServer, serve
from .test_record_versions import _bundle, _ili, _patient, _places, _resources


def _server(store_dir: Path) -> Iterator[IngestServer]:
    return serve(store_dir, max_message_bytes=4 * 1024 * 1024, max_records_per_request=5000)


def _send(server: IngestServer, bundle: dict, source: str = "ehr-1") -> ingest_pb2.IngestResponse:
    payload = ingest_pb2.FhirPayload(json=json.dumps(bundle).encode())
    request = ingest_pb2.IngestRequest(source=source, fhir=payload)
    return server.stub.IngestBatch(request, timeout=30)


def _send_flat(server: IngestServer, state: str) -> ingest_pb2.IngestResponse:
    row = ingest_pb2.ConditionRecord(condition_id="f1", patient_id="fp1", code="J10.1", onset="2025-11-24",
                                     state=state, country="US")
    request = ingest_pb2.IngestRequest(source="lab", flat=ingest_pb2.FlatRecords(conditions=[row]))
    return server.stub.IngestBatch(request, timeout=30)


def _parts(store_dir: Path) -> list[Path]:
    return sorted(store_dir.glob("kind=*/ingest_date=*/part-*.parquet"))


def _make_legacy(store_dir: Path, how: str) -> int:
    """Rewrite every part file as a release before digests wrote it: no digest columns (``absent``), or
    null ones (``null``). Returns the rows touched."""
    rows = 0
    for path in _parts(store_dir):
        table = pq.read_table(path)
        if how == "absent":
            table = table.drop_columns([c for c in (DIGEST_COLUMN, PLACE_COLUMN) if c in table.column_names])
        else:
            for name in (DIGEST_COLUMN, PLACE_COLUMN):
                i = table.column_names.index(name)
                table = table.set_column(i, name, pa.nulls(table.num_rows, pa.int64()))
        pq.write_table(table, path)
        rows += table.num_rows
    return rows


def _ili_total(store: ParquetStore) -> int:
    frame = SurveillanceCounts(store).counts("ili", "D", start="2025-11-24", end="2025-11-25")
    return int(frame.to_numpy().sum())


@pytest.mark.parametrize("how", ["absent", "null"])
def test_a_row_stored_before_digests_is_corrected_after_the_upgrade(tmp_path: Path, how: str) -> None:
    store_dir = tmp_path / "store"
    for server in _server(store_dir):  # the earlier release
        stored = _send(server, _bundle()).receipt.stored
        assert dict(stored) == {"patient": 1, "condition": 1, "observation": 1}
        _send_flat(server, "VT")
    assert _make_legacy(store_dir, how) == 4
    for server in _server(store_dir):  # the upgrade
        store = server.plugin.store
        assert _ili_total(store) == 2
        again = _send(server, _bundle())  # the same content: still a duplicate
        assert again.receipt.duplicates == 3 and dict(again.receipt.stored) == {}
        assert _send_flat(server, "VT").receipt.duplicates == 1
        fixed = _send(server, _bundle("entered-in-error", flu_result="260415000"))
        assert fixed.receipt.revised == 2 and dict(fixed.receipt.stored) == {"condition": 1, "observation": 1}
        assert _send_flat(server, "NH").receipt.revised == 1  # a corrected place: a new version too
        assert _ili_total(store) == 1 and _places(store) == {"US-NH": 1}
        assert store.count("condition") == 2 and store.superseded("condition") == 2
    reopened = ParquetStore(str(store_dir)).open()  # a restart: the same versions
    assert _ili_total(reopened) == 1 and reopened.superseded("condition") == 2
    latest = reopened.read("condition", ["region", "verification_status"]).to_pydict()
    assert latest == {"region": ["US-VT", "US-NH"], "verification_status": ["entered-in-error", None]}


def test_digests_computed_from_a_stored_file_are_those_commit_stored(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    for server in _server(store_dir):
        _send(server, _bundle())
        _send(server, _resources(_patient("p2", "NH"), _ili("c2", "p2", onset="2025-11-25T08:30:00Z")))
        _send_flat(server, "VT")
    parts = _parts(store_dir)
    assert {p.parent.parent.name for p in parts} == {"kind=patient", "kind=condition", "kind=observation"}
    for path in parts:
        kind = path.parent.parent.name.removeprefix("kind=")
        stored = pq.read_table(path)
        legacy = stored.drop_columns([DIGEST_COLUMN, PLACE_COLUMN])
        assert digests_of(stored_digests(kind, legacy)) == digests_of(stored), path.name


def test_a_file_with_some_rows_undigested_keeps_the_stored_digests_of_the_others() -> None:
    table = pa.table({"source": ["s", "s"], "record_key": ["a", "b"], "code": ["J10.1", "J11.1"]})
    digested = with_digests("condition", table)
    at = digested.column_names.index(DIGEST_COLUMN)
    mixed = digested.set_column(at, DIGEST_COLUMN, pa.array([None, 42], pa.int64()))
    out = digests_of(stored_digests("condition", mixed))
    assert out[0] == digests_of(digested)[0]
    assert out[1][:8] == (42).to_bytes(8, "little", signed=True)


def test_a_replica_indexes_another_writers_undigested_file(tmp_path: Path) -> None:
    row = {"source": ["s"], "record_key": ["k"], "resource_id": ["k"], "value": [1.0]}
    mine, old = ParquetStore(str(tmp_path)).open(), ParquetStore(str(tmp_path)).open()
    old.commit({"observation": pa.table(row)})  # an earlier release's replica (during a stop/start upgrade)
    _make_legacy(tmp_path, "absent")
    assert mine.commit({"observation": pa.table(row)}).duplicates == 1  # caught up, with a real version
    fixed = mine.commit({"observation": pa.table({**row, "value": [2.0]})})
    assert fixed.revised == {"observation": ["k"]}
    assert mine.read("observation")["value"].to_pylist() == [2.0]


def test_the_birth_date_guard_rewrites_an_undigested_file_with_its_versions(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    birthday = _ili("y", "p2", onset="1970-03-04")  # an event on the birth date: the guard rewrites it
    for server in _server(store_dir):  # the earlier release: events whose Patient comes later
        _send(server, _resources(_ili("x", "p2"), birthday))
    _make_legacy(store_dir, "absent")
    for server in _server(store_dir):
        assert _send(server, _resources(_ili("x", "p2", "entered-in-error"))).receipt.revised == 1
        assert _send(server, _resources(_patient("p2"))).receipt.stored["patient"] == 1  # rewrites file 1
        rewritten = pq.read_table(_parts(store_dir)[0])
        assert rewritten[DIGEST_COLUMN].null_count == 0  # re-digested with its generalized date
        store = server.plugin.store
        assert _places(store) == {}  # x's correction, in a later file, stays its latest version
        assert _send(server, _resources(birthday)).receipt.duplicates == 1  # its generalized self
        back = _send(server, _resources(_ili("x", "p2")))
        assert back.receipt.revised == 1 and _places(store) == {"US-VT": 1}
    reopened = ParquetStore(str(store_dir)).open()
    assert reopened.commit({}).duplicates == 0 and _places(reopened) == {"US-VT": 1}
