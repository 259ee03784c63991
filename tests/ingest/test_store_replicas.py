"""Exactly once across replicas: several processes committing to one store directory, concurrently
retrying the same batches (the store's create-exclusive commit log), directly and through three real
``healthai serve`` processes."""

from __future__ import annotations

import secrets
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from healthai.app.testing import start_server_process, stop_server_process
from healthai.store import ParquetStore
from healthai.v1 import ingest_pb2, ingest_pb2_grpc

WRITER = textwrap.dedent("""
    import random, sys
    import pyarrow as pa
    from healthai.store import ParquetStore
    root, seed = sys.argv[1], int(sys.argv[2])
    store = ParquetStore(root).open()
    batches = list(range(30))
    random.Random(seed).shuffle(batches)
    for b in batches:  # batch b overlaps batch b + 1 by half: every key is offered 6 times
        keys = [f"k{i}" for i in range(b * 50, b * 50 + 100)]
        t = pa.table({"source": ["s"] * len(keys), "record_key": keys, "resource_id": keys,
                      "w": [seed] * len(keys)})
        store.commit({"observation": t})
    print(store.sequence)
""")


def _stored_keys(root: Path, kind: str = "observation") -> list[str]:
    t = ParquetStore(str(root)).open().read(kind, ["source", "record_key"])
    return [f"{s}|{k}" for s, k in zip(t["source"].to_pylist(), t["record_key"].to_pylist(), strict=True)]


def test_three_writer_processes_store_each_key_once(tmp_path: Path) -> None:
    root = tmp_path / "store"
    ParquetStore(str(root)).open()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(seed)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for seed in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
    keys = _stored_keys(root)
    assert len(keys) == len(set(keys)), "a key stored twice"
    assert set(keys) == {f"s|k{i}" for i in range(30 * 50 + 50)}, "a key lost"
    assert not list(root.rglob(".pending-*")), "a pending file left behind"
    entries = sorted(p.name for p in (root / "_commits").glob("*.json"))
    parts = sorted(p.name for p in root.rglob("part-*.parquet"))
    assert len(entries) == len(parts)  # one kind per commit here: one file per log entry


def _request(b: int) -> ingest_pb2.IngestRequest:
    obs = [ingest_pb2.ObservationRecord(observation_id=f"o{b}-{i}", patient_id=f"p{i % 17}", loinc="8867-4",
                                        value=60 + i % 30, unit="/min") for i in range(300)]
    return ingest_pb2.IngestRequest(source="ehr", flat=ingest_pb2.FlatRecords(observations=obs),
                                    outcome_detail=ingest_pb2.OUTCOME_DETAIL_ISSUES)


def test_three_servers_on_one_store_with_concurrent_retries(tmp_path: Path) -> None:
    root = tmp_path / "store"
    env = {"HEALTHAI_PSEUDONYM_KEY": secrets.token_hex(32), "HEALTHAI_OBSERVABILITY__AUDIT_ENABLED": "false"}
    servers = [start_server_process(["--store-uri", str(root), "--no-serving"], env,
                                    stderr=subprocess.DEVNULL) for _ in range(3)]
    try:
        channels = [grpc.insecure_channel(f"127.0.0.1:{port}") for _, port in servers]
        stubs = [ingest_pb2_grpc.IngestStub(c) for c in channels]
        calls = [(b, s) for b in range(12) for s in range(3)]  # every batch sent to all three at once

        def send(call: tuple[int, int]) -> tuple[int, int, int]:
            b, s = call
            r = stubs[s].IngestBatch(_request(b), timeout=60)
            return r.accepted, r.receipt.stored.get("observation", 0), r.rejected

        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(send, calls))
        for c in channels:
            c.close()
    finally:
        codes = [stop_server_process(p) for p, _ in servers]
    assert codes == [0, 0, 0]
    assert all(accepted == 300 and rejected == 0 for accepted, _, rejected in results)
    assert sum(stored for _, stored, _ in results) == 12 * 300  # each record stored by one server
    keys = _stored_keys(root)
    assert len(keys) == len(set(keys)) == 12 * 300
