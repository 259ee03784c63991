"""Exactly once across replicas on S3: the commit log's exclusive create is a conditional PUT
(``If-None-Match: *``), tested against moto's S3 server (a real HTTP endpoint on 127.0.0.1)."""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from healthai.errors import InvalidInput
from healthai.ingest.service import IngestCore
from healthai.store import ParquetStore, new_batch_id
from healthai.store.commitlog import Entry, S3CommitLog

from .conftest import context
from .test_store_replicas import WRITER

moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture
def s3_uri(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for k, v in CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    bucket = f"healthai-{uuid.uuid4().hex[:12]}"  # moto's state is per process, not per server
    try:
        endpoint = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
        yield f"s3://{bucket}/store?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    finally:
        server.stop()


def _objects(uri: str) -> list[str]:
    port = uri.split("127.0.0.1:")[1].split("&")[0]
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1")
    bucket = uri.removeprefix("s3://").split("/")[0]
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="store/")
    return [o["Key"] for page in pages for o in page.get("Contents", ())]


def test_claim_is_exclusive(s3_uri: str) -> None:
    store = ParquetStore(s3_uri).open()
    assert isinstance(store._log, S3CommitLog)
    log = store._log
    assert log.claim(Entry(7, "a" * 32, [])) and not log.claim(Entry(7, "b" * 32, []))
    assert log.read(7).batch_id == "a" * 32 and log.sequences_after(6) == [7] and log.sequences_after(7) == []


def test_three_writer_processes_on_s3_store_each_key_once(s3_uri: str) -> None:
    ParquetStore(s3_uri).open()
    env = {**os.environ, **CREDENTIALS}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, s3_uri, str(seed)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for seed in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    t = ParquetStore(s3_uri).open().read("observation", ["source", "record_key"])
    keys = [f"{s}|{k}" for s, k in zip(t["source"].to_pylist(), t["record_key"].to_pylist(), strict=True)]
    assert len(keys) == len(set(keys)), "a key stored twice"
    assert set(keys) == {f"s|k{i}" for i in range(30 * 50 + 50)}, "a key lost"
    names = [Path(k).name for k in _objects(s3_uri)]
    assert not [n for n in names if n.startswith(".pending-")], "a pending object left behind"
    assert sum(n.endswith(".json") for n in names) == sum(n.startswith("part-") for n in names)


def test_crash_after_claim_is_rolled_forward(s3_uri: str) -> None:
    """A writer that claimed its entry but died before promoting: the next open promotes and indexes."""
    store = ParquetStore(s3_uri).open()
    log = store._log
    assert isinstance(log, S3CommitLog)
    pending, final = "kind=observation/ingest_date=2026-01-01/.pending-x", \
        f"kind=observation/ingest_date=2026-01-01/part-{1:012d}-{'c' * 32}.parquet"
    log.write_pending([(pending, pa.table({"source": ["s"], "record_key": ["k"], "resource_id": ["k"]}))])
    assert log.claim(Entry(1, "c" * 32, [(pending, final)]))
    again = ParquetStore(s3_uri).open()
    assert again.contains("observation", "s", "k") and again.sequence == 1
    assert again.commit({"observation": pa.table({"source": ["s"], "record_key": ["k"],
                                                  "resource_id": ["k"]})}).duplicates == 1
    assert [Path(k).name for k in _objects(s3_uri) if "kind=" in k] == [Path(final).name]


