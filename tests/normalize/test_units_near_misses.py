"""Near misses of units: a Quantity's UCUM code under UCUM's OID or a near-miss URI, a code and a display
unit that disagree, upper-case units that are ambiguous once their case is ignored (MM, G/L), and valid
UCUM units the conversion table did not know (K, mg)."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from healthai.normalize import units
from healthai.normalize.fhir import normalize_fhir
from healthai.normalize.flat import normalize_table
from healthai.normalize.records import Status
from tests.normalize.fhir_builders import bundle, observation, patient

GLUCOSE, HEIGHT, TEMPERATURE, WBC = "2345-7", "8302-2", "8310-5", "6690-2"


def run(ctx, *resources):
    return normalize_fhir(json.dumps(bundle(*resources)), ctx=ctx, source="test")


def glucose_quantity(system: str | None, code: str | None, unit: str) -> dict:
    obs = observation(GLUCOSE, 5.5, unit, ucum=False)
    q = obs["valueQuantity"]
    q.update({k: v for k, v in (("system", system), ("code", code)) if v is not None})
    return obs


def codes(outcome) -> list[str]:
    return sorted(i.code for i in outcome.issues)


# --- 1. UCUM's OID and near misses of its URI: the code is read -------------------------------------


@pytest.mark.parametrize("system", ["http://unitsofmeasure.org", "urn:oid:2.16.840.1.113883.6.8",
                                    "http://unitsofmeasure.org/", "https://unitsofmeasure.org",
                                    " http://unitsofmeasure.org "])
def test_ucum_code_is_read_under_the_oid_and_near_miss_uris(ctx, system) -> None:
    batch = run(ctx, patient(), glucose_quantity(system, "mmol/L", "mg/dL"))
    row = batch.tables["observation"].to_pylist()[0]
    assert (row["value"], row["unit"]) == (pytest.approx(99.088), "mg/dL")  # 5.5 mmol/L, never 5.5 mg/dL
    assert codes(batch.outcomes[1]) == ["UNIT_CONFLICT"]


def test_ucum_code_under_a_near_miss_uri_with_a_descriptive_display(ctx) -> None:
    obs = glucose_quantity("https://unitsofmeasure.org", "mmol/L", "millimoles per liter")
    batch = run(ctx, patient(), obs)
    row = batch.tables["observation"].to_pylist()[0]
    assert (row["value"], row["unit"]) == (pytest.approx(99.088), "mg/dL")
    assert batch.outcomes[1].status is Status.ACCEPTED


@pytest.mark.parametrize("system", [None, "http://example.org/units"])
def test_code_and_display_that_disagree_without_ucum_are_never_read_by_the_display(ctx, system) -> None:
    batch = run(ctx, patient(), glucose_quantity(system, "mmol/L", "mg/dL"))
    row = batch.tables["observation"].to_pylist()[0]
    assert (row["value"], row["unit"], row["original_value"]) == (None, None, 5.5)
    issue = next(i for i in batch.outcomes[1].issues if i.code == "UNIT_CONFLICT")
    assert "neither is read" in issue.message and issue.field_path.endswith("valueQuantity.unit")


def test_code_and_display_that_agree_without_ucum_are_read(ctx) -> None:
    batch = run(ctx, patient(), glucose_quantity(None, "mg/dL", "mg/dL"))
    row = batch.tables["observation"].to_pylist()[0]
    assert (row["value"], row["unit"]) == (5.5, "mg/dL") and not batch.outcomes[1].issues


def test_is_ucum_system() -> None:
    assert units.is_ucum_system("urn:oid:2.16.840.1.113883.6.8")
    assert units.is_ucum_system("https://unitsofmeasure.org/")
    assert not units.is_ucum_system("http://loinc.org") and not units.is_ucum_system(None)


# --- 2. case folding never changes a unit's dimension -----------------------------------------------


def test_ambiguous_upper_case_units_are_not_guessed() -> None:
    assert units.readings("MM") == ("mm", "mmol/L") and units.ucum("MM") is None
    assert units.readings("G/L") == ("g/L", "10*9/L") and units.ucum("G/L") is None
    assert units.ucum("mm") == "mm" and units.ucum("mM") == "mmol/L" and units.ucum("g/L") == "g/L"
    assert units.ucum("MG/DL") == "mg/dL"  # unambiguous: still read


def test_the_codes_dimension_picks_the_reading() -> None:
    assert units.convert(HEIGHT, 1750.0, "MM") == (pytest.approx(175.0), "cm")
    assert units.convert(GLUCOSE, 1.0, "G/L") == (pytest.approx(100.0), "mg/dL")
    assert units.non_ucum("MM", HEIGHT) == "mm" and units.non_ucum("MM") is None


def test_an_ambiguous_unit_of_a_code_without_a_canonical_unit_is_withheld() -> None:
    with pytest.raises(units.UnitError) as e:
        units.conversion(WBC, "G/L")
    assert e.value.code == "UNIT_UNKNOWN" and "ambiguous" in str(e.value)


def test_fhir_ambiguous_units(ctx) -> None:
    batch = run(ctx, patient(), observation(HEIGHT, 1750, "MM", "h1"), observation(WBC, 7.5, "G/L", "w1"))
    height, wbc = batch.tables["observation"].to_pylist()
    assert (height["value"], height["unit"]) == (pytest.approx(175.0), "cm")
    assert codes(batch.outcomes[1]) == ["UNIT_NOT_UCUM"]
    assert (wbc["value"], wbc["unit"], wbc["original_value"]) == (None, None, 7.5)  # never relabelled g/L
    assert codes(batch.outcomes[2]) == ["UNIT_UNKNOWN"]


def test_flat_ambiguous_units(ctx) -> None:
    t = pa.table({"observation_id": ["h1", "w1"], "patient_id": ["p", "p"], "loinc": [HEIGHT, WBC],
                  "value": [1750.0, 7.5], "unit": ["MM", "G/L"]})
    b = normalize_table("observation", t, ctx=ctx, source="s")
    rows = b.tables["observation"].to_pylist()
    assert [(r["value"], r["unit"]) for r in rows] == [(pytest.approx(175.0), "cm"), (None, None)]
    assert b.outcomes[0].status is not Status.REJECTED  # not mmol/L
    assert b.outcomes[1].status is Status.ACCEPTED_WITH_WARNINGS and codes(b.outcomes[1]) == ["UNIT_UNKNOWN"]


# --- 3. valid UCUM units: recognised, converted or incompatible, never free text --------------------


def test_kelvin_converts_to_celsius(ctx) -> None:
    batch = run(ctx, patient(), observation(TEMPERATURE, 310.15, "K"))
    row = batch.tables["observation"].to_pylist()[0]
    assert (row["value"], row["unit"]) == (pytest.approx(37.0), "Cel")
    assert batch.outcomes[1].status is Status.ACCEPTED


@pytest.mark.parametrize(("loinc", "unit"), [(GLUCOSE, "mg"), (GLUCOSE, "mL"), (HEIGHT, "K"),
                                             (TEMPERATURE, "mg")])
def test_a_ucum_unit_of_another_dimension_is_incompatible(ctx, loinc, unit) -> None:
    batch = run(ctx, patient(), observation(loinc, 100, unit))
    assert batch.outcomes[1].status is Status.REJECTED
    assert codes(batch.outcomes[1]) == ["UNIT_INCOMPATIBLE"]


@pytest.mark.parametrize(("loinc", "value", "unit", "expected"), [
    ("29463-7", 70e6, "mg", 70.0), ("2345-7", 5.5e6, "nmol/L", 99.088), ("2160-0", 9000.0, "ng/mL", 0.9),
])
def test_other_ucum_units_convert(loinc, value, unit, expected) -> None:
    assert units.convert(loinc, value, unit)[0] == pytest.approx(expected)
