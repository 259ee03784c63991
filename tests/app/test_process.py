"""The real ``healthai serve`` process: kill -9 durability, SIGTERM graceful drain, refusing to start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pyarrow.parquet as pq
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from healthai.app.testing import start_server_process, stop_server_process
from healthai.v1 import ingest_pb2, ingest_pb2_grpc

KEY_ENV = {"HEALTHAI_PSEUDONYM_KEY": "0123456789abcdef0123456789abcdef"}
PATIENT = {"resourceType": "Patient", "id": "p1", "gender": "male", "birthDate": "1980-01-01"}


def args(store: Path, *extra: str) -> list[str]:
    return ["--no-serving", "--store-uri", str(store), "--log-level", "WARNING", *extra]


def bundle_request(path: Path) -> ingest_pb2.IngestRequest:
    return ingest_pb2.IngestRequest(source="synthea", fhir=ingest_pb2.FhirPayload(json=path.read_bytes()))


def stored_rows(store: Path) -> int:
    return sum(pq.read_metadata(p).num_rows for p in store.rglob("part-*.parquet"))


def test_acknowledged_records_survive_kill_9(tmp_path: Path, shared_data: Path) -> None:
    store = tmp_path / "store"
    bundle = sorted((shared_data / "fhir").glob("*.json"))[0]
    proc, port = start_server_process(args(store), KEY_ENV)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            reply = ingest_pb2_grpc.IngestStub(ch).IngestBatch(bundle_request(bundle), timeout=60)
        proc.send_signal(signal.SIGKILL)  # right after the acknowledgement: no flush, no shutdown
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    acknowledged = sum(reply.receipt.stored.values())
    assert acknowledged > 100
    assert stored_rows(store) == acknowledged
    assert {str(store / f) for f in reply.receipt.files} == {str(p) for p in store.rglob("part-*.parquet")}

    proc, port = start_server_process(args(store), KEY_ENV)  # restart on the same store
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            again = ingest_pb2_grpc.IngestStub(ch).IngestBatch(bundle_request(bundle), timeout=60)
        assert dict(again.receipt.stored) == {} and again.receipt.duplicates == acknowledged
        assert stored_rows(store) == acknowledged
    finally:
        assert stop_server_process(proc) == 0


def test_sigterm_drains_in_flight_stream_then_exits_0(tmp_path: Path) -> None:
    store = tmp_path / "store"
    flags = args(store, "--max-records-per-request", "1", "--shutdown-grace-s", "30")
    proc, port = start_server_process(flags, KEY_ENV)
    release = threading.Event()

    def requests() -> Iterator[ingest_pb2.IngestRequest]:
        for rid in ("p1", "p2"):
            yield ingest_pb2.IngestRequest(source="ehr", fhir=ingest_pb2.FhirPayload(
                json=json.dumps({**PATIENT, "id": rid}).encode()))
            release.wait(30)

    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service=""))
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            future = ingest_pb2_grpc.IngestStub(ch).IngestStream.future(requests(), timeout=60)
            _wait_for(lambda: stored_rows(store) == 1)  # the first message is committed: call in flight
            proc.send_signal(signal.SIGTERM)
            assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(grpc.RpcError) as refused:  # new calls are refused while draining
                health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            release.set()
            reply = future.result()
            watch.cancel()
        assert dict(reply.receipt.stored) == {"patient": 2} and len(reply.outcomes) == 2
        assert proc.wait(60) == 0
        assert stored_rows(store) == 2
    finally:
        release.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _wait_for(condition: object, timeout: float = 30.0) -> None:
    """Poll a filesystem condition (no event exists for 'a file appeared in another process')."""
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.02)


def test_refuses_to_start_without_a_pseudonym_key(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "HEALTHAI_PSEUDONYM_KEY"}
    cmd = [sys.executable, "-m", "healthai.app", "serve", *args(tmp_path / "s"), "--port", "0"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "no pseudonym key: set pseudonym_key_file or HEALTHAI_PSEUDONYM_KEY" in done.stderr
    bad = subprocess.run([sys.executable, "-m", "healthai.app", "serve", "--port", "99999"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "port" in bad.stderr


def test_a_tls_file_that_cannot_serve_stops_start_up_with_its_setting_named(tmp_path: Path) -> None:
    """A certificate file that does not exist: exit 2 and one line naming the setting, no traceback."""
    cmd = [sys.executable, "-m", "healthai.app", "serve", *args(tmp_path / "s"), "--port", "0",
           "--dev", "--tls-cert", str(tmp_path / "missing.pem"), "--tls-key", str(tmp_path / "missing.key")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "cannot start: tls_cert_file=" in done.stderr and "Traceback" not in done.stderr
