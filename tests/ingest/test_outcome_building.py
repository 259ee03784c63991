"""Outcomes built the fast way equal those of the straightforward construction they replaced.

``Flags.outcomes`` (flat/Arrow: per-row issues from column masks) and ``convert.add_outcomes``
(domain outcomes -> response messages) were restructured for speed; the reference versions below
are the previous code, verbatim in behaviour. Fixtures: seeded flat tables of every kind full of
problems (several issues per row, warnings and errors, per-row messages) and the hand-written FHIR
data-quality bundle.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from healthai.ingest import convert
from healthai.normalize import flat_checks
from healthai.normalize.fhir import normalize_fhir
from healthai.normalize.flat import normalize_table
from healthai.normalize.records import Issue, RecordOutcome, Severity, Status
from healthai.v1 import common_pb2, ingest_pb2

from .conftest import context

FHIR_FIXTURE = Path(__file__).resolve().parent.parent / "normalize" / "fixtures" / "data_quality_bundle.json"
DATES = ["", None, "2026-01-05", "2026-01-05T10:00:00Z", "1850", "2999-01-01", "2026-13-40", "soon"]
REGIONS = ["", None, "US-MA", "us-ny", "XX-00", "nowhere"]


def _reference_flag_outcomes(self: flat_checks.Flags, resource_type: str,
                             source_ids: pa.Array) -> list[RecordOutcome]:
    issues: dict[int, list[Issue]] = {}
    for mask, code, message, column, sev in self._items:
        for i in np.flatnonzero(mask).tolist():
            msg = message if isinstance(message, str) else str(message[i])
            issues.setdefault(i, []).append(Issue(code, msg, f"[{i}].{column}", sev))
    sids = source_ids.to_pylist()
    out = [RecordOutcome(i, resource_type, sids[i] or "", Status.ACCEPTED, []) for i in range(self.n)]
    for i, found in issues.items():
        out[i].issues = found
        out[i].status = (Status.REJECTED if any(x.severity is Severity.ERROR for x in found)
                         else Status.ACCEPTED_WITH_WARNINGS)
    return out


def _reference_add_outcomes(target, request, outcomes, request_index=0) -> list[int]:
    everything = request.outcome_detail == ingest_pb2.OUTCOME_DETAIL_ALL
    statuses = []
    for o in outcomes:
        status = convert._STATUS[o.status]
        statuses.append(status)
        if not (everything or o.issues):
            continue
        kind = o.kind
        proto_kind = convert.PROTO_KIND.get(kind, common_pb2.RECORD_KIND_OTHER if kind else
                                            common_pb2.RECORD_KIND_UNSPECIFIED)
        message = target.add(index=o.index, kind=proto_kind, resource_type=o.resource_type,
                             source_id=o.source_id or "", status=status, request_index=request_index)
        prefix = convert.path_prefix(request, kind)
        message.issues.extend(
            common_pb2.Issue(code=str(i.code), message=i.message, field_path=prefix + i.field_path,
                             severity=convert._SEVERITY.get(i.severity, common_pb2.SEVERITY_UNSPECIFIED))
            for i in o.issues)
    return statuses


def _tables(seed: int, n: int = 300) -> dict[str, pa.Table]:
    rng = random.Random(seed)

    def pick(values: list) -> list:
        return [rng.choice(values) for _ in range(n)]

    def ids() -> list:  # mostly distinct; some missing, some repeats
        return [rng.choice([f"r{i}", f"r{i}", f"r{i}", f"r{i}", "", None, "r0"]) for i in range(n)]

    loincs = ["29463-7", "8302-2", "8480-6", "8310-5", "2339-0", "1234-5", "", None, "x"]
    units = ["kg", "g", "[lb_av]", "lbs", "cm", "mmHg", "mm[Hg]", "Cel", "C", "[degF]", "mg/dL", "mmol/L",
             "furlong", "", None]
    codes = [("J10.1", "ICD10CM"), ("j101", ""), ("250.01", "ICD9CM"), ("6142004", "SNOMED"),
             ("1234567", "SNOMED"), ("ZZZ", "ICD10CM"), ("", None), ("1", "LOCAL")]
    values = [None, -5.0, 0.0, 37.2, 70.5, 120.0, 500.0, 1e9, float("nan")]
    picked = pick(codes)
    return {
        "observation": pa.table({"observation_id": ids(), "patient_id": ids(), "loinc": pick(loincs),
                                 "value": pick(values), "unit": pick(units), "effective": pick(DATES),
                                 "region": pick(REGIONS)}),
        "condition": pa.table({"condition_id": ids(), "patient_id": ids(),
                               "code": [c[0] for c in picked], "code_system": [c[1] for c in picked],
                               "onset": pick(DATES), "state": pick(["", "Massachusetts", "NY", "Atlantis"])}),
        "patient": pa.table({"patient_id": ids(), "sex": pick(["male", "F", "x", "", None]),
                             "birth_date": pick(DATES), "deceased_date": pick(DATES),
                             "region": pick(REGIONS)}),
        "encounter": pa.table({"encounter_id": ids(), "patient_id": ids(), "start": pick(DATES),
                               "end": pick(DATES), "status": pick(["finished", "bogus", None]),
                               "region": pick(REGIONS)}),
    }


@pytest.mark.parametrize("seed", range(3))
def test_flag_outcomes_equal_the_reference(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = context()
    for kind, table in _tables(seed).items():
        fast = normalize_table(kind, table, ctx=ctx, source="s")
        with monkeypatch.context() as m:
            m.setattr(flat_checks.Flags, "outcomes", _reference_flag_outcomes)
            slow = normalize_table(kind, table, ctx=ctx, source="s")
        assert fast.outcomes == slow.outcomes, kind
        assert all(fast.tables[k].equals(slow.tables[k]) for k in fast.tables)
        statuses = {o.status for o in fast.outcomes}
        assert {Status.REJECTED, Status.ACCEPTED_WITH_WARNINGS} <= statuses, kind  # the fixture bites
        assert any(len({i.code for i in o.issues}) > 1 for o in fast.outcomes), kind


def _requests(seed: int) -> list[ingest_pb2.IngestRequest]:
    tables = _tables(seed)
    obs = tables["observation"].to_pylist()
    flat = ingest_pb2.FlatRecords(observations=[
        ingest_pb2.ObservationRecord(**{k: v for k, v in r.items() if v is not None}) for r in obs])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, tables["condition"].schema) as writer:
        writer.write_table(tables["condition"])
    arrow = ingest_pb2.ArrowRecords(kind=common_pb2.RECORD_KIND_CONDITION,
                                    ipc_stream=sink.getvalue().to_pybytes())
    fhir = ingest_pb2.FhirPayload(json=FHIR_FIXTURE.read_bytes())
    return [ingest_pb2.IngestRequest(source="s", **payload) for payload in
            ({"flat": flat}, {"arrow": arrow}, {"fhir": fhir})]


@pytest.mark.parametrize("detail", [ingest_pb2.OUTCOME_DETAIL_ALL, ingest_pb2.OUTCOME_DETAIL_ISSUES])
def test_response_outcomes_equal_the_reference(detail: int) -> None:
    ctx = context()
    for request in _requests(seed=7):
        request.outcome_detail = detail
        payload = request.WhichOneof("payload")
        if payload == "fhir":
            outcomes = normalize_fhir(request.fhir.json, ctx=ctx, source="s").outcomes
        elif payload == "flat":
            outcomes = normalize_table("observation", convert.flat_tables(request.flat)["observation"],
                                       ctx=ctx, source="s").outcomes
        else:
            outcomes = normalize_table(*convert.arrow_table(request.arrow), ctx=ctx, source="s").outcomes
        fast, slow = ingest_pb2.IngestResponse(), ingest_pb2.IngestResponse()
        fast.statuses.extend(convert.add_outcomes(fast.outcomes, request, outcomes, 2))
        slow.statuses.extend(_reference_add_outcomes(slow.outcomes, request, outcomes, 2))
        assert fast == slow, payload
        assert fast.SerializeToString(deterministic=True) == slow.SerializeToString(deterministic=True)
        assert sum(len(o.issues) for o in fast.outcomes) > len(fast.outcomes) / 2, payload  # issues galore
