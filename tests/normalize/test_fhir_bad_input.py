"""Bad FHIR input: each case gets a precise outcome (or InvalidInput for a bad top level)."""

from __future__ import annotations

import json

import pytest

from healthai.errors import InvalidInput
from healthai.normalize.fhir import normalize_fhir
from healthai.normalize.records import Severity, Status
from tests.normalize.fhir_builders import (
    PATIENT_URL,
    bp_panel,
    bundle,
    condition,
    encounter,
    observation,
    patient,
)

ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"


def run(ctx, *resources, **kw):
    return normalize_fhir(json.dumps(bundle(*resources, **kw)), ctx=ctx, source="test")


def only_issue(outcome):
    assert len(outcome.issues) == 1, outcome.issues
    return outcome.issues[0]


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b'{"resourceType": "Bundle", "type": "transaction", "entry": [', "malformed JSON at line 1"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"42", "must be a JSON object or array, got int"),
        (b'"Patient"', "must be a JSON object or array, got str"),
        (b'{"id": "x"}', "no resourceType"),
        (b'{"resourceType": "Banana"}', r"resourceType is not a FHIR R4 resource type \(value withheld"),
        (
            b'{"resourceType": "Bundle", "type": "message-ish", "entry": []}',
            r"Bundle.type is not accepted \(one of batch",
        ),
        (b'{"resourceType": "Bundle", "type": "collection", "entry": {}}', "Bundle.entry must be an array"),
    ],
)
def test_bad_top_level_raises_invalid_input(ctx, payload, match) -> None:
    with pytest.raises(InvalidInput, match=match):
        normalize_fhir(payload, ctx=ctx, source="test")


def test_empty_source_is_invalid(ctx) -> None:
    with pytest.raises(InvalidInput, match="source"):
        normalize_fhir(bundle(patient()), ctx=ctx, source="")


def test_single_resource_and_array_payloads(ctx) -> None:
    one = normalize_fhir(patient(), ctx=ctx, source="test")
    assert [o.status for o in one.outcomes] == [Status.ACCEPTED]
    enc = encounter(subject={"reference": "Patient/11111111-1111-4111-8111-111111111111"})
    many = normalize_fhir([patient(), enc, "not an object"], ctx=ctx, source="test")
    assert [o.status for o in many.outcomes] == [Status.ACCEPTED, Status.ACCEPTED, Status.REJECTED]
    assert many.outcomes[2].issues[0].field_path == "[2]"


def test_wrong_resource_type_in_an_entry_rejects_only_that_entry(ctx) -> None:
    batch = run(ctx, patient(), {"resourceType": "Pateint", "id": "x"}, encounter())
    assert [o.status for o in batch.outcomes] == [Status.ACCEPTED, Status.REJECTED, Status.ACCEPTED]
    issue = only_issue(batch.outcomes[1])
    assert (issue.code, issue.field_path, issue.severity) == (
        "WRONG_RESOURCE_TYPE",
        "entry[1].resource.resourceType",
        Severity.ERROR,
    )
    assert batch.tables["encounter"].num_rows == 1


def test_entry_without_resource(ctx) -> None:
    doc = bundle(patient())
    doc["entry"].append({"fullUrl": "urn:uuid:abc"})
    batch = normalize_fhir(doc, ctx=ctx, source="test")
    issue = only_issue(batch.outcomes[1])
    assert (issue.code, issue.field_path) == ("MISSING_FIELD", "entry[1].resource")


