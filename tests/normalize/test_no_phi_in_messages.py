"""No patient identifier in normalization messages (product rule: none in logs, errors or metrics).

Recognisable names, MRN/SSN-like identifiers, phone numbers, street addresses and birth dates go
into every column of every flat kind and into the fields of FHIR Patient / Encounter / Condition /
Observation (valid and invalid positions, as strings, numbers and objects); none may come back in
an outcome message, field path, resource type or raised error. Codes of a strict syntax (ICD-10-CM
shape, LOINC shape, SNOMED CT id, known units, case variants of enumerated codes) are still quoted.
"""

from __future__ import annotations

import copy
import importlib
import json
import pkgutil
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest

from healthai.errors import InvalidInput
from healthai.normalize import codes, redact
from healthai.normalize.context import NormalizeContext
from healthai.normalize.fhir import normalize_fhir
from healthai.normalize.fhir_elements import ELEMENT_NAMES
from healthai.normalize.flat import INPUT_COLUMNS, normalize_table
from healthai.normalize.records import KINDS, NormalizedBatch
from tests.normalize.conftest import KEY, REFERENCE_DATE
from tests.normalize.fhir_builders import bundle, condition, encounter, observation, patient

NAME = "Zebulon Quixbury"
MRN, SSN, PHONE = "MRN88317731", "999-41-5678", "555-0199-7731"
STREET, BIRTH = "42 Wallaby Way, Springfield", "1961-07-23"
# What must never appear (compared case-insensitively), including the digit-only forms.
NEEDLES = (
    "Zebulon", "Quixbury", "MRN88317731", "88317731", "999-41-5678", "999415678", "555-0199-7731",
    "5550199", "6175550123", "Wallaby", "1961-07", "07/23/1961", "19610723", "23.07.1961",
)  # fmt: skip
PHI_STRINGS = (
    NAME, "Quixbury", MRN, "88317731", SSN, "999415678", PHONE, "6175550123", "(617) 555-0123",
    STREET, BIRTH, "07/23/1961", "19610723", "23.07.1961", f"{BIRTH}T25:61", f"{NAME} {BIRTH}",
    "zebulon", "QUIXBURY",
)  # fmt: skip
PHI_OTHER: tuple[Any, ...] = (88317731, 999415678, 6175550123, 19610723.0, {"text": NAME}, [MRN, SSN])


def _leaks(texts: list[str]) -> list[tuple[str, str]]:
    return [(needle, text) for text in texts for needle in NEEDLES if needle.lower() in text.lower()]


def _texts(batch: NormalizedBatch) -> list[str]:
    out = []
    for o in batch.outcomes:
        out.append(o.resource_type)
        out += [f"{i.message} @ {i.field_path}" for i in o.issues]
    return out


def _run_flat(kind: str, table: pa.Table, ctx: NormalizeContext) -> tuple[list[str], int]:
    """Texts a flat call produced (outcome messages or the raised error) and the issue count."""
    try:
        batch = normalize_table(kind, table, ctx=ctx, source="s")
    except InvalidInput as e:
        return [str(e), e.message, e.field or ""], 1
    return _texts(batch), sum(len(o.issues) for o in batch.outcomes)


# ------------------------------------------------------------------------------------- flat records
_BASE_ROW = {
    "patient": {"patient_id": "p", "sex": "F", "birth_date": "1950-02-03", "state": "MA", "country": "US"},
    "encounter": {"encounter_id": "e", "patient_id": "p", "status": "finished", "class_code": "AMB",
                  "start": "2020-01-01", "end": "2020-01-02", "region": "US-MA"},
    "condition": {"condition_id": "c", "patient_id": "p", "code": "E11.9", "code_system": "ICD10CM",
                  "encounter_id": "e", "clinical_status": "active", "onset": "2020-01-01"},
    "observation": {"observation_id": "o", "patient_id": "p", "loinc": "8480-6", "value": 120.0,
                    "unit": "mm[Hg]", "category": "vital-signs", "effective": "2020-01-01"},
}  # fmt: skip


def _flat_table(kind: str, column: str, values: list[Any]) -> pa.Table:
    rows = []
    for j, v in enumerate(values):
        row = {c: _BASE_ROW[kind].get(c) for c in INPUT_COLUMNS[kind]}
        if column != "patient_id" or kind == "patient":  # unique record ids: no DUPLICATE_ID masking
            row[f"{kind}_id"] = f"{kind[0]}{j}"
        row[column] = v
        rows.append(row)
    return pa.Table.from_pylist(rows)


