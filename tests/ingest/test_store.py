"""ParquetStore: atomic durable appends, partition layout, idempotency across re-opens, URIs."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from healthai.errors import InvalidInput
from healthai.store import ParquetStore


def rows(source: str, keys: list[str], value: int = 0) -> pa.Table:
    return pa.table({"source": [source] * len(keys), "record_key": keys, "value": [value] * len(keys)})


def test_commit_writes_partitioned_parquet_and_reports_receipt(tmp_path: Path) -> None:
    store = ParquetStore(str(tmp_path)).open()
    now = dt.datetime(2026, 3, 4, 12, tzinfo=dt.UTC)
    result = store.commit({"condition": rows("a", ["1", "2"]), "patient": rows("a", ["p"])}, now=now)
    assert result.sequence == 1
    assert result.stored == {"condition": 2, "patient": 1}
    assert result.duplicates == 0
    assert sorted(f.split("/part-")[0] for f in result.files) == [
        "kind=condition/ingest_date=2026-03-04", "kind=patient/ingest_date=2026-03-04"]
    for f in result.files:
        assert (tmp_path / f).is_file()
    assert not list(tmp_path.rglob(".tmp-*"))
    assert pq.read_table(tmp_path / result.files[0])["record_key"].to_pylist() in (["1", "2"], ["p"])
    assert store.read("condition")["record_key"].to_pylist() == ["1", "2"]


def test_row_unique_key_columns_are_not_dictionary_encoded(tmp_path: Path) -> None:
    store = ParquetStore(str(tmp_path)).open()
    table = rows("a", [f"k{i}" for i in range(50)]).append_column("resource_id", pa.array(["r"] * 50))
    result = store.commit({"observation": table.append_column("region", pa.array(["US-MA"] * 50))})
    meta = pq.ParquetFile(tmp_path / result.files[0]).metadata.row_group(0)
    dictionary = {meta.column(i).path_in_schema: "RLE_DICTIONARY" in meta.column(i).encodings
                  for i in range(meta.num_columns)}
    assert dictionary == {"source": True, "record_key": False, "value": True, "resource_id": False,
                          "region": True, "row_digest": False, "row_place_digest": True}
    assert store.read("observation").equals(pq.read_table(tmp_path / result.files[0]))


def test_resending_is_idempotent_within_and_across_commits(tmp_path: Path) -> None:
    store = ParquetStore(str(tmp_path)).open()
    first = store.commit({"condition": rows("a", ["1", "2", "2"])})
    assert first.stored == {"condition": 2} and first.duplicates == 1
    again = store.commit({"condition": rows("a", ["1", "2"])})
    assert again.sequence == 0 and again.stored == {} and again.duplicates == 2 and again.files == []
    assert again.skipped["condition"]["record_key"].to_pylist() == ["1", "2"]
    other_source = store.commit({"condition": rows("b", ["1"])})
    assert other_source.stored == {"condition": 1}
    assert store.read("condition").num_rows == 3


def test_index_and_sequence_survive_reopen(tmp_path: Path) -> None:
    ParquetStore(str(tmp_path)).open().commit({"observation": rows("a", ["x", "y"])})
    reopened = ParquetStore(str(tmp_path)).open()
    assert reopened.sequence == 1
    assert reopened.contains("observation", "a", "x")
    result = reopened.commit({"observation": rows("a", ["x", "z"])})
    assert result.stored == {"observation": 1} and result.duplicates == 1 and result.sequence == 2


def test_leftover_temp_file_from_a_crash_is_ignored(tmp_path: Path) -> None:
    store = ParquetStore(str(tmp_path)).open()
    done = store.commit({"patient": rows("a", ["p1"])})
    partial = tmp_path / done.files[0].replace("part-", ".tmp-part-9")
    partial.write_bytes(b"PAR1 truncated")
    reopened = ParquetStore(str(tmp_path)).open()
    assert reopened.read("patient")["record_key"].to_pylist() == ["p1"]
    assert reopened.commit({"patient": rows("a", ["p2"])}).stored == {"patient": 1}


def test_pending_files_of_commits_that_never_completed_are_swept_on_open(tmp_path: Path) -> None:
    """A writer killed after writing its pending files but before its claim leaves them behind (31 MB in a
    tester's kill -9 run): the next open removes those older than ORPHAN_AGE_S, and only those."""
    import os
    import time

    from healthai.store.commitlog import ORPHAN_AGE_S

    store = ParquetStore(str(tmp_path)).open()
    done = store.commit({"patient": rows("a", ["p1"])})
    folder = (tmp_path / done.files[0]).parent
    old, fresh = folder / ".pending-dead-0-patient.parquet", folder / ".pending-live-0-patient.parquet"
    for path in (old, fresh):
        pq.write_table(rows("a", ["ghost"]), path)
    stale = time.time() - ORPHAN_AGE_S - 60
    os.utime(old, (stale, stale))
    reopened = ParquetStore(str(tmp_path)).open()
    assert not old.exists() and fresh.exists()  # a commit in flight elsewhere keeps its files
    assert reopened.read("patient")["record_key"].to_pylist() == ["p1"]


def test_file_uri_and_mock_filesystem(tmp_path: Path) -> None:
    store = ParquetStore(f"file://{tmp_path}/nested").open()
    assert store.commit({"patient": rows("a", ["p"])}).stored == {"patient": 1}
    assert (tmp_path / "nested").is_dir()
    mock = ParquetStore("mock:///store").open()  # in-memory pyarrow filesystem: temp name + move
    assert mock.commit({"patient": rows("a", ["p"])}).stored == {"patient": 1}
    assert mock.read("patient").num_rows == 1


def test_bad_inputs_raise_invalid_input(tmp_path: Path) -> None:
    store = ParquetStore(str(tmp_path)).open()
    with pytest.raises(InvalidInput, match="idempotency column 'record_key'"):
        store.commit({"patient": pa.table({"source": ["a"]})})
    null_key = pa.table({"source": ["a", "a"], "record_key": ["1", None]})
    with pytest.raises(ValueError, match="patient rows: 1 null 'record_key' value"):
        store.commit({"condition": rows("a", ["ok"]), "patient": null_key})
    with pytest.raises(InvalidInput, match="record kind 'Bad/Kind'"):
        store.commit({"Bad/Kind": rows("a", ["1"])})
    with pytest.raises(InvalidInput, match="store_uri 'nosuch://x'"):
        ParquetStore("nosuch://x")
    assert store.sequence == 0 and not list(tmp_path.rglob("*.parquet"))


def test_commit_before_open_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="not open"):
        ParquetStore(str(tmp_path)).commit({"patient": rows("a", ["1"])})