@pytest.mark.parametrize(
    ("resource", "code", "path"),
    [
        (
            {k: v for k, v in encounter().items() if k != "status"},
            "MISSING_FIELD",
            "entry[1].resource.status",
        ),
        ({k: v for k, v in encounter().items() if k != "class"}, "MISSING_FIELD", "entry[1].resource.class"),
        (encounter(status="done"), "INVALID_FIELD", "entry[1].resource.status"),
        (
            {k: v for k, v in condition(ICD10, "E11.9").items() if k != "subject"},
            "MISSING_FIELD",
            "entry[1].resource.subject",
        ),
        (  # Observation.code is 1..1 (a Condition without one is accepted, not stored)
            {k: v for k, v in observation("8480-6", 120, "mm[Hg]").items() if k != "code"},
            "MISSING_FIELD",
            "entry[1].resource.code.coding",
        ),
        (
            {k: v for k, v in observation("8480-6", 120, "mm[Hg]").items() if k != "status"},
            "MISSING_FIELD",
            "entry[1].resource.status",
        ),
        (
            observation("8480-6", 120, "mm[Hg]", effectiveDateTime="yesterday"),
            "INVALID_FIELD",
            "entry[1].resource.effectiveDateTime",
        ),
        (
            observation("8480-6", 120, "mm[Hg]", effectiveDateTime="2999-01-01T00:00:00Z"),
            "DATE_IMPOSSIBLE",
            "entry[1].resource.effectiveDateTime",
        ),
        (
            encounter(period={"start": "2020-01-03T00:00:00Z", "end": "2020-01-01T00:00:00Z"}),
            "INVALID_FIELD",
            "entry[1].resource.period.end",
        ),
        (observation("8480-6", "120", "mm[Hg]"), "INVALID_FIELD", "entry[1].resource.valueQuantity.value"),
        (encounter(id="has spaces"), "INVALID_FIELD", "entry[1].resource.id"),
    ],
)
def test_missing_or_invalid_required_fields_reject_the_resource(ctx, resource, code, path) -> None:
    batch = run(ctx, patient(), resource)
    assert batch.outcomes[0].status is Status.ACCEPTED
    outcome = batch.outcomes[1]
    assert outcome.status is Status.REJECTED
    issue = next(i for i in outcome.issues if i.severity is Severity.ERROR)
    assert (issue.code, issue.field_path) == (code, path)
    assert sum(t.num_rows for k, t in batch.tables.items() if k != "patient") == 0


def test_patient_birth_date_checks(ctx) -> None:
    future = run(ctx, patient(birthDate="2999-01-01"))
    assert only_issue(future.outcomes[0]).code == "DATE_IMPOSSIBLE"
    ancient = run(ctx, patient(birthDate="1700"))
    assert only_issue(ancient.outcomes[0]).code == "DATE_IMPOSSIBLE"
    malformed = run(ctx, patient(birthDate="17/05/1960"))
    assert only_issue(malformed.outcomes[0]).code == "INVALID_FIELD"
    death_first = run(ctx, patient(deceasedDateTime="1950-01-01T00:00:00Z"))
    assert only_issue(death_first.outcomes[0]).code == "DATE_IMPOSSIBLE"
    bad_gender = run(ctx, patient(gender="f"))
    assert only_issue(bad_gender.outcomes[0]).field_path == "entry[0].resource.gender"


def test_dangling_references_are_flagged_not_dropped(ctx) -> None:
    obs = observation(
        "8480-6",
        120,
        "mm[Hg]",
        subject={"reference": "urn:uuid:99999999-0000-4000-8000-000000000000"},
        performer=[{"reference": "Practitioner/123"}],
    )
    batch = run(ctx, patient(), obs)
    outcome = batch.outcomes[1]
    assert outcome.status is Status.ACCEPTED_WITH_WARNINGS
    assert sorted((i.code, i.field_path) for i in outcome.issues) == [
        ("REFERENCE_UNRESOLVED", "entry[1].resource.performer[0].reference"),
        ("REFERENCE_UNRESOLVED", "entry[1].resource.subject.reference"),
    ]
    row = batch.tables["observation"].to_pylist()[0]
    assert row["patient_id"] and row["region"] is None  # patient not in this payload: region unknown


def test_type_id_references_resolve(ctx) -> None:
    p = patient(id="p1")
    e = encounter(id="e1", subject={"reference": "Patient/p1"})
    c = condition(
        ICD10, "I21.4", subject={"reference": "Patient/p1"}, encounter={"reference": "Encounter/e1"}
    )
    batch = normalize_fhir(
        {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": p}, {"resource": e}, {"resource": c}],
        },
        ctx=ctx,
        source="test",
    )
    assert [o.status for o in batch.outcomes] == [Status.ACCEPTED] * 3
    pid = batch.tables["patient"]["patient_id"][0].as_py()
    assert batch.tables["condition"]["patient_id"][0].as_py() == pid
    assert (
        batch.tables["condition"]["encounter_id"][0].as_py()
        == batch.tables["encounter"]["resource_id"][0].as_py()
    )
    assert batch.tables["condition"]["region"][0].as_py() == "US-IL"