@pytest.mark.parametrize("kind", KINDS)
def test_flat_every_column_with_identifiers_leaks_nothing(ctx, kind) -> None:
    issues = 0
    for column in INPUT_COLUMNS[kind]:
        for values in (list(PHI_STRINGS), [88317731.0, 999415678.0, 6175550123.0, 19610723.0]):
            texts, n = _run_flat(kind, _flat_table(kind, column, values), ctx)
            assert _leaks(texts) == [], (column, texts)
            issues += n
    assert issues > 2 * len(INPUT_COLUMNS[kind])  # the bad values were seen and reported


@pytest.mark.parametrize("system", ["ICD10CM", "ICD9CM", "SNOMED", "http://hl7.org/fhir/sid/icd-10-cm", None])
def test_flat_condition_codes_with_identifiers_leak_nothing(ctx_with_map, system) -> None:
    n = len(PHI_STRINGS)
    table = pa.table(
        {
            "condition_id": [f"c{j}" for j in range(n)],
            "patient_id": ["p"] * n,
            "code": list(PHI_STRINGS),
            "code_system": [system] * n,
        }
    )
    texts, issues = _run_flat("condition", table, ctx_with_map)
    # every row is flagged: once, or twice when the code is not shaped like one (CODE_NOT_STORED and
    # NOT_STORED: the row is not stored)
    assert _leaks(texts) == [] and n <= issues <= 2 * n


def test_flat_code_system_and_unit_with_identifiers_leak_nothing(ctx) -> None:
    n = len(PHI_STRINGS)
    conditions = pa.table(
        {"condition_id": [f"c{j}" for j in range(n)], "patient_id": ["p"] * n, "code": ["E11.9"] * n,
         "code_system": list(PHI_STRINGS)}
    )  # fmt: skip
    observations = pa.table(
        {"observation_id": [f"o{j}" for j in range(n)], "patient_id": ["p"] * n, "loinc": ["8480-6"] * n,
         "value": [120.0] * n, "unit": list(PHI_STRINGS)}
    )  # fmt: skip
    for kind, table, code in (
        ("condition", conditions, "CODE_SYSTEM_UNKNOWN"),
        ("observation", observations, "UNIT_UNKNOWN"),
    ):
        batch = normalize_table(kind, table, ctx=ctx, source="s")
        assert all(any(i.code == code for i in o.issues) for o in batch.outcomes)
        assert _leaks(_texts(batch)) == []


# ------------------------------------------------------------------------------------ FHIR resources
def _set(resource: dict, path: str, value: Any) -> dict:
    out = copy.deepcopy(resource)
    node: Any = out
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if k.isdigit() else node.setdefault(k, {})
    if keys[-1].isdigit():
        node[int(keys[-1])] = value
    else:
        node[keys[-1]] = value
    return out


_PATIENT_PATHS = (
    "id", "gender", "birthDate", "deceasedDateTime", "deceasedBoolean", "address", "address.0.state",
    "address.0.country", "identifier", "name", "telecom", "resourceType", "managingOrganization.reference",
    "link", "extension",
)  # fmt: skip
_ENCOUNTER_PATHS = (
    "id", "status", "class", "class.code", "subject", "subject.reference", "period", "period.start",
    "period.end", "type", "serviceProvider.reference", "resourceType",
)  # fmt: skip
_CONDITION_PATHS = (
    "id", "code", "code.coding", "code.coding.0.code", "code.coding.0.system", "subject",
    "subject.reference", "encounter", "encounter.reference", "onsetDateTime", "abatementDateTime",
    "recordedDate", "clinicalStatus", "onsetPeriod", "asserter.reference",
)  # fmt: skip
_OBSERVATION_PATHS = (
    "id", "status", "code", "code.coding.0.code", "code.coding.0.system", "subject.reference",
    "encounter.reference", "effectiveDateTime", "valueQuantity", "valueQuantity.value",
    "valueQuantity.unit", "valueQuantity.code", "valueQuantity.comparator", "component", "category",
    "performer", "valueInteger",
)  # fmt: skip


def _resource_cases() -> Iterator[tuple[str, dict, str]]:
    templates = (
        (patient(), _PATIENT_PATHS),
        (encounter(), _ENCOUNTER_PATHS),
        (condition("http://hl7.org/fhir/sid/icd-10-cm", "E11.9"), _CONDITION_PATHS),
        (condition("http://snomed.info/sct", "44054006"), ("code.coding.0.code",)),
        (condition("http://hl7.org/fhir/sid/icd-9-cm", "250.00"), ("code.coding.0.code",)),
        (observation("8480-6", 120, "mm[Hg]"), _OBSERVATION_PATHS),
        (observation("8480-6", 120, "mm[Hg]", ucum=False), ("valueQuantity.unit",)),
        (observation("99999-9", 120, "mm[Hg]"), ("code.coding.0.code", "valueQuantity.unit")),
    )
    for template, paths in templates:
        for path in paths:
            yield template["resourceType"], template, path


