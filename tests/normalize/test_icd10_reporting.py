"""ICD-10 reporting checks, the same over FHIR and flat: not-reportable codes (categories with subcodes, a
missing 7th character), WHO-only codes, misplaced dots, codeless flat rows; SNOMED CT map targets checked
at load; NLM IFA (sex / age at onset) rules evaluated or left unmapped with their reason."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import pyarrow as pa
import pytest

from healthai.errors import InvalidInput
from healthai.normalize.context import NormalizeContext
from healthai.normalize.fhir import normalize_fhir
from healthai.normalize.flat import normalize_table
from healthai.normalize.maps import SnomedIcd10Map
from healthai.normalize.records import Status
from tests.normalize.conftest import KEY, REFERENCE_DATE
from tests.normalize.fhir_builders import bundle, condition, patient

CM = "http://hl7.org/fhir/sid/icd-10-cm"
WHO = "http://hl7.org/fhir/sid/icd-10"
SCT = "http://snomed.info/sct"
_HEAD = (
    "id\teffectiveTime\tactive\tmoduleId\trefsetId\treferencedComponentId\tmapGroup\tmapPriority\tmapRule\t"
    "mapAdvice\tmapTarget\tcorrelationId\tmapCategoryId"
)


def map_file(path: Path, rows: list[tuple]) -> Path:
    lines = [_HEAD] + [
        "\t".join(
            [
                str(uuid.uuid4()),
                "20250901",
                "1",
                "5991000124107",
                "6011000124106",
                s,
                str(g),
                str(p),
                rule,
                advice,
                target,
                "447561005",
                "447637006",
            ]
        )
        for s, g, p, rule, advice, target in rows
    ]
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    return path


def fhir(ctx, *resources):
    """(outcome, stored condition rows) of each Condition of one bundle."""
    b = normalize_fhir(json.dumps(bundle(*resources)), ctx=ctx, source="test")
    rows = b.tables["condition"].to_pylist()
    out = []
    for o in b.outcomes:
        if o.resource_type == "Condition":
            out.append((o, [r for r in rows if r["record_key"].split("#")[0] == o.source_id]))
    return out


def flat(ctx, pairs: list[tuple[str, str]]):
    t = pa.table(
        {
            "condition_id": [str(i) for i in range(len(pairs))],
            "patient_id": ["p"] * len(pairs),
            "code": [c for c, _ in pairs],
            "code_system": [s for _, s in pairs],
        }
    )
    b = normalize_table("condition", t, ctx=ctx, source="s")
    rows = b.tables["condition"].to_pylist()
    return [(o, [r for r in rows if r["record_key"].split("#")[0] == o.source_id]) for o in b.outcomes]


def codes_of(o) -> list[str]:
    return [i.code for i in o.issues]


# ---------------------------------------------------------------- bug 1: not reportable codes
@pytest.mark.parametrize(
    ("code", "why"),
    [
        ("E11", "category with subcodes"),
        ("M54.5", "category with subcodes"),
        ("S52.521", "lacks its 7th character"),
        ("T36.0X1", "lacks its 7th character"),
    ],
)
def test_not_billable_codes_are_stored_and_flagged_fhir_and_flat(ctx, code, why) -> None:
    for o, rows in (fhir(ctx, patient(), condition(CM, code))[0], flat(ctx, [(code, "ICD10CM")])[0]):
        assert o.status is Status.ACCEPTED_WITH_WARNINGS
        assert codes_of(o) == ["ICD10_NOT_BILLABLE"]
        assert why in o.issues[0].message and "not a reportable ICD-10-CM" in o.issues[0].message
        assert [r["icd10_code"] for r in rows] == [code]  # still counted under its category


def test_billable_and_invalid_codes_unchanged(ctx) -> None:
    (ok, ok_rows), (bad, bad_rows) = fhir(
        ctx, patient(), condition(CM, "E11.9"), condition(CM, "E11.99X", "c2")
    )
    assert ok.status is Status.ACCEPTED and ok_rows[0]["icd10_code"] == "E11.9"
    assert codes_of(bad) == ["ICD10_INVALID"] and bad_rows[0]["icd10_code"] is None


def test_who_uri_codes_complete_in_who_are_not_flagged(ctx) -> None:
    # M54.5 is a complete WHO code (a header in ICD-10-CM since FY2022); E11 has subcodes in both
    (m545, r1), (e11, r2), (e149, r3) = fhir(
        ctx, patient(), condition(WHO, "M54.5"), condition(WHO, "E11", "c2"), condition(WHO, "E14.9", "c3")
    )
    assert m545.status is Status.ACCEPTED and r1[0]["icd10_code"] == "M54.5"
    assert codes_of(e11) == ["ICD10_NOT_BILLABLE"] and r2[0]["icd10_code"] == "E11"
    assert e149.status is Status.ACCEPTED and r3[0]["icd10_code"] == "E14.9"


# ---------------------------------------------------------------- bug 5: WHO-only codes over flat
def test_who_only_code_over_flat_is_read_as_over_fhir(ctx) -> None:
    (o, rows), (cm, cm_rows) = flat(ctx, [("E14.9", WHO), ("E14.9", CM)])
    assert o.status is Status.ACCEPTED and rows[0]["icd10_code"] == "E14.9"
    assert codes_of(cm) == ["ICD10_INVALID"] and cm_rows[0]["icd10_code"] is None  # not ICD-10-CM


# ---------------------------------------------------------------- bug 9: misplaced dots
@pytest.mark.parametrize("code", ["E1.19", "U0.71", "J10.1.", "E11..9"])
def test_misplaced_dot_is_invalid_never_moved_fhir_and_flat(ctx, code) -> None:
    for o, rows in (fhir(ctx, patient(), condition(CM, code))[0], flat(ctx, [(code, "ICD10CM")])[0]):
        assert codes_of(o) == ["ICD10_INVALID"], o.issues
        assert "dot that is not after its 3rd character" in o.issues[0].message
        assert [r["icd10_code"] for r in rows] == [None]


# ---------------------------------------------------------------- bug 10: codeless flat rows
def test_flat_condition_without_a_code_is_not_stored_as_over_fhir(ctx) -> None:
    (o, rows), (ok, ok_rows) = flat(ctx, [("12345", "ICD10CM"), ("E11.9", "ICD10CM")])
    assert o.status is Status.ACCEPTED_WITH_WARNINGS and rows == []
    assert codes_of(o) == ["CODE_NOT_STORED", "NOT_STORED"] and "12345" not in str(o.issues)
    assert ok.status is Status.ACCEPTED and len(ok_rows) == 1
    ((fo, frows),) = fhir(ctx, patient(), condition(CM, "12345"))
    assert codes_of(fo) == ["CODE_NOT_STORED", "NOT_STORED"] and frows == []


# ---------------------------------------------------------------- bug 2: map targets checked at load
def test_map_targets_not_in_icd10cm_are_not_used_and_logged(tmp_path, caplog) -> None:
    rows = [
        ("36971009", 1, 1, "TRUE", "ALWAYS J01.99X", "J01.99X"),
        ("44054006", 1, 1, "TRUE", "ALWAYS E11.9", "E11.9"),
        ("22298006", 1, 1, "TRUE", "ALWAYS I21.9", "I21.9"),
    ]
    with caplog.at_level(logging.WARNING, logger="healthai.normalize.maps"):
        m = SnomedIcd10Map.load_nlm(map_file(tmp_path / "m.txt", rows))
    assert "1 of 3 map target(s) are not ICD-10-CM" in caplog.text
    assert m.snomed_to_icd10("36971009") == [] and m.lookup("36971009").reason == (
        "its map target is not an ICD-10-CM code (not used)"
    )
    assert m.snomed_to_icd10("44054006") == ["E11.9"]


def test_map_file_with_advice_in_the_target_column_is_refused(tmp_path) -> None:
    rows = [
        ("44054006", 1, 1, "TRUE", "ALWAYS E11.9", "ALWAYS E11.9"),
        ("22298006", 1, 1, "TRUE", "ALWAYS I21.9", "ALWAYS I21.9"),
    ]
    with pytest.raises(InvalidInput, match="2 of 2 map targets are not ICD-10-CM"):
        SnomedIcd10Map.load_nlm(map_file(tmp_path / "m.txt", rows))


def test_mapped_target_gets_the_checks_of_a_code_sent(tmp_path) -> None:
    mp = map_file(
        tmp_path / "m.txt",
        [
            ("279039007", 1, 1, "TRUE", "ALWAYS M54.5", "M54.5"),
            ("44054006", 1, 1, "TRUE", "ALWAYS E11.9", "E11.9"),
        ],
    )
    ctx = NormalizeContext.create(key=KEY, reference_date=REFERENCE_DATE, snomed_map_nlm=mp)
    for o, rows in (
        fhir(ctx, patient(), condition(SCT, "279039007"))[0],
        flat(ctx, [("279039007", "SNOMED")])[0],
    ):
        assert codes_of(o) == ["ICD10_NOT_BILLABLE"] and "maps to ICD-10-CM M54.5" in o.issues[0].message
        assert [(r["icd10_code"], r["icd10_mapped"]) for r in rows] == [("M54.5", True)]


# ---------------------------------------------------------------- bugs 3, 4: rules and unmapped reasons
@pytest.fixture(scope="module")
def rule_ctx(tmp_path_factory) -> NormalizeContext:
    mp = map_file(
        tmp_path_factory.mktemp("map") / "m.txt",
        [
            ("68566005", 1, 1, "IFA 248152002 | Female (finding) |", "IF FEMALE CHOOSE N39.0", "N39.0"),
            (
                "68566005",
                1,
                2,
                "OTHERWISE TRUE",
                "MAP SOURCE CONCEPT CANNOT BE CLASSIFIED WITH AVAILABLE DATA",
                "",
            ),
            (
                "40055000",
                1,
                1,
                "IFA 445518008 | Age at onset of clinical finding (observable entity) | < 18.0 years",
                "IF AGE AT ONSET < 18.0 YEARS CHOOSE J32.9",
                "J32.9",
            ),
            ("40055000", 2, 1, "TRUE", "ALWAYS Z87.891", "Z87.891"),
            (
                "195967001",
                1,
                1,
                "IFA 445518008 | Age at onset of clinical finding (observable entity) | >= 65.0 years",
                "IF AGE AT ONSET >= 65.0 YEARS CHOOSE J45.998",
                "J45.998",
            ),
            ("195967001", 1, 2, "OTHERWISE TRUE", "ALWAYS J45.909", "J45.909"),
            ("233604007", 1, 1, "TRUE", "MAP OF SOURCE CONCEPT IS CONTEXT DEPENDENT", ""),
            ("15777000", 1, 1, "TRUE", "MAP SOURCE CONCEPT CANNOT BE CLASSIFIED WITH AVAILABLE DATA", ""),
        ],
    )
    return NormalizeContext.create(key=KEY, reference_date=REFERENCE_DATE, snomed_map_nlm=mp)


def test_sex_rule_is_evaluated_with_the_patient_in_the_payload(rule_ctx) -> None:
    ((f, frows),) = fhir(rule_ctx, patient(gender="female"), condition(SCT, "68566005"))
    assert f.status is Status.ACCEPTED and [r["icd10_code"] for r in frows] == ["N39.0"]
    ((m, mrows),) = fhir(rule_ctx, patient(gender="male"), condition(SCT, "68566005"))
    assert [r["icd10_code"] for r in mrows] == [None] and codes_of(m) == ["CODE_UNMAPPED"]
    assert "cannot be classified" in m.issues[0].message


def test_age_rule_is_evaluated_from_birth_date_and_onset(rule_ctx) -> None:
    old = patient(birthDate="1950-01-01")  # 70 at the 2020 onset
    ((_, rows),) = fhir(rule_ctx, old, condition(SCT, "195967001"))
    assert [r["icd10_code"] for r in rows] == ["J45.998"]
    ((_, rows),) = fhir(rule_ctx, patient(birthDate="1990-01-01"), condition(SCT, "195967001"))
    assert [r["icd10_code"] for r in rows] == ["J45.909"]
    ((_, rows),) = fhir(rule_ctx, patient(birthDate="2010-01-01"), condition(SCT, "40055000"))  # a child
    assert sorted(r["icd10_code"] for r in rows) == ["J32.9", "Z87.891"]


def test_group_one_not_holding_never_promotes_group_two(rule_ctx) -> None:
    ((o, rows),) = fhir(rule_ctx, patient(birthDate="1960-05-17"), condition(SCT, "40055000"))
    assert [r["icd10_code"] for r in rows] == [None] and codes_of(o) == ["CODE_UNMAPPED"]
    assert "no rule of the map holds for this patient" in o.issues[0].message


def test_rules_without_patient_context_leave_the_concept_unmapped_with_the_reason(rule_ctx) -> None:
    # flat rows carry no sex or birth date; over FHIR a subject outside the payload gives none either
    results = flat(rule_ctx, [("68566005", "SNOMED"), ("40055000", "SNOMED")])
    cond = condition(SCT, "68566005", subject={"reference": "Patient/elsewhere"})
    results += fhir(rule_ctx, cond)
    needs = ["sex", "age at onset", "sex"]
    for (o, rows), need in zip(results, needs, strict=True):
        assert [(r["icd10_code"], r["icd10_mapped"]) for r in rows] == [(None, False)]
        unmapped = [i.message for i in o.issues if i.code == "CODE_UNMAPPED"]
        assert len(unmapped) == 1 and f"depends on the patient's {need}" in unmapped[0]
        assert "context dependent" in unmapped[0]


def test_unmapped_message_says_why_the_map_leaves_it_unmapped(rule_ctx) -> None:
    results = flat(rule_ctx, [("233604007", "SNOMED"), ("15777000", "SNOMED"), ("22298006", "SNOMED")])
    (ctx_dep, _), (unclass, _), (absent, _) = results
    assert "the map leaves it unmapped: its ICD-10-CM code is context dependent" in ctx_dep.issues[0].message
    assert "the map leaves it unmapped: it cannot be classified" in unclass.issues[0].message
    assert "not in the loaded map" in absent.issues[0].message
    ((o, _),) = fhir(rule_ctx, patient(), condition(SCT, "233604007"))
    assert "its ICD-10-CM code is context dependent" in o.issues[0].message