def test_server_ignoring_the_condition_is_refused(s3_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """As some S3-compatible servers do: the open-time probe sees the overwrite and refuses the store."""
    store = ParquetStore(s3_uri)
    assert isinstance(store._log, S3CommitLog) and store._log.check_conditional_put()
    client = store._log.client
    put = client.put_object
    monkeypatch.setattr(client, "put_object",
                        lambda **kw: put(**{k: v for k, v in kw.items() if k != "IfNoneMatch"}))
    with pytest.raises(InvalidInput, match="If-None-Match") as e:
        store.open()
    assert e.value.field == "store_uri"


def test_late_patient_rewrite_on_s3(s3_uri: str) -> None:
    """The birth-date guard's rewrite of an earlier file goes through the same log on S3."""
    from .test_birth_guard import BIRTH_ENCOUNTER, GENERALIZED, PATIENT, bundle, fhir

    core = IngestCore(context(), ParquetStore(s3_uri).open(), 1000)
    for request in (fhir(bundle(BIRTH_ENCOUNTER)), fhir(PATIENT)):
        result = core.commit(core.normalize(request).tables, new_batch_id())
    assert len(result.rewritten) == 1
    store = ParquetStore(s3_uri).open()
    on_disk = [pq.read_table(p, filesystem=store.filesystem)["start"][0].as_py()
               for p in store.files("encounter")]
    assert on_disk == [GENERALIZED]
    assert not [k for k in _objects(s3_uri) if ".pending-" in k]


def test_private_release_ledger_on_s3(s3_uri: str) -> None:
    """A private count release's ledger entry is one object per release (S3 has no append), numbered and
    created by a conditional PUT; its table is read back as a server in ``stored_counts = private`` does."""
    from healthai.errors import InvalidInput
    from healthai.normalize.fhir import normalize_fhir
    from healthai.surveillance import SurveillanceCounts
    from healthai.surveillance.release import private_counts, record, spent
    from healthai.surveillance.released import ReleasedCounts

    from .test_counts_cli import flu_bundle

    store = ParquetStore(s3_uri).open()
    for i in range(6):
        out = normalize_fhir(flu_bundle(i), ctx=context(), source="s")
        store.commit({k: t for k, t in out.tables.items() if t.num_rows})
    assert spent(store) == (0.0, 0)
    what = {"use": "test", "syndrome": "ili", "step": "W", "level": "region", "week_start": "monday",
            "complete_periods": True}
    for eps in (0.5, 0.25):
        release = private_counts(SurveillanceCounts(store), epsilon=eps, regions=["US-MA"], freq="W",
                                 start="2025-12-01", end="2025-12-28")
        record(store, release, what)
    assert spent(ParquetStore(s3_uri).open()) == (pytest.approx(0.75), 2)
    ledger = sorted(k for k in _objects(s3_uri) if k.startswith("store/privacy/release-"))
    assert ledger == ["store/privacy/release-00000001.json", "store/privacy/release-00000002.json"]
    with pytest.raises(InvalidInput, match=r"would pass the budget of 0\.9"):
        record(store, release, what, budget=0.9)
    assert len([k for k in _objects(s3_uri) if k.startswith("store/privacy/table-")]) == 2  # none left
    back = ReleasedCounts(ParquetStore(s3_uri).open()).counts("ili", "W")
    np.testing.assert_array_equal(back.to_numpy(), np.maximum(release.frame.to_numpy(), 0))  # the newest


def test_private_stream_on_s3(s3_uri: str) -> None:
    """A continual release on S3: the definition, each entry and its contributions are objects created
    by conditional PUT; the second call releases only the new week, bounded by the first call's count."""
    from healthai.errors import InvalidInput
    from healthai.normalize.fhir import normalize_fhir
    from healthai.surveillance import SurveillanceCounts
    from healthai.surveillance import stream as dp_stream
    from healthai.surveillance.released import ReleasedCounts

    from .test_private_counts import EXACT, frequent_patient

    store = ParquetStore(s3_uri).open()
    out = normalize_fhir(frequent_patient(), ctx=context(), source="s")
    store.commit({k: t for k, t in out.tables.items() if t.num_rows})
    settings = {"name": "weekly", "syndrome": "ili", "step": "W", "level": "county", "week_start": "monday",
                "places": ["25017"], "epsilon": EXACT, "max_cases_per_patient": 4, "start": "2025-12-01"}
    spec = dp_stream.define(store, **settings)
    with pytest.raises(InvalidInput, match="was defined with max_cases_per_patient = 4"):
        dp_stream.define(store, **{**settings, "max_cases_per_patient": 5})
    weeks = [dp_stream.release_new_periods(SurveillanceCounts(store), store, spec, end=end,
                                           completed_by=dt.date(2026, 1, 20)).release.frame["25017"].tolist()
             for end in ("2025-12-07", "2025-12-14")]
    assert weeks == [[4], [0]]
    keys = _objects(s3_uri)
    assert "store/privacy/streams/weekly.json" in keys
    assert len([k for k in keys if k.startswith("store/privacy/streams/contributions-")]) == 2
    back = ReleasedCounts(ParquetStore(s3_uri).open()).counts("ili", "W", level="county")
    assert back["25017"].tolist() == [4, 0]