def _fhir_entries(template: dict, path: str) -> list[dict]:
    resources = []
    for j, value in enumerate(PHI_STRINGS + PHI_OTHER):
        r = _set(template, path, value)
        if path != "id":
            r["id"] = f"r{j}"
        resources.append(r)
    return resources


@pytest.mark.parametrize("strict", [False, True], ids=["selective", "strict"])
def test_fhir_fields_with_identifiers_leak_nothing(ctx, strict) -> None:
    run_ctx = NormalizeContext.create(key=KEY, reference_date=REFERENCE_DATE, strict_fhir=strict)
    reported = 0
    for rtype, template, path in _resource_cases():
        resources = _fhir_entries(template, path)
        if rtype == "Patient":
            entries = [{"fullUrl": f"urn:uuid:p{j}", "resource": r} for j, r in enumerate(resources)]
        else:  # each one next to a valid Patient its subject resolves to
            entries = [*bundle(patient())["entry"], *({"resource": r} for r in resources)]
        batch = normalize_fhir(
            json.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries}),
            ctx=run_ctx,
            source="s",
        )
        assert _leaks(_texts(batch)) == [], (rtype, path)
        reported += sum(1 for o in batch.outcomes if o.issues)
    assert reported > 500  # the bad values were looked at, not skipped


def test_unknown_keys_holding_references_are_not_echoed_in_field_paths(ctx) -> None:
    res = patient(
        **{
            NAME: {"reference": f"Patient/{MRN}"},
            "extension": [{"url": "http://x", "valueReference": {"reference": f"Patient/{SSN}"}}],
            MRN: [{"reference": f"Practitioner/{PHONE}"}],
        }
    )
    batch = normalize_fhir(json.dumps(bundle(res)), ctx=ctx, source="s")
    paths = sorted(i.field_path for i in batch.outcomes[0].issues if i.code != "UNKNOWN_ELEMENT")
    unknown = sorted(i.field_path for i in batch.outcomes[0].issues if i.code == "UNKNOWN_ELEMENT")
    assert unknown == ["entry[0].resource.*", "entry[0].resource.*"]  # the keys themselves withheld
    assert paths == [
        "entry[0].resource.*.reference",
        "entry[0].resource.*[0].reference",
        "entry[0].resource.extension[0].valueReference.reference",
    ]
    assert _leaks(_texts(batch)) == []
    strict_ctx = NormalizeContext.create(key=KEY, reference_date=REFERENCE_DATE, strict_fhir=True)
    strict = normalize_fhir(json.dumps(bundle(res)), ctx=strict_ctx, source="s")
    extra = [i for i in strict.outcomes[0].issues if "Extra inputs" in i.message]
    assert sorted(i.field_path for i in extra) == ["entry[0].resource.*", "entry[0].resource.*"]
    assert _leaks(_texts(strict)) == []


@pytest.mark.parametrize(
    "doc",
    [
        {"resourceType": NAME},
        {"resourceType": MRN},
        {"resourceType": "Bundle", "type": NAME, "entry": []},
        {"resourceType": "Bundle", "type": BIRTH, "entry": []},
        {"resourceType": "Bundle", "type": {"text": SSN}, "entry": []},
    ],
)
def test_top_level_errors_leak_nothing(ctx, doc) -> None:
    with pytest.raises(InvalidInput) as e:
        normalize_fhir(json.dumps(doc), ctx=ctx, source="s")
    assert _leaks([str(e.value), e.value.field or ""]) == [] and "withheld" in str(e.value)


def test_wrong_resource_type_entry_keeps_no_type_name(ctx) -> None:
    batch = normalize_fhir(json.dumps([{"resourceType": NAME, "id": "x"}]), ctx=ctx, source="s")
    assert batch.outcomes[0].resource_type == ""
    assert batch.outcomes[0].issues[0].message.startswith("resourceType is not a FHIR R4 resource type")


