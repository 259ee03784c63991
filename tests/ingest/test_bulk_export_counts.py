"""A FHIR bulk export (one NDJSON file per resource type) counts the same cases as whole bundles.

The real Synthea bundles are split the way a bulk ``$export`` writes them, and sent through the real
Ingest server in the worst order (conditions first, patients last): conditions are stored without a
region, yet surveillance counts match the whole-bundle ingest once the patients are stored. An
encounter diagnosis with no onset or recorded date (as MIMIC-IV on FHIR writes them) is dated by its
encounter's start.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
from pathlib import Path

import pandas as pd

from healthai.surveillance import SurveillanceCounts
from healthai.surveillance.syndromes import Syndrome
from healthai.v1 import ingest_pb2

from .conftest import IngestServer, serve
from .test_synthea_e2e import bundles

SNOMED = "http://snomed.info/sct"


def per_bundle(shared_data: Path) -> list[list[dict]]:
    return [[e["resource"] for e in json.loads(f.read_bytes())["entry"]] for f in bundles(shared_data)]


def bulk_export(res: list[dict]) -> dict[str, list[dict]]:
    """Resources by type, each reference written ``Type/id`` as a bulk export writes it (the bundles
    use ``urn:uuid:`` fullUrls)."""
    types = {r["id"]: r["resourceType"] for r in res}
    out: dict[str, list[dict]] = collections.defaultdict(list)
    for r in res:
        r = dict(r)
        for field in ("subject", "encounter", "patient"):
            ref = r.get(field, {}).get("reference", "")
            if ref.startswith("urn:uuid:"):
                target = ref.removeprefix("urn:uuid:")
                r[field] = {"reference": f"{types[target]}/{target}"}
        out[r["resourceType"]].append(r)
    return out


def every_condition(res: list[dict]) -> Syndrome:
    """A syndrome matching every SNOMED-coded condition of the bundles (Synthea codes all of them)."""
    codes = {c["code"] for r in res if r["resourceType"] == "Condition"
             for c in r["code"]["coding"] if c["system"] == SNOMED}
    return Syndrome("all", "every condition of the test bundles", (), frozenset(codes))


def ndjson_request(records: list[dict]) -> ingest_pb2.IngestRequest:
    """What the client sends for a ``.ndjson`` file: its lines as one JSON array."""
    payload = b"[" + b",".join(json.dumps(r).encode() for r in records) + b"]"
    return ingest_pb2.IngestRequest(source="synthea", fhir=ingest_pb2.FhirPayload(json=payload))


def ingest(server: IngestServer, payloads: list[list[dict]]) -> None:
    for records in payloads:
        reply = server.stub.IngestBatch(ndjson_request(records), timeout=120)
        assert reply.rejected == 0


def counts(server: IngestServer, syndrome: Syndrome) -> tuple[pd.DataFrame, int]:
    c = SurveillanceCounts(server.plugin.store, {syndrome.name: syndrome})
    return c.counts(syndrome.name, "D"), c.uncounted(syndrome.name)


def synthea_export(shared_data: Path) -> tuple[list[list[dict]], Syndrome, dict[str, list[dict]]]:
    """The bundles' resources per bundle, a syndrome matching all their conditions, the bulk files."""
    payloads = per_bundle(shared_data)
    res = [r for p in payloads for r in p]
    return payloads, every_condition(res), bulk_export(res)


def test_bulk_export_in_any_order_counts_like_whole_bundles(tmp_path: Path, shared_data: Path) -> None:
    payloads, syndrome, files = synthea_export(shared_data)
    for server in serve(tmp_path / "bundles"):
        ingest(server, payloads)  # one bundle per patient: regions resolve inside the payload
        whole, whole_uncounted = counts(server, syndrome)
    assert whole_uncounted == 0 and int(whole.to_numpy().sum()) > 50

    for server in serve(tmp_path / "bulk"):
        ingest(server, [files["Condition"]])
        early, uncounted = counts(server, syndrome)
        assert early.empty and uncounted == len(files["Condition"])  # no region yet: waiting, not lost
        ingest(server, [files["Encounter"], files["Patient"]])
        bulk, bulk_uncounted = counts(server, syndrome)
    assert bulk_uncounted == 0
    pd.testing.assert_frame_equal(bulk, whole)


def test_encounter_diagnoses_without_dates_take_the_encounter_start(tmp_path: Path,
                                                                    shared_data: Path) -> None:
    res = [r for p in per_bundle(shared_data) for r in p]
    syndrome = every_condition(res)
    files = bulk_export(res)
    birth = {f"Patient/{p['id']}": dt.date.fromisoformat(p["birthDate"]) for p in files["Patient"]}

    def stored_day(encounter: dict) -> pd.Timestamp:
        """The encounter's UTC start date; on the birth date, cut to the 1st (2nd) of the month."""
        day = dt.datetime.fromisoformat(encounter["period"]["start"]).astimezone(dt.UTC).date()
        if day == birth[encounter["subject"]["reference"]]:
            day = day.replace(day=2 if day.day == 1 else 1)
        return pd.Timestamp(day)

    encounter_day = {e["id"]: stored_day(e) for e in files["Encounter"]}
    undated = [{k: v for k, v in c.items() if k not in ("onsetDateTime", "recordedDate")}
               for c in files["Condition"]]
    for server in serve(tmp_path / "store"):
        ingest(server, [undated, files["Patient"]])
        _, waiting = counts(server, syndrome)
        assert waiting == len(undated)  # regions known, dates not yet
        ingest(server, [files["Encounter"]])
        df, uncounted = counts(server, syndrome)
    assert uncounted == 0
    # one region (US-MA); distinct patients per day, so compare with distinct (patient, day) pairs
    pairs = {(c["subject"]["reference"], encounter_day[c["encounter"]["reference"].split("/")[1]])
             for c in undated}
    per_day = collections.Counter(d for _, d in pairs)
    assert list(df.columns) == ["US-MA"]
    assert {d: n for d, n in df["US-MA"].items() if n} == dict(per_day)
