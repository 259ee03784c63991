"""All 23 Synthea bundles: every resource accounted for, counts per type, no identifiers in the output."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from healthai.normalize.fhir import normalize_fhir
from healthai.normalize.records import SCHEMAS, Status

# From /work/shared/data/fhir/README.md ("Contents").
EXPECTED_TYPES = {
    "Observation": 2886,
    "Claim": 662,
    "Encounter": 463,
    "ExplanationOfBenefit": 463,
    "Procedure": 252,
    "Immunization": 218,
    "DiagnosticReport": 210,
    "MedicationRequest": 199,
    "Condition": 168,
    "CarePlan": 52,
    "Goal": 39,
    "Organization": 35,
    "Practitioner": 35,
    "Patient": 23,
    "ImagingStudy": 14,
    "AllergyIntolerance": 5,
}
STORED = {"Patient", "Encounter", "Condition", "Observation"}
BP_PANELS = 169
_HEX64 = re.compile(r"^[0-9a-f]{64}(#.*)?$")


@pytest.fixture(scope="module")
def normalized(bundle_paths, ctx):
    return [(p, normalize_fhir(p.read_bytes(), ctx=ctx, source="synthea")) for p in bundle_paths]


def test_every_resource_has_one_outcome_and_counts_match_the_readme(normalized) -> None:
    types: Counter[str] = Counter()
    statuses: Counter[Status] = Counter()
    for path, batch in normalized:
        n_entries = len(json.loads(path.read_bytes())["entry"])
        assert [o.index for o in batch.outcomes] == list(range(n_entries))
        for o in batch.outcomes:
            types[o.resource_type] += 1
            statuses[o.status] += 1
    assert dict(types) == EXPECTED_TYPES
    assert statuses[Status.REJECTED] == 0
    not_stored = sum(v for k, v in EXPECTED_TYPES.items() if k not in STORED)
    for _, batch in normalized:
        for o in batch.outcomes:
            if o.resource_type not in STORED:
                assert [i.code for i in o.issues] == ["RESOURCE_TYPE_NOT_STORED"]
    assert not_stored == sum(1 for _, b in normalized for o in b.outcomes if o.resource_type not in STORED)


def test_row_counts_per_kind(normalized) -> None:
    rows = Counter()
    for _, batch in normalized:
        for kind, table in batch.tables.items():
            assert table.schema.equals(SCHEMAS[kind])
            rows[kind] += table.num_rows
    # BP panels become two component rows each (systolic + diastolic), the panel itself no row.
    assert rows == {
        "patient": 23,
        "encounter": 463,
        "condition": 168,
        "observation": 2886 - BP_PANELS + 2 * BP_PANELS,
    }


def test_blood_pressure_components_and_canonical_units(normalized) -> None:
    obs = pa.concat_tables(b.tables["observation"] for _, b in normalized)
    sbp = obs.filter(pa.compute.equal(obs["loinc"], "8480-6"))
    assert sbp.num_rows == BP_PANELS
    assert set(sbp["panel_loinc"].to_pylist()) == {"55284-4"}
    assert set(sbp["unit"].to_pylist()) == {"mm[Hg]"}
    assert all(r.endswith("#8480-6") for r in sbp["record_key"].to_pylist())
    assert obs["record_key"].to_pylist().__len__() == len(set(obs["record_key"].to_pylist()))
    egfr = obs.filter(pa.compute.equal(obs["loinc"], "33914-3"))
    assert set(egfr["unit"].to_pylist()) == {"mL/min/{1.73_m2}"}  # 'mL/min' spelling normalized


def test_conditions_are_kept_and_flagged_unmapped_without_a_map(normalized) -> None:
    cond = pa.concat_tables(b.tables["condition"] for _, b in normalized)
    assert set(cond["code_system"].to_pylist()) == {"SNOMED"}
    assert cond["icd10_code"].null_count == cond.num_rows
    flagged = [o for _, b in normalized for o in b.outcomes if o.resource_type == "Condition"]
    assert all(o.status is Status.ACCEPTED_WITH_WARNINGS for o in flagged)
    # DATE_GENERALIZED: conditions with onset on the birth date (dates policy)
    assert {i.code for o in flagged for i in o.issues} <= {"CODE_UNMAPPED", "DATE_GENERALIZED"}
    assert all(any(i.code == "CODE_UNMAPPED" for i in o.issues) for o in flagged)


def test_with_the_fixture_map_conditions_get_icd10(bundle_paths, ctx_with_map) -> None:
    dirk = next(p for p in bundle_paths if p.name.startswith("Dirk_Kuhlman"))
    batch = normalize_fhir(dirk.read_bytes(), ctx=ctx_with_map, source="synthea")
    cond = batch.tables["condition"].to_pylist()
    mapped: dict[str, set[str]] = {}
    for r in cond:
        if r["icd10_mapped"]:
            mapped.setdefault(r["snomed_code"], set()).add(r["icd10_code"])
    assert mapped["44054006"] == {"E11.9"}
    assert mapped["127013003"] == {"E11.21", "N18.9"}  # two map groups: both apply, one row each
    renal = [r for r in cond if r["snomed_code"] == "127013003"]
    assert sorted(r["record_key"].endswith("#group2") for r in renal) == [False, True] * (len(renal) // 2)


def test_region_and_generalized_birth_dates(normalized) -> None:
    patients = pa.concat_tables(b.tables["patient"] for _, b in normalized)
    assert set(patients["region"].to_pylist()) == {"US-MA"}
    assert sorted(patients["birth_year"].to_pylist())[0] == 1920
    assert patients["deceased"].to_pylist().count(True) == 10
    obs = pa.concat_tables(b.tables["observation"] for _, b in normalized)
    assert obs["region"].null_count == 0


def _identifying_strings(resource: dict) -> set[str]:
    out: set[str] = {resource["id"]}
    for name in resource.get("name", []):
        out |= {*name.get("given", []), name.get("family", ""), *name.get("prefix", [])}
    out |= {i["value"] for i in resource.get("identifier", [])}
    out |= {t["value"] for t in resource.get("telecom", [])}
    for a in resource.get("address", []):
        out |= {*a.get("line", []), a.get("city", ""), a.get("postalCode", "")}
    for ext in resource.get("extension", []):
        if "valueString" in ext and "mothersMaidenName" in ext["url"]:
            out.add(ext["valueString"])
        if "valueAddress" in ext:
            out.add(ext["valueAddress"].get("city", ""))
    return {s for s in out if len(s) >= 4}


def test_no_identifier_name_or_address_appears_in_any_output(normalized) -> None:
    secrets: set[str] = set()
    for path, _ in normalized:
        for entry in json.loads(Path(path).read_bytes())["entry"]:
            if entry["resource"]["resourceType"] == "Patient":
                secrets |= _identifying_strings(entry["resource"])
    assert len(secrets) > 23 * 8
    cells: list[str] = []
    for _, batch in normalized:
        for table in batch.tables.values():
            for col in table.columns:
                for v in col.to_pylist():
                    values = v if isinstance(v, list) else [v]
                    # strings only: a postal code "matches" inside a float like 0.0180123 by chance
                    cells += [x for x in values if isinstance(x, str) and not _HEX64.match(x)]
        cells += [o.source_id for o in batch.outcomes if not _HEX64.match(o.source_id)]
        cells += [i.message + " " + i.field_path for o in batch.outcomes for i in o.issues]
    blob = "\n".join(cells)
    leaked = sorted(s for s in secrets if s in blob)
    assert leaked == []


def test_pseudonyms_are_stable_and_keyed(bundle_paths, ctx) -> None:
    from healthai.normalize.context import NormalizeContext

    data = bundle_paths[0].read_bytes()
    a = normalize_fhir(data, ctx=ctx, source="synthea").tables["patient"]["patient_id"].to_pylist()
    b = normalize_fhir(data, ctx=ctx, source="synthea").tables["patient"]["patient_id"].to_pylist()
    other = NormalizeContext.create(key=b"another-key-0123456789abcdef")
    c = normalize_fhir(data, ctx=other, source="synthea").tables["patient"]["patient_id"].to_pylist()
    assert a == b
    assert a != c