def test_subject_must_reference_a_patient(ctx) -> None:
    obs = observation("8480-6", 120, "mm[Hg]", subject={"reference": "Group/g1"})
    issue = run(ctx, patient(), obs).outcomes[1].issues[-1]
    assert (issue.code, issue.field_path) == ("INVALID_FIELD", "entry[1].resource.subject.reference")


def test_duplicate_ids_reject_the_repeats(ctx) -> None:
    batch = run(ctx, patient(), condition(ICD10, "E11.9", rid="same"), condition(ICD10, "I10", rid="same"))
    assert [o.status for o in batch.outcomes] == [Status.ACCEPTED, Status.ACCEPTED, Status.REJECTED]
    issue = only_issue(batch.outcomes[2])
    assert issue.code == "DUPLICATE_ID" and "entry 1" in issue.message
    assert batch.tables["condition"]["code"].to_pylist() == ["E11.9"]


def test_codes_invalid_unknown_and_icd9(ctx) -> None:
    batch = run(
        ctx,
        patient(),
        condition(ICD10, "e119", rid="a"),
        condition(ICD10, "E11.99", rid="b"),
        condition("http://hl7.org/fhir/sid/icd-9-cm", "25001", rid="c"),
        condition("http://example.org/local", "XYZ", rid="d"),
        condition("http://snomed.info/sct", "44054006", rid="e"),
    )
    rows = {r["code"]: r for r in batch.tables["condition"].to_pylist()}
    assert rows["E11.9"]["icd10_code"] == "E11.9"
    assert rows["E11.99"]["icd10_code"] is None  # kept, flagged
    assert rows["250.01"]["icd9_code"] == "250.01" and rows["250.01"]["code_system"] == "ICD9CM"
    assert rows["http://example.org/local|XYZ"]["code_system"] == "OTHER"
    codes = [[i.code for i in o.issues] for o in batch.outcomes[1:]]
    assert codes == [[], ["ICD10_INVALID"], [], ["CODE_SYSTEM_UNKNOWN"], ["CODE_UNMAPPED"]]


def test_snomed_condition_mapped_with_a_loaded_map(ctx_with_map) -> None:
    batch = run(ctx_with_map, patient(), condition("http://snomed.info/sct", "94260004"))
    row = batch.tables["condition"].to_pylist()[0]
    assert (row["icd10_code"], row["icd10_mapped"], row["snomed_code"]) == ("C78.5", True, "94260004")
    assert batch.outcomes[1].status is Status.ACCEPTED


def test_observation_units_converted_and_impossible_values_rejected(ctx) -> None:
    batch = run(
        ctx,
        patient(),
        observation("8310-5", 98.6, "F", rid="t", ucum=False),
        observation("29463-7", 150, "lbs", rid="w", ucum=False),
        observation("2339-0", 5.5, "mmol/L", rid="g"),
        observation("8867-4", 72, "beats/minute", rid="hr", ucum=False),
        observation("8480-6", 1200, "mmHg", rid="bad", ucum=False),
        observation("8480-6", 120, "kg", rid="wrongunit"),
        observation("8480-6", 120, "furlongs", rid="unknownunit", ucum=False),
    )
    rows = {r["loinc"] + ":" + r["original_unit"]: r for r in batch.tables["observation"].to_pylist()}
    assert rows["8310-5:F"]["value"] == pytest.approx(37.0) and rows["8310-5:F"]["unit"] == "Cel"
    assert rows["29463-7:lbs"]["value"] == pytest.approx(68.0388555)
    assert (
        rows["2339-0:mmol/L"]["value"] == pytest.approx(99.088) and rows["2339-0:mmol/L"]["unit"] == "mg/dL"
    )
    assert rows["8867-4:beats/minute"]["unit"] == "/min"
    statuses = [o.status for o in batch.outcomes[1:]]
    assert statuses[2] is Status.ACCEPTED  # mmol/L is UCUM: converted silently
    for k in (1, 2, 4):  # F, lbs, beats/minute: non-UCUM spellings, converted with a warning
        issue = only_issue(batch.outcomes[k])
        assert (issue.code, issue.field_path) == ("UNIT_NOT_UCUM", f"entry[{k}].resource.valueQuantity.unit")
    assert only_issue(batch.outcomes[5]).code == "VALUE_IMPOSSIBLE"
    assert only_issue(batch.outcomes[5]).field_path == "entry[5].resource.valueQuantity.value"
    assert only_issue(batch.outcomes[6]).code == "UNIT_INCOMPATIBLE"
    unknown = only_issue(batch.outcomes[7])
    assert (unknown.code, unknown.field_path, batch.outcomes[7].status) == (
        "UNIT_UNKNOWN",
        "entry[7].resource.valueQuantity.unit",
        Status.ACCEPTED_WITH_WARNINGS,
    )
    assert rows["8480-6:furlongs"]["value"] is None and rows["8480-6:furlongs"]["original_value"] == 120


