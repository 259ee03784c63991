"""Issue 13, items 3-4: data quality and the dates policy, on a small hand-written FHIR bundle
(``fixtures/data_quality_bundle.json``)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pytest

from healthai.normalize import dates
from healthai.normalize.context import NormalizeContext
from healthai.normalize.fhir import normalize_fhir
from healthai.normalize.flat import normalize_table
from healthai.normalize.records import NormalizedBatch, RecordOutcome, Severity, Status
from tests.normalize.conftest import FIXTURES, KEY, REFERENCE_DATE

BUNDLE = FIXTURES / "data_quality_bundle.json"
BIRTH = dt.date(1990, 5, 17)


def _entry(name: str) -> int:
    doc = json.loads(BUNDLE.read_text())
    return next(i for i, e in enumerate(doc["entry"]) if e["resource"]["id"] == name)


def _outcome(batch: NormalizedBatch, name: str) -> RecordOutcome:
    return batch.outcomes[_entry(name)]


def _issues(batch: NormalizedBatch, name: str) -> list[tuple[str, str]]:
    return [(i.code, i.field_path) for i in _outcome(batch, name).issues]


def _row(batch: NormalizedBatch, kind: str, name: str) -> dict:
    rid = _outcome(batch, name).source_id
    rows = [r for r in batch.tables[kind].to_pylist() if r["resource_id"] == rid]
    assert len(rows) == 1, name
    return rows[0]


@pytest.fixture(scope="module")
def full(ctx: NormalizeContext) -> NormalizedBatch:
    return normalize_fhir(BUNDLE.read_bytes(), ctx=ctx, source="dq")


def test_display_only_reference_is_kept_with_a_warning(full) -> None:
    assert _outcome(full, "dq-hba1c").status is Status.ACCEPTED_WITH_WARNINGS
    base = f"entry[{_entry('dq-hba1c')}].resource"
    assert _issues(full, "dq-hba1c") == [("REFERENCE_DISPLAY_ONLY", f"{base}.encounter")]
    row = _row(full, "observation", "dq-hba1c")
    assert row["value"] == pytest.approx(6.1) and row["encounter_id"] is None and row["patient_id"]


def test_display_only_subject_is_still_rejected(ctx) -> None:
    doc = json.loads(BUNDLE.read_text())
    doc["entry"][_entry("dq-hba1c")]["resource"]["subject"] = {"display": "someone"}
    batch = normalize_fhir(json.dumps(doc), ctx=ctx, source="dq")
    out = _outcome(batch, "dq-hba1c")
    assert out.status is Status.REJECTED
    assert ("MISSING_FIELD", f"entry[{_entry('dq-hba1c')}].resource.subject.reference") in [
        (i.code, i.field_path) for i in out.issues
    ]


def test_every_accepted_record_is_stored_or_says_why(full) -> None:
    stored = {r for t in full.tables.values() for r in t["resource_id"].to_pylist()}
    for o in full.outcomes:
        if o.status is not Status.REJECTED:
            assert o.source_id in stored or any(i.code.endswith("NOT_STORED") for i in o.issues), o
    absent = _row(full, "observation", "dq-absent")
    assert _outcome(full, "dq-absent").status is Status.ACCEPTED
    assert absent["value"] is None
    assert absent["data_absent_reason"] == (
        "http://terminology.hl7.org/CodeSystem/data-absent-reason|not-performed"
    )
    assert _row(full, "observation", "dq-no-value")["data_absent_reason"] is None
    assert _issues(full, "dq-no-value") == [
        ("VALUE_MISSING", f"entry[{_entry('dq-no-value')}].resource.value[x]")
    ]


def test_unknown_elements_are_warned_with_their_path(full) -> None:
    base = f"entry[{_entry('dq-unknown-elements')}].resource"
    unknown = [p for c, p in _issues(full, "dq-unknown-elements") if c == "UNKNOWN_ELEMENT"]
    # "stop" is no FHIR element name anywhere: withheld as "*"; onsetDateTime is one (of Condition)
    assert sorted(unknown) == [f"{base}.effectivePeriod.*", f"{base}.onsetDateTime"]
    assert _row(full, "observation", "dq-unknown-elements")["effective"] == dt.datetime(
        2024, 3, 2, 9, 10, tzinfo=dt.UTC
    )


def test_unknown_element_shortcut_equals_the_full_walk(bundle_paths) -> None:
    """The cached all-known pre-check gives what the path-building walk gives: on real bundles (no
    unknown keys), then with unknown keys put at random nodes of the same, already cached, shapes."""
    import random

    from healthai.normalize import fhir_unknown as fu

    def walk(res: dict, rtype: str) -> list:
        out: list = []
        fu._walk(res, rtype, "r", out, top=True)
        return out

    resources = [e["resource"] for p in bundle_paths[:2] for e in json.loads(p.read_bytes())["entry"]
                 if e["resource"]["resourceType"] in fu.STRUCTURE]
    assert all(fu.unknown_elements(r, r["resourceType"], "r") == [] == walk(r, r["resourceType"])
               for r in resources)
    rng = random.Random(7)
    for res in rng.sample(resources, 60):
        nodes: list[dict] = []
        stack: list = [res]
        while stack:  # every dict below the resource, extensions included
            node = stack.pop()
            if isinstance(node, dict):
                nodes.append(node)
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
        target, rtype = rng.choice(nodes), res["resourceType"]
        target[rng.choice(["stop", "onsetDateTime", "resourceType", "x-local"])] = rng.choice([1, {"a": 2}])
        want = walk(res, rtype)
        assert fu.unknown_elements(res, rtype, "r") == want
        assert want or target is res or "extension" in json.dumps(res)  # only open-ended parts stay silent


def test_all_errors_of_a_resource_are_reported(full) -> None:
    out = _outcome(full, "dq-many-errors")
    base = f"entry[{_entry('dq-many-errors')}].resource"
    assert out.status is Status.REJECTED
    errors = sorted(i.field_path for i in out.issues if i.severity is Severity.ERROR)
    assert errors == [f"{base}.effectiveDateTime", f"{base}.status", f"{base}.valueQuantity.value"]
    assert out.source_id not in full.tables["observation"]["resource_id"].to_pylist()


def test_invalid_snomed_is_flagged_and_not_stored_as_snomed(full) -> None:
    base = f"entry[{_entry('dq-bad-snomed')}].resource"
    assert _issues(full, "dq-bad-snomed") == [("SNOMED_INVALID", f"{base}.code.coding[0].code")]
    bad = _row(full, "condition", "dq-bad-snomed")
    assert (bad["snomed_code"], bad["code_system"], bad["code"]) == (
        None, "OTHER", "http://snomed.info/sct|1234567"
    )
    good = _row(full, "condition", "dq-good-snomed")
    assert (good["snomed_code"], good["code_system"]) == ("44054006", "SNOMED")
    assert [c for c, _ in _issues(full, "dq-good-snomed")] == ["CODE_UNMAPPED"]  # no map loaded


def test_loinc_validity_column(full) -> None:
    assert _row(full, "observation", "dq-bad-loinc")["loinc_valid"] is False
    assert [c for c, _ in _issues(full, "dq-bad-loinc")] == ["LOINC_INVALID"]
    assert _row(full, "observation", "dq-hba1c")["loinc_valid"] is True


def test_non_ucum_spelling_is_converted_with_a_warning(full) -> None:
    base = f"entry[{_entry('dq-unknown-elements')}].resource"
    assert ("UNIT_NOT_UCUM", f"{base}.valueQuantity.unit") in _issues(full, "dq-unknown-elements")
    row = _row(full, "observation", "dq-unknown-elements")
    assert (row["unit"], row["original_unit"]) == ("Cel", "C")
    assert not any(c == "UNIT_NOT_UCUM" for c, _ in _issues(full, "dq-birth-weight"))  # UCUM "kg"


def _all_dates(batch: NormalizedBatch) -> list[dt.date]:
    out = []
    for kind, cols in dates.EVENT_COLUMNS.items():
        for c in cols:
            out += [t.date() for t in batch.tables[kind][c].to_pylist() if t is not None]
    return out


def test_full_dates_no_stored_date_equals_the_birth_date(full) -> None:
    assert BIRTH not in _all_dates(full)
    enc = _row(full, "encounter", "dq-birth-encounter")
    assert enc["start"] == dt.datetime(1990, 5, 1, tzinfo=dt.UTC)  # cut to the birth month
    assert enc["end"] == dt.datetime(1990, 5, 19, 10, tzinfo=dt.UTC)  # other dates as sent
    base = f"entry[{_entry('dq-birth-encounter')}].resource"
    assert _issues(full, "dq-birth-encounter") == [("DATE_GENERALIZED", f"{base}.period.start")]
    assert [c for c, _ in _issues(full, "dq-birth-weight")] == ["DATE_GENERALIZED"]
    cond = _row(full, "condition", "dq-birth-condition")
    assert cond["onset"] == dt.datetime(1990, 5, 1, tzinfo=dt.UTC)
    assert cond["recorded"] == dt.datetime(1990, 5, 18, tzinfo=dt.UTC)
    patient = _row(full, "patient", "dq-patient-1")
    assert (patient["birth_year"], patient["birth_month"]) == (1990, 5)


def test_birth_on_the_first_is_not_stored_either(ctx) -> None:
    text = BUNDLE.read_text().replace("1990-05-17", "1990-05-01")
    batch = normalize_fhir(text, ctx=ctx, source="dq")
    assert dt.date(1990, 5, 1) not in _all_dates(batch)
    assert _row(batch, "encounter", "dq-birth-encounter")["start"].date() == dt.date(1990, 5, 2)


def test_shift_policy_moves_a_patients_dates_by_one_keyed_offset(full) -> None:
    shift_ctx = NormalizeContext.create(key=KEY, reference_date=REFERENCE_DATE, date_policy="shift")
    shifted = normalize_fhir(BUNDLE.read_bytes(), ctx=shift_ctx, source="dq")
    assert BIRTH not in _all_dates(shifted)
    pid = _row(full, "patient", "dq-patient-1")["patient_id"]
    days = dates.shift_days(shift_ctx.pseudonymizer, pid)
    assert days != 0 and abs(days) <= 364
    delta = dt.timedelta(days=days)
    cases = [("observation", "dq-hba1c", "effective"), ("encounter", "dq-birth-encounter", "end"),
             ("condition", "dq-good-snomed", "onset")]
    for kind, name, col in cases:
        assert _row(shifted, kind, name)[col] == _row(full, kind, name)[col] + delta
    # the same key gives the same offset in another payload (flat rows of the same patient)
    flat = pa.table({"observation_id": ["o1"], "patient_id": ["dq-patient-1"], "loinc": ["8867-4"],
                     "value": [70.0], "unit": ["/min"], "effective": ["2024-03-02T09:00:00Z"]})
    rows = normalize_table("observation", flat, ctx=shift_ctx, source="dq").tables["observation"]
    assert rows["patient_id"][0].as_py() == pid
    assert rows["effective"][0].as_py() == dt.datetime(2024, 3, 2, 9, tzinfo=dt.UTC) + delta


def test_other_keys_give_other_offsets(full) -> None:
    other = NormalizeContext.create(key=b"another-key-0123456789abcdef", reference_date=REFERENCE_DATE)
    offsets = {dates.shift_days(c.pseudonymizer, f"patient-{i}") for c in (other,) for i in range(50)}
    assert len(offsets) > 30 and 0 not in offsets


def test_element_tree_matches_fhir_resources() -> None:
    """fhir_structure.py is generated from fhir.resources' R4B models: regenerate and compare."""
    import re

    from fhir.resources.R4B import get_fhir_model_class

    from healthai.normalize.fhir_structure import STRUCTURE

    prim = re.compile(r"abc\.(\w+)Type")
    for name, elements in STRUCTURE.items():
        fields = get_fhir_model_class(name).model_fields
        expect: dict[str, str | None] = {}
        for fname, f in fields.items():
            if fname == "fhir_comments":
                continue
            alias = f.alias or fname
            m = prim.search(str(f.annotation))
            child = m.group(1) if m and not alias.startswith("_") else None
            expect[alias] = None if child == "FHIRPrimitiveExtension" else child
        assert elements == expect, name


def test_fixture_is_small_and_hand_written() -> None:
    assert Path(BUNDLE).stat().st_size < 10_000


def test_flat_rows_get_the_same_snomed_and_loinc_checks(ctx) -> None:
    cond = pa.table({"condition_id": ["a", "b"], "patient_id": ["p", "p"],
                     "code_system": ["SNOMED", "SNOMED"], "code": ["1234567", "44054006"]})
    b = normalize_table("condition", cond, ctx=ctx, source="dq")
    assert [i.code for i in b.outcomes[0].issues] == ["SNOMED_INVALID"]
    rows = b.tables["condition"].to_pylist()
    assert [(r["code_system"], r["snomed_code"]) for r in rows] == [("OTHER", None), ("SNOMED", "44054006")]
    obs = pa.table({"observation_id": ["a", "b"], "patient_id": ["p", "p"], "loinc": ["4548-5", "4548-4"],
                    "value": [6.0, 6.0], "unit": ["%", "%"]})
    rows = normalize_table("observation", obs, ctx=ctx, source="dq").tables["observation"]
    assert rows["loinc_valid"].to_pylist() == [False, True]
