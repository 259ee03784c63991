"""SIGTERM while several clients are ingesting: the server drains and exits 0; every record whose
acknowledgement reached its client is in the Parquet store exactly once, every Parquet file reads
cleanly, and no temporary file is left behind."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import grpc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from healthai.app.testing import start_server_process, stop_server_process
from healthai.v1 import common_pb2, ingest_pb2_grpc
from healthai_client.requests import flat_request

from .serverkit import SERVER_ENV

CLIENTS = 4
RECORDS_PER_CALL = 40
LOAD_BEFORE_SIGTERM_S = 2.0
ACCEPTED = (common_pb2.RECORD_STATUS_ACCEPTED, common_pb2.RECORD_STATUS_ACCEPTED_WITH_WARNINGS)


class Sender(threading.Thread):
    """Sends IngestBatch calls of fresh patients until the server stops answering; keeps the
    acknowledged (source, pseudonymized record key) pairs."""

    def __init__(self, address: str, n: int) -> None:
        super().__init__(name=f"ingest-sender-{n}", daemon=True)
        self.address, self.source = address, f"reliability/sender-{n}"
        self.acked: set[tuple[str, str]] = set()
        self.calls = 0
        self.final_error: grpc.StatusCode | None = None
        self.unexpected: list[str] = []

    def run(self) -> None:
        with grpc.insecure_channel(self.address) as channel:
            stub = ingest_pb2_grpc.IngestStub(channel)
            for call in range(10_000):
                patients = [{"patient_id": f"{self.source}-{call}-{i}", "sex": "female",
                             "birth_date": "1960-05", "region": "US-MA"} for i in range(RECORDS_PER_CALL)]
                try:
                    reply = stub.IngestBatch(flat_request(self.source, patients=patients), timeout=20)
                except grpc.RpcError as e:
                    self.final_error = e.code()
                    return
                self.calls += 1
                for outcome in reply.outcomes:
                    if outcome.status in ACCEPTED:
                        self.acked.add((self.source, outcome.source_id))
                    else:
                        self.unexpected.append(str(outcome))
                if reply.accepted != RECORDS_PER_CALL or len(reply.outcomes) != RECORDS_PER_CALL:
                    self.unexpected.append(f"call {call}: accepted {reply.accepted} of {RECORDS_PER_CALL}")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sigterm_during_ingest_keeps_every_acknowledged_record(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with open(tmp_path / "server.log", "wb") as log:
        proc, port = start_server_process(
            ["--dev", "--no-serving", "--store-uri", str(store), "--log-level", "WARNING",
             "--shutdown-grace-s", "10"], SERVER_ENV, stderr=log.fileno())
        senders = [Sender(f"127.0.0.1:{port}", n) for n in range(CLIENTS)]
        try:
            for s in senders:
                s.start()
            time.sleep(LOAD_BEFORE_SIGTERM_S)
            code = stop_server_process(proc)  # SIGTERM while every sender has a call in flight
        finally:
            if proc.poll() is None:
                proc.kill()
        for s in senders:
            s.join(30)
    assert code == 0, (tmp_path / "server.log").read_text()[-3000:]
    assert all(not s.is_alive() for s in senders)
    assert all(s.final_error in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED) for s in senders), \
        [s.final_error for s in senders]
    assert not [u for s in senders for u in s.unexpected]
    acked = set().union(*(s.acked for s in senders))
    assert len(acked) >= CLIENTS * RECORDS_PER_CALL, f"too little load: {[s.calls for s in senders]}"

    files = sorted(store.rglob("*"))
    # the store's commit log (_commits/<sequence>.json) is expected; anything hidden or else is not
    log = re.compile(r"^\d{12}\.json$")
    leftovers = [f for f in files if f.is_file() and (f.name.startswith(".") or f.suffix != ".parquet")
                 and not (f.parent.name == "_commits" and log.match(f.name))]
    assert not leftovers, f"temporary or foreign files left in the store: {leftovers}"
    parquet = [f for f in files if f.suffix == ".parquet"]
    for f in parquet:  # every file is whole: footer, schema, every row group decodes
        pq.read_table(f)
    stored = ds.dataset(store, format="parquet", partitioning="hive").to_table(
        columns=["source", "record_key"], filter=ds.field("kind") == "patient")
    keys = list(zip(stored["source"].to_pylist(), stored["record_key"].to_pylist(), strict=True))
    assert len(keys) == len(set(keys)), "a record was stored twice"
    missing = acked - set(keys)
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged records are not in the store"
    print(f"{len(acked)} acknowledged records in {sum(s.calls for s in senders)} calls; "
          f"{len(keys)} stored in {len(parquet)} files; senders ended {[s.final_error for s in senders]}")