@pytest.mark.parametrize("panel", ["55284-4", "85354-9"])
def test_both_blood_pressure_panels(ctx, panel) -> None:
    batch = run(ctx, patient(), bp_panel(panel, 128, 82, unit="mmHg"))
    rows = sorted(batch.tables["observation"].to_pylist(), key=lambda r: r["loinc"])
    assert [(r["loinc"], r["panel_loinc"], r["value"], r["unit"]) for r in rows] == [
        ("8462-4", panel, 82.0, "mm[Hg]"),
        ("8480-6", panel, 128.0, "mm[Hg]"),
    ]
    inverted = run(ctx, patient(), bp_panel(panel, 70, 110))
    assert only_issue(inverted.outcomes[1]).code == "VALUE_IMPOSSIBLE"


def test_invalid_loinc_check_digit_is_flagged_and_kept(ctx) -> None:
    batch = run(ctx, patient(), observation("8480-5", 120, "mm[Hg]"))
    assert only_issue(batch.outcomes[1]).code == "LOINC_INVALID"
    assert batch.tables["observation"].num_rows == 1


def test_messages_never_contain_the_birth_date_or_names(ctx) -> None:
    batch = run(ctx, patient(birthDate="2999-05-17"), patient(id="x2", birthDate="nonsense-1960-05-17"))
    text = " ".join(i.message + i.field_path for o in batch.outcomes for i in o.issues)
    assert "2999" not in text and "1960" not in text and "Testperson" not in text


def test_contained_references(ctx) -> None:
    claim = {
        "resourceType": "Claim",
        "id": "cl1",
        "contained": [{"resourceType": "Coverage", "id": "cov"}],
        "insurance": [{"coverage": {"reference": "#cov"}}],
        "patient": {"reference": PATIENT_URL},
    }
    ok = run(ctx, patient(), claim)
    assert [i.code for i in ok.outcomes[1].issues] == ["RESOURCE_TYPE_NOT_STORED"]
    dangling = dict(claim, id="cl2", insurance=[{"coverage": {"reference": "#nope"}}])
    stray = observation("8480-6", 120, "mm[Hg]", specimen={"reference": "#cov"})  # no contained here
    batch = run(ctx, patient(), claim, dangling, stray)
    assert [i.code for i in batch.outcomes[1].issues] == ["RESOURCE_TYPE_NOT_STORED"]
    assert ("REFERENCE_UNRESOLVED", "entry[2].resource.insurance[0].coverage.reference") in [
        (i.code, i.field_path) for i in batch.outcomes[2].issues
    ]
    assert [(i.code, i.field_path) for i in batch.outcomes[3].issues] == [
        ("REFERENCE_UNRESOLVED", "entry[3].resource.specimen.reference")
    ]


def test_parsed_payloads_take_the_per_resource_path(ctx) -> None:
    doc = bundle(patient(), observation("8480-6", 120, "mm[Hg]", performer=[{"reference": "Practitioner/x"}]))
    from_text = normalize_fhir(json.dumps(doc), ctx=ctx, source="test")
    from_dict = normalize_fhir(doc, ctx=ctx, source="test")
    assert from_text.outcomes == from_dict.outcomes
    assert from_text.outcomes[1].issues[0].field_path == "entry[1].resource.performer[0].reference"


