"""Observations shaped like the US Core / HL7 R4 examples: calcium in meq/L, repeated component codes,
valid UCUM spellings (no UNIT_NOT_UCUM), grouping panels with hasMember (no VALUE_MISSING)."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from healthai.normalize import units
from healthai.normalize.fhir import normalize_fhir
from healthai.normalize.flat import normalize_table
from healthai.normalize.records import Status
from tests.normalize.fhir_builders import bp_panel, bundle, observation, patient

LOINC = "http://loinc.org"
CALCIUM_MG_DL = 2.3 * 4.008  # 2.3 mmol/L calcium (4.6 meq/L) in mg/dL: 9.2184


def run(ctx, *resources):
    return normalize_fhir(json.dumps(bundle(*resources)), ctx=ctx, source="test")


def codes_of(outcome) -> list[str]:
    return [i.code for i in outcome.issues]


# --- 1. meq/L → mmol/L through the ion's charge --------------------------------------------------


@pytest.mark.parametrize(
    ("loinc", "value", "unit", "expected", "target"),
    [
        ("17861-6", 4.6, "meq/L", CALCIUM_MG_DL, "mg/dL"),  # calcium is divalent: 4.6 meq/L = 2.3 mmol/L
        ("49765-1", 4.6, "meq/L", CALCIUM_MG_DL, "mg/dL"),
        ("17861-6", 4.6, "mEq/L", CALCIUM_MG_DL, "mg/dL"),
        ("17861-6", 2.3, "mmol/L", CALCIUM_MG_DL, "mg/dL"),
        ("2951-2", 140.0, "meq/L", 140.0, "mmol/L"),  # monovalent: 1:1
        ("2951-2", 140.0, "mEq/L", 140.0, "mmol/L"),
        ("2823-3", 4.1, "meq/l", 4.1, "mmol/L"),
        ("2069-3", 102.0, "meq/L", 102.0, "mmol/L"),
        ("20565-8", 24.0, "meq/L", 24.0, "mmol/L"),
        ("1234-5", 3.0, "mEq/L", 3.0, "meq/L"),  # unknown analyte: charge unknown, respelled only
    ],
)
def test_equivalents_use_the_ion_charge(loinc, value, unit, expected, target) -> None:
    got, unit_out = units.convert(loinc, value, unit)
    assert got == pytest.approx(expected, rel=1e-3)
    assert unit_out == target


def test_equivalents_of_a_non_ion_are_incompatible() -> None:
    with pytest.raises(units.UnitError) as e:
        units.convert("2345-7", 5.0, "meq/L")  # glucose carries no charge
    assert e.value.code == "UNIT_INCOMPATIBLE"


def test_fhir_calcium_in_meq_is_halved_to_mmol(ctx) -> None:
    batch = run(ctx, patient(), observation("17861-6", 4.6, "meq/L", rid="ca"),
                observation("2951-2", 140, "meq/L", rid="na"))
    rows = {r["loinc"]: r for r in batch.tables["observation"].to_pylist()}
    assert (rows["17861-6"]["value"], rows["17861-6"]["unit"]) == (pytest.approx(CALCIUM_MG_DL), "mg/dL")
    assert (rows["2951-2"]["value"], rows["2951-2"]["unit"]) == (140.0, "mmol/L")
    assert [o.status for o in batch.outcomes[1:]] == [Status.ACCEPTED] * 2  # meq/L is UCUM


def test_flat_calcium_in_meq_is_halved_to_mmol(ctx) -> None:
    t = pa.table({"observation_id": ["a", "b"], "patient_id": ["p", "p"], "loinc": ["17861-6", "2951-2"],
                  "value": [4.6, 140.0], "unit": ["mEq/L", "mEq/L"]})
    rows = normalize_table("observation", t, ctx=ctx, source="s").tables["observation"].to_pylist()
    assert [(r["value"], r["unit"]) for r in rows] == [(pytest.approx(CALCIUM_MG_DL), "mg/dL"),
                                                       (140.0, "mmol/L")]


# --- 2. repeated component codes get unique record keys -----------------------------------------


def _component(code: str, value: float) -> dict:
    return {"code": {"coding": [{"system": LOINC, "code": code}]},
            "valueQuantity": {"value": value, "unit": "mmHg", "system": "http://unitsofmeasure.org",
                              "code": "mm[Hg]"}}


def test_repeated_component_code_gets_a_unique_key(ctx) -> None:
    panel = bp_panel("85354-9", 109, 44)
    panel["component"].append(_component("8480-6", 111))
    batch = run(ctx, patient(), panel)
    rows = batch.tables["observation"].to_pylist()
    rid = rows[0]["resource_id"]
    assert [(r["record_key"], r["value"]) for r in rows] == [
        (f"{rid}#8480-6", 109.0), (f"{rid}#8462-4", 44.0), (f"{rid}#8480-6#2", 111.0)
    ]
    assert batch.outcomes[1].status is Status.ACCEPTED


def test_unique_component_codes_keep_their_keys(ctx) -> None:
    rows = run(ctx, patient(), bp_panel("85354-9", 120, 80)).tables["observation"].to_pylist()
    assert [r["record_key"] for r in rows] == [f"{rows[0]['resource_id']}#{c}" for c in ("8480-6", "8462-4")]


# --- 3. valid UCUM spellings do not warn; values and units are unchanged -------------------------


@pytest.mark.parametrize(
    ("loinc", "unit", "value", "expected", "target"),
    [
        ("8867-4", "{beats}/min", 72, 72.0, "/min"),
        ("9279-1", "{breaths}/min", 16, 16.0, "/min"),
        ("8867-4", "1/min", 72, 72.0, "/min"),
        ("2951-2", "meq/L", 140, 140.0, "mmol/L"),
        ("2345-7", "mg/dl", 99, 99.0, "mg/dL"),
        ("2345-7", "mmol/l", 5.5, 99.088, "mg/dL"),
        ("2160-0", "umol/l", 88.4, 0.99998, "mg/dL"),
        ("718-7", "g/l", 140, 14.0, "g/dL"),
        ("39156-5", "kg/m2", 24, 24.0, "kg/m2"),
        ("2345-7", "mM", 5.5, 99.088, "mg/dL"),
    ],
)
def test_valid_ucum_spellings_do_not_warn(ctx, loinc, unit, value, expected, target) -> None:
    assert units.non_ucum(unit) is None
    batch = run(ctx, patient(), observation(loinc, value, unit))
    assert batch.outcomes[1].status is Status.ACCEPTED, batch.outcomes[1].issues
    row = batch.tables["observation"].to_pylist()[0]
    assert (row["value"], row["unit"], row["original_unit"]) == (pytest.approx(expected), target, unit)


@pytest.mark.parametrize(
    ("loinc", "unit", "value", "expected", "target", "read_as"),
    [
        ("8867-4", "bpm", 72, 72.0, "/min", "/min"),
        ("2951-2", "mEq/L", 140, 140.0, "mmol/L", "meq/L"),
        ("17861-6", "mEq/L", 4.6, CALCIUM_MG_DL, "mg/dL", "meq/L"),
        ("8480-6", "mmHg", 120, 120.0, "mm[Hg]", "mm[Hg]"),
        ("2345-7", "MG/DL", 99, 99.0, "mg/dL", "mg/dL"),
        ("2160-0", "µmol/l", 88.4, 0.99998, "mg/dL", "umol/L"),
        ("8310-5", "C", 37, 37.0, "Cel", "Cel"),  # C is the coulomb in UCUM
    ],
)
def test_non_ucum_spellings_still_warn(ctx, loinc, unit, value, expected, target, read_as) -> None:
    assert units.non_ucum(unit) == read_as
    batch = run(ctx, patient(), observation(loinc, value, unit))
    assert codes_of(batch.outcomes[1]) == ["UNIT_NOT_UCUM"]
    row = batch.tables["observation"].to_pylist()[0]
    assert (row["value"], row["unit"]) == (pytest.approx(expected, rel=1e-3), target)


# --- 4. grouping panels (hasMember) need no value ----------------------------------------------


def _vitals_panel(**extra) -> dict:
    panel = observation("85353-1", None, "", rid="vs", **extra)
    del panel["valueQuantity"]
    return panel


def test_grouping_panel_with_members_needs_no_value(ctx) -> None:
    hr = observation("8867-4", 72, "/min", rid="hr")
    panel = _vitals_panel(hasMember=[{"reference": "urn:uuid:hr"}])
    batch = run(ctx, patient(), hr, panel)
    assert batch.outcomes[2].status is Status.ACCEPTED, batch.outcomes[2].issues
    # the panel keeps its own null-valued row (every accepted record is stored); its member has its own
    rows = batch.tables["observation"].to_pylist()
    assert [(r["loinc"], r["value"], r["data_absent_reason"]) for r in rows] == [
        ("8867-4", 72.0, None), ("85353-1", None, None)
    ]


def test_observation_without_value_or_members_still_warns(ctx) -> None:
    batch = run(ctx, patient(), _vitals_panel())
    assert codes_of(batch.outcomes[1]) == ["VALUE_MISSING"]
    row = batch.tables["observation"].to_pylist()[0]
    assert (row["loinc"], row["value"]) == ("85353-1", None)
