"""Lab conventions of other countries and EHRs: mass concentrations in g/L and mg/L (France, Belgium),
HbA1c in IFCC mmol/mol, body weight coded as 3141-9 (InterSystems IRIS, OpenMRS)."""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pytest

from healthai.normalize import features, units
from healthai.normalize.features_batch import features_frame
from healthai.normalize.fhir import normalize_fhir
from healthai.normalize.flat import normalize_table
from healthai.normalize.records import Status
from tests.normalize.fhir_builders import bundle, observation, patient

HBA1C_CODES = features.LAB_CODES["hba1c_pct"]


def run(ctx, *resources):
    return normalize_fhir(json.dumps(bundle(*resources)), ctx=ctx, source="test")


# --- 1. mass concentrations convert to each other, whatever the canonical mass unit -------------


@pytest.mark.parametrize(
    ("loinc", "value", "unit", "expected", "target"),
    [
        ("2345-7", 1.05, "g/L", 105.0, "mg/dL"),  # glucose, France
        ("2093-3", 2.1, "g/L", 210.0, "mg/dL"),  # total cholesterol
        ("2571-8", 1.5, "g/l", 150.0, "mg/dL"),  # triglycerides
        ("2160-0", 9.0, "mg/L", 0.9, "mg/dL"),  # creatinine, Belgium
        ("2160-0", 9.0, "mg/l", 0.9, "mg/dL"),
        ("718-7", 132.0, "g/L", 13.2, "g/dL"),  # hemoglobin
        ("2345-7", 0.0055, "mol/L", 99.088, "mg/dL"),  # molar → mass through the molar mass
    ],
)
def test_fhir_mass_concentrations_are_converted(ctx, loinc, value, unit, expected, target) -> None:
    batch = run(ctx, patient(), observation(loinc, value, unit))
    assert batch.outcomes[1].status is Status.ACCEPTED, batch.outcomes[1].issues
    assert not batch.outcomes[1].issues  # valid UCUM: no UNIT_NOT_UCUM
    row = batch.tables["observation"].to_pylist()[0]
    assert (row["value"], row["unit"], row["original_unit"]) == (pytest.approx(expected), target, unit)


@pytest.mark.parametrize(
    ("loinc", "value", "unit", "expected", "read_as"),
    [
        ("2160-0", 900.0, "ug/dL", 0.9, None),
        ("2160-0", 9.0, "ug/mL", 0.9, None),
        ("2160-0", 900.0, "µg/dL", 0.9, "ug/dL"),  # µ is not UCUM's micro
        ("718-7", 13200.0, "mg/dL", 13.2, None),
        ("2951-2", 0.14, "mol/L", 140.0, None),
    ],
)
def test_other_concentration_units(loinc, value, unit, expected, read_as) -> None:
    assert units.convert(loinc, value, unit)[0] == pytest.approx(expected)
    assert units.non_ucum(unit) == read_as


def test_flat_table_converts_g_per_litre_and_ifcc(ctx) -> None:
    t = pa.table(
        {
            "observation_id": ["a", "b", "c"],
            "patient_id": ["p", "p", "p"],
            "loinc": ["2345-7", "2160-0", "4548-4"],
            "value": [1.05, 9.0, 48.0],
            "unit": ["g/L", "mg/L", "mmol/mol"],
        }
    )
    b = normalize_table("observation", t, ctx=ctx, source="s")
    rows = b.tables["observation"].to_pylist()
    assert [(r["value"], r["unit"]) for r in rows] == [
        (pytest.approx(105.0), "mg/dL"),
        (pytest.approx(0.9), "mg/dL"),
        (pytest.approx(6.54304), "%"),
    ]


# --- 2. HbA1c in IFCC mmol/mol → NGSP % (only for HbA1c codes) ----------------------------------


@pytest.mark.parametrize("loinc", HBA1C_CODES)
def test_fhir_hba1c_in_ifcc_units_is_converted_to_ngsp_percent(ctx, loinc) -> None:
    batch = run(ctx, patient(), observation(loinc, 48, "mmol/mol"))
    assert batch.outcomes[1].status is Status.ACCEPTED, batch.outcomes[1].issues
    row = batch.tables["observation"].to_pylist()[0]
    assert (row["value"], row["unit"]) == (pytest.approx(6.543, abs=5e-4), "%")
    assert row["value"] == pytest.approx(0.09148 * 48 + 2.152)


def test_ifcc_code_in_percent_passes_through(ctx) -> None:
    assert "59261-8" in HBA1C_CODES and units.CANONICAL["59261-8"].unit == "%"
    row = run(ctx, patient(), observation("59261-8", 6.5, "%")).tables["observation"].to_pylist()[0]
    assert (row["value"], row["unit"]) == (6.5, "%")


def test_ifcc_conversion_applies_to_no_other_analyte(ctx) -> None:
    batch = run(ctx, patient(), observation("2345-7", 48, "mmol/mol"))
    assert batch.outcomes[1].status is Status.REJECTED
    assert [i.code for i in batch.outcomes[1].issues] == ["UNIT_INCOMPATIBLE"]
    for loinc in set(units.CANONICAL) - set(HBA1C_CODES):
        with pytest.raises(units.UnitError) as e:
            units.conversion(loinc, "mmol/mol")
        assert e.value.code == "UNIT_INCOMPATIBLE", loinc
    with pytest.raises(units.UnitError) as e:
        units.convert("4548-4", 6.0, "mmol/L")  # mmol/L is not mmol/mol
    assert e.value.code == "UNIT_INCOMPATIBLE"


# --- 3. BMI from a 3141-9 (measured) body weight --------------------------------------------------


def _tables(ctx, *obs: dict) -> dict[str, pa.Table]:
    return normalize_fhir(bundle(patient(), *obs), ctx=ctx, source="t").tables


def _bmi_both_ways(t: dict[str, pa.Table]) -> tuple[float, float]:
    at = dt.date(2021, 1, 1)
    one = features.patient_features(t["patient"].to_pylist()[0], observations=t["observation"], at=at)
    frame = features_frame(t["patient"], observations=t["observation"], at=at)
    return one["bmi"], float(frame["bmi"].iloc[0])


def test_bmi_from_a_measured_body_weight(ctx) -> None:
    t = _tables(ctx, observation("3141-9", 80, "kg", rid="w"), observation("8302-2", 180, "cm", rid="h"))
    assert _bmi_both_ways(t) == pytest.approx((80 / 1.8**2, 80 / 1.8**2))


def test_bmi_uses_the_latest_weight_of_either_code(ctx) -> None:
    later = {"effectiveDateTime": "2020-06-01T10:00:00+00:00"}
    for first, second in (("29463-7", "3141-9"), ("3141-9", "29463-7")):
        t = _tables(
            ctx,
            observation(first, 70, "kg", rid="w1"),
            observation(second, 90, "kg", rid="w2", **later),
            observation("8302-2", 180, "cm", rid="h"),
        )
        assert _bmi_both_ways(t) == pytest.approx((90 / 1.8**2, 90 / 1.8**2)), (first, second)