# --------------------------------------------------------------------- what is still echoed
def test_plausible_but_invalid_codes_are_still_quoted(ctx) -> None:
    batch = normalize_fhir(
        json.dumps(
            bundle(
                patient(),
                condition("http://hl7.org/fhir/sid/icd-10-cm", "J10.9X", rid="c1"),
                condition("http://snomed.info/sct", "44054006", rid="c2"),
                observation("8480-5", 120, "mm[Hg]", rid="o1"),
                observation("8867-4", 70, "cm", rid="o2"),
                observation("8480-6", 12000, "mm[Hg]", rid="o3"),
            )
        ),
        ctx=ctx,
        source="s",
    )
    messages = [i.message for o in batch.outcomes for i in o.issues]
    assert "code 'J10.9X' is not in ICD-10-CM" in messages[0]
    assert messages[1].startswith("SNOMED CT code '44054006' has no ICD-10-CM code")
    assert messages[2] == "LOINC code '8480-5' fails the format or mod-10 check digit"
    assert messages[3] == "unit 'cm' cannot be converted to '/min' for LOINC 8867-4"
    assert messages[4] == "systolic_bp 1.2e+04 mm[Hg] is outside the possible range [30, 350]"
    flat = normalize_table(
        "condition",
        pa.table({"condition_id": ["c"], "patient_id": ["p"], "code": ["j10.9x"]}),
        ctx=ctx,
        source="s",
    )
    assert flat.outcomes[0].issues[0].message.startswith("code 'j10.9x' is not in ICD-10-CM")
    gender = normalize_fhir(json.dumps(bundle(patient(gender="Male"))), ctx=ctx, source="s")
    assert gender.outcomes[0].issues[0].message == "gender 'Male' is not one of female|male|other|unknown"


def test_rejected_values_say_what_is_wrong_without_the_value(ctx) -> None:
    two = [patient(gender=NAME), patient(id="p2", birthDate="07/23/1961")]
    batch = normalize_fhir(json.dumps(two), ctx=ctx, source="s")
    (g,), (b,) = (o.issues for o in batch.outcomes)
    assert (
        g.message
        == "gender is not one of female|male|other|unknown (value withheld: free text, 16 characters)"
    )
    assert g.field_path == "[0].gender" and g.code == "INVALID_FIELD"
    assert b.message.startswith("birthDate is not an ISO 8601 date") and b.field_path == "[1].birthDate"


# ------------------------------------------------------------------------------ the helper itself
@pytest.mark.parametrize(
    ("value", "syntax", "ok"),
    [
        ("J10.9X", redact.Syntax.ICD10, True),
        ("e119", redact.Syntax.ICD10, True),
        (MRN, redact.Syntax.ICD10, False),
        (NAME, redact.Syntax.ICD10, False),
        ("250.01", redact.Syntax.ICD9, True),
        ("V45.81", redact.Syntax.ICD9, True),
        (SSN, redact.Syntax.ICD9, False),
        ("8480-5", redact.Syntax.LOINC, True),
        (SSN, redact.Syntax.LOINC, False),
        ("44054006", redact.Syntax.SNOMED, True),
        ("38341003", redact.Syntax.SNOMED, True),
        ("195662009", redact.Syntax.SNOMED, True),
        ("44054007", redact.Syntax.SNOMED, False),  # Verhoeff check digit wrong
        ("999415678", redact.Syntax.SNOMED, False),
        ("6175550123", redact.Syntax.SNOMED, False),
        ("mmHg", redact.Syntax.UNIT, True),
        ("Wallaby", redact.Syntax.UNIT, False),
        (88317731, redact.Syntax.SNOMED, False),
        ("Male", frozenset({"male", "female"}), True),
        (NAME, frozenset({"male", "female"}), False),
    ],
)
def test_echoable(value, syntax, ok) -> None:
    assert redact.echoable(value, syntax) is ok


def test_numbers_and_keys() -> None:
    assert redact.number(98.6) == "98.6" and redact.number(88317731.0) == "8.832e+07"
    assert redact.field_key("valueReference") == "valueReference" and redact.field_key(NAME) == "*"
    assert redact.withheld({"a": 1}) == "(value withheld: a JSON object)"
    assert codes.canonical_icd10("J10.9X", codes.icd10_codes()) is None  # shape-valid, not in the set


def _element_names_from_models() -> set[str]:
    import fhir.resources.R4B as r4b

    names: set[str] = set()
    for info in pkgutil.iter_modules(r4b.__path__):
        if info.name.startswith(("tests", "fhirtypes")):
            continue
        module = importlib.import_module(f"fhir.resources.R4B.{info.name}")
        for obj in vars(module).values():
            if isinstance(obj, type) and hasattr(obj, "model_fields") and obj.__module__ == module.__name__:
                names.update(f.alias or n for n, f in obj.model_fields.items())
    return names


def test_element_names_match_the_installed_fhir_models() -> None:
    assert _element_names_from_models() == ELEMENT_NAMES