def test_strict_mode_validates_with_the_full_r4b_models(bundle_paths) -> None:
    from healthai.normalize.context import NormalizeContext
    from tests.normalize.conftest import KEY, REFERENCE_DATE

    strict = NormalizeContext.create(key=KEY, reference_date=REFERENCE_DATE, strict_fhir=True)
    smallest = min(bundle_paths, key=lambda p: p.stat().st_size)
    batch = normalize_fhir(smallest.read_bytes(), ctx=strict, source="test")
    assert all(o.status is not Status.REJECTED for o in batch.outcomes)
    odd = observation("8480-6", 120, "mm[Hg]", interpretation="high")  # R4: a list of CodeableConcepts
    bad = run(strict, patient(), odd)
    issues = [(i.code, i.field_path) for i in bad.outcomes[1].issues]
    assert bad.outcomes[1].status is Status.REJECTED
    assert issues and all(c == "INVALID_FIELD" for c, _ in issues)
    assert any(p.startswith("entry[1].resource.interpretation") for _, p in issues)
    assert bad.tables["observation"].num_rows == 0
    assert run(strict, patient()).outcomes[0].status is Status.ACCEPTED


def test_censored_values_are_flagged(ctx) -> None:
    obs = observation("2339-0", 40, "mg/dL")
    obs["valueQuantity"]["comparator"] = "<"
    batch = run(ctx, patient(), obs)
    assert [(i.code, i.field_path) for i in batch.outcomes[1].issues] == [
        ("VALUE_CENSORED", "entry[1].resource.valueQuantity.comparator")
    ]
    assert batch.tables["observation"]["value"].to_pylist() == [40.0]


def test_delete_entries_are_refused_explicitly(ctx) -> None:
    doc = bundle(patient())
    doc["entry"].append({"request": {"method": "DELETE", "url": "Patient/123"}})
    issue = only_issue(normalize_fhir(doc, ctx=ctx, source="test").outcomes[1])
    assert (issue.code, issue.field_path) == ("INVALID_FIELD", "entry[1].request.method")
    assert "append-only" in issue.message


def test_condition_with_icd10_and_snomed_codings(ctx) -> None:
    c = condition(ICD10, "E11.9")
    c["code"]["coding"].insert(0, {"system": "http://snomed.info/sct", "code": "44054006"})
    batch = run(ctx, patient(), c)
    row = batch.tables["condition"].to_pylist()[0]
    assert (row["code_system"], row["code"], row["icd10_code"], row["snomed_code"], row["icd10_mapped"]) == (
        "SNOMED",
        "44054006",
        "E11.9",
        "44054006",
        False,
    )
    assert batch.outcomes[1].status is Status.ACCEPTED  # the ICD-10 coding makes it codable: no flag


def test_icd10_only_condition_gets_the_unique_snomed_concept(ctx_with_map) -> None:
    batch = run(ctx_with_map, patient(), condition(ICD10, "I50.9", rid="a"), condition(ICD10, "I10", rid="b"))
    rows = {r["code"]: r for r in batch.tables["condition"].to_pylist()}
    assert (rows["I50.9"]["snomed_code"], rows["I50.9"]["snomed_mapped"]) == ("88805009", True)
    assert (rows["I10"]["snomed_code"], rows["I10"]["snomed_mapped"]) == ("38341003", True)
    assert [o.status for o in batch.outcomes[1:]] == [Status.ACCEPTED, Status.ACCEPTED]


def test_reference_strings_with_escapes() -> None:
    from healthai.normalize.fhir_resources import reference_strings

    doc = {"a": {"reference": 'Patient/x"y'}, "b": [{"reference": "Patient/back\\slash"},
                                                    {"reference": ""}, {"reference": "é/\n"}],
           "c": {"display": "\"reference\": \"not one\""}, "d": {"reference ": "no"}}
    want = {'Patient/x"y', "Patient/back\\slash", "", "é/\n"}
    assert reference_strings(json.dumps(doc)) == want
    assert reference_strings(json.dumps(doc, indent=1, ensure_ascii=False)) == want



def test_a_coding_system_that_is_not_a_string_is_no_system(ctx) -> None:
    """A list where a system URI belongs: the code is read with no system (never the list's repr)."""
    cond = condition(ICD10, "J10.1")
    cond["code"]["coding"][0]["system"] = [ICD10]
    obs = observation("8480-6", 120.0, "mm[Hg]")
    obs["code"]["coding"][0]["system"] = ["http://loinc.org"]
    batch = run(ctx, patient(), cond, obs)
    for kind in ("condition", "observation"):
        table = batch.tables.get(kind)
        if table is not None and table.num_rows:
            for column in table.column_names:
                values = table[column].to_pylist()
                assert not any(isinstance(v, str) and "['" in v for v in values), (kind, column)
