"""A store the OS refuses to write at ingest time (full disk, read-only remount, a path taken by a file):
UNAVAILABLE naming the OS's reason (retried by the SDK; nothing acknowledged, nothing left behind), the
errno logged; the same batch goes through once the store is writable again. Real server, real files:
the failure is a regular file where the store needs a directory (EEXIST, which root cannot bypass)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from healthai.store import ParquetStore
from healthai.v1 import ingest_pb2

from .conftest import IngestServer, serve


@pytest.fixture
def server(tmp_path: Path) -> Iterator[IngestServer]:
    yield from serve(tmp_path / "store")


def _request(n: int = 3) -> ingest_pb2.IngestRequest:
    entries = []
    for i in range(n):
        entries.append({"resource": {"resourceType": "Patient", "id": f"p{i}", "gender": "female",
                                     "birthDate": "1980-02-03"}})
        entries.append({"resource": {
            "resourceType": "Condition", "id": f"c{i}", "subject": {"reference": f"Patient/p{i}"},
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "J10.1"}]},
            "onsetDateTime": f"2026-01-0{i + 1}"}})
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": entries}
    payload = ingest_pb2.FhirPayload(json=json.dumps(bundle).encode())
    return ingest_pb2.IngestRequest(source="hospital-a", fhir=payload)


def _block(store: Path, kind: str) -> Path:
    """Today's partition of ``kind`` taken by a regular file: writing there fails with EEXIST."""
    kind_dir = store / f"kind={kind}"
    kind_dir.mkdir(parents=True, exist_ok=True)
    blocker = kind_dir / f"ingest_date={dt.datetime.now(dt.UTC).date().isoformat()}"
    blocker.write_text("not a directory")
    return blocker


@pytest.mark.parametrize("blocked_kind", ["patient", "condition"])
def test_a_store_write_error_is_unavailable_names_the_cause_and_commits_nothing(
        server: IngestServer, caplog: pytest.LogCaptureFixture, blocked_kind: str) -> None:
    blocker = _block(server.store_dir, blocked_kind)
    with caplog.at_level(logging.INFO), pytest.raises(grpc.RpcError) as err:
        server.stub.IngestBatch(_request(), timeout=60)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # the SDK retries this; INTERNAL it does not
    details = err.value.details()
    assert details.startswith("the store cannot be written (EEXIST: File exists); nothing was "
                              "acknowledged: retry later")
    assert str(server.store_dir) not in details and "p0" not in details  # no operator path, no record value
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("cannot be written: EEXIST: File exists" in m and str(server.store_dir) in m
               for m in logged), logged
    assert not any("internal error" in m for m in logged)
    # nothing of the batch is committed, nothing is left behind (the other kind's file was removed)
    assert not list(server.store_dir.rglob("part-*")) and not list(server.store_dir.rglob(".pending-*"))
    assert not list((server.store_dir / "_commits").glob("*.json"))
    fresh = ParquetStore(str(server.store_dir)).open()
    assert fresh.count("patient") == fresh.count("condition") == 0
    fresh.close()

    blocker.unlink()  # writable again: the same batch (a retry) is stored whole, once
    reply = server.stub.IngestBatch(_request(), timeout=60)
    assert dict(reply.receipt.stored) == {"patient": 3, "condition": 3}
    again = server.stub.IngestBatch(_request(), timeout=60)
    assert dict(again.receipt.stored) == {} and again.receipt.duplicates == 6


def test_a_stream_whose_store_write_fails_is_unavailable(server: IngestServer) -> None:
    blocker = _block(server.store_dir, "patient")
    with pytest.raises(grpc.RpcError) as err:
        server.stub.IngestStream(iter([_request(2), _request(3)]), timeout=60)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "EEXIST" in err.value.details()
    shutil.rmtree(blocker.parent)
    reply = server.stub.IngestStream(iter([_request(2), _request(3)]), timeout=60)
    assert dict(reply.receipt.stored) == {"patient": 3, "condition": 3}
