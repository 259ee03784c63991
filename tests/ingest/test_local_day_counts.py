"""Surveillance counts a case on the date its sender wrote, not on the UTC date.

The real Synthea bundles write their times in UTC. Rewritten the way a Chicago hospital's EHR writes
them (the same instants, local times with -06:00 / -05:00), and sent through the real Ingest server,
every evening diagnosis would land on the next UTC day; counts must follow the dates as written.
"""

from __future__ import annotations

import collections
import datetime as dt
import re
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from healthai.ingest.service import IngestCore
from healthai.normalize.records import OFFSET_SUFFIX
from healthai.store import ParquetStore, new_batch_id
from healthai.surveillance import SurveillanceCounts
from healthai.v1 import ingest_pb2

from .conftest import context, serve
from .test_bulk_export_counts import bulk_export, counts, every_condition, ingest, per_bundle

CHICAGO = ZoneInfo("America/Chicago")
UTC = dt.UTC
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T")


def in_chicago(node: object) -> object:
    """Every dateTime with a time, rewritten as Chicago local time (the same instant)."""
    if isinstance(node, dict):
        return {k: in_chicago(v) for k, v in node.items()}
    if isinstance(node, list):
        return [in_chicago(v) for v in node]
    if isinstance(node, str) and _TIME.match(node):
        return dt.datetime.fromisoformat(node).astimezone(CHICAGO).isoformat()
    return node


def written_date(text: str) -> dt.date:
    return dt.date.fromisoformat(text[:10])


def expected_day(written: str, birth: dt.date) -> pd.Timestamp:
    """The date as written; a birth-day event (as written or in UTC) is cut to the 1st (2nd)."""
    days = {written_date(written)}
    if "T" in written:
        days.add(dt.datetime.fromisoformat(written).astimezone(UTC).date())
    day = written_date(written)
    if birth in days:
        day = birth.replace(day=2 if birth.day == 1 else 1)
    return pd.Timestamp(day)


def per_day(pairs: set[tuple[str, pd.Timestamp]]) -> dict[pd.Timestamp, int]:
    return dict(collections.Counter(d for _, d in pairs))


def test_cases_count_on_the_local_date_as_written(tmp_path: Path, shared_data: Path) -> None:
    payloads = [[in_chicago(r) for r in p] for p in per_bundle(shared_data)]
    res = [r for p in payloads for r in p]
    syndrome = every_condition(res)
    birth = {p["id"]: dt.date.fromisoformat(p["birthDate"]) for p in res if p["resourceType"] == "Patient"}
    local, utc = set(), set()
    for c in (r for r in res if r["resourceType"] == "Condition"):
        pid = c["subject"]["reference"].removeprefix("urn:uuid:")
        written = c.get("onsetDateTime") or c["recordedDate"]
        local.add((pid, expected_day(written, birth[pid])))
        if "T" in written:
            instant = dt.datetime.fromisoformat(written).astimezone(UTC)
            utc.add((pid, pd.Timestamp(instant.date())))
    evening = [d for _, d in local if d not in {u for _, u in utc}]
    assert evening, "the rewritten bundles have evening diagnoses (a UTC count would move them)"

    for server in serve(tmp_path / "store"):
        ingest(server, payloads)
        df, uncounted = counts(server, syndrome)
        onsets = server.plugin.store.read("condition", ["onset", "onset" + OFFSET_SUFFIX]).to_pylist()
    assert uncounted == 0 and list(df.columns) == ["US-MA"]
    assert {d: n for d, n in df["US-MA"].items() if n} == per_day(local)
    assert {r["onset" + OFFSET_SUFFIX] for r in onsets} <= {-360, -300, None}  # CST, CDT, cut or absent


def test_bulk_export_dates_undated_diagnoses_by_the_encounter_local_start(tmp_path: Path,
                                                                          shared_data: Path) -> None:
    res = [in_chicago(r) for p in per_bundle(shared_data) for r in p]
    syndrome = every_condition(res)
    files = bulk_export(res)
    birth = {f"Patient/{p['id']}": dt.date.fromisoformat(p["birthDate"]) for p in files["Patient"]}
    start = {e["id"]: expected_day(e["period"]["start"], birth[e["subject"]["reference"]])
             for e in files["Encounter"]}
    undated = [{k: v for k, v in c.items() if k not in ("onsetDateTime", "recordedDate")}
               for c in files["Condition"]]
    for server in serve(tmp_path / "store"):
        ingest(server, [undated, files["Patient"], files["Encounter"]])
        df, uncounted = counts(server, syndrome)
    pairs = {(c["subject"]["reference"], start[c["encounter"]["reference"].split("/")[1]]) for c in undated}
    assert uncounted == 0 and {d: n for d, n in df["US-MA"].items() if n} == per_day(pairs)


def test_rows_stored_before_offsets_were_kept_count_on_their_utc_date(tmp_path: Path) -> None:
    store = ParquetStore(str(tmp_path)).open()
    old = pa.table({"source": ["s"], "record_key": ["c0"], "patient_id": ["p0"], "region": ["US-IL"],
                    "icd10_code": ["J10.1"], "onset": pa.array([dt.datetime(2024, 1, 10, 2, 30, tzinfo=UTC)],
                                                              pa.timestamp("us", tz="UTC"))})
    store.commit({"condition": old})  # the schema of an older release: no offset columns
    flat = ingest_pb2.FlatRecords(conditions=[ingest_pb2.ConditionRecord(
        condition_id="c1", patient_id="p1", code="J10.1", code_system="ICD10CM", state="IL", country="US",
        onset="2024-01-09T20:30:00-06:00")])
    core = IngestCore(context(), store, 1000)
    core.commit(core.normalize(ingest_pb2.IngestRequest(source="s", flat=flat)).tables, new_batch_id())
    df = SurveillanceCounts(store).counts("ili", "D")
    assert df["US-IL"].to_dict() == {pd.Timestamp("2024-01-09"): 1, pd.Timestamp("2024-01-10"): 1}


def test_late_patient_rewrite_cuts_the_date_as_written(tmp_path: Path) -> None:
    """Events stored first, their Patient later: the rewrite checks the date as written too."""
    core = IngestCore(context(), ParquetStore(str(tmp_path)).open(), 1000)
    flat = ingest_pb2.FlatRecords(encounters=[
        ingest_pb2.EncounterRecord(encounter_id="e1", patient_id="a", class_code="IMP",
                                   start="2019-07-04T22:00:00-05:00"),   # 2019-07-05 in UTC
        ingest_pb2.EncounterRecord(encounter_id="e2", patient_id="a", class_code="IMP",
                                   start="2019-07-05T22:00:00-05:00")])
    assert core.commit(core.normalize(ingest_pb2.IngestRequest(source="c", flat=flat)).tables,
                       new_batch_id()).generalized == {}
    patients = ingest_pb2.FlatRecords(patients=[ingest_pb2.PatientRecord(patient_id="a", sex="M",
                                                                         birth_date="2019-07-04")])
    result = core.commit(core.normalize(ingest_pb2.IngestRequest(source="c", flat=patients)).tables,
                         new_batch_id())
    assert len(result.rewritten) == 1
    rows = [r for path in core.store.files("encounter") for r in pq.read_table(path).to_pylist()]
    got = sorted((r["start"], r["start" + OFFSET_SUFFIX]) for r in rows)
    assert got == [(dt.datetime(2019, 7, 1, tzinfo=UTC), None),
                   (dt.datetime(2019, 7, 6, 3, tzinfo=UTC), -300)]
