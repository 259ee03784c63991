"""Free text never reaches the store through coded columns or units, and censored results keep their
comparator, in the flat and the FHIR path alike."""

from __future__ import annotations

import json

import pyarrow as pa

from healthai.normalize.fhir import normalize_fhir
from healthai.normalize.flat import normalize_table
from healthai.normalize.records import Status

from .fhir_builders import bundle, observation, patient


def _issues(outcome) -> list[str]:
    return [i.code for i in outcome.issues]


def test_flat_coded_columns_keep_codes_and_drop_text(ctx) -> None:
    obs = pa.table({
        "observation_id": ["o1", "o2", "o3", "o4"], "patient_id": ["p1"] * 4,
        "loinc": ["2160-0", "2160-0", "99999-9", "2345-7"], "value": ["1.1", "<0.3", "4", ">= 600"],
        "unit": ["mg/dL", "mg/dL", "Marguerite", "mg/dL"],
        "status": ["final", "FINAL", "H-4471", "final"],
        "category": ["laboratory", "Quenneville-Ostrowski", "laboratory", "Laboratory"],
    })
    b = normalize_table("observation", obs, ctx=ctx, source="s")
    assert [o.status for o in b.outcomes][2] == Status.REJECTED  # a status that is not one: as FHIR
    assert "VALUE_CENSORED" in _issues(b.outcomes[1]) and "INVALID_FIELD" in _issues(b.outcomes[1])
    got = [(r["value"], r["value_comparator"], r["status"], r["category"]) for r in
           b.tables["observation"].to_pylist()]
    assert got == [(1.1, None, "final", "laboratory"), (0.3, "<", "final", None),
                   (600.0, ">=", "final", "laboratory")]
    assert "Marguerite" not in str(b.tables) and "Quenneville" not in str(b.tables)
    assert "H-4471" not in str(b.tables) and "H-4471" not in str([o.issues for o in b.outcomes])


def test_flat_unit_text_that_is_no_unit_is_not_stored(ctx) -> None:
    obs = pa.table({"observation_id": ["a", "b", "c"], "patient_id": ["p1"] * 3,
                    "loinc": ["99999-9", "99999-9", "2345-7"], "value": [1.0, 2.0, 3.0],
                    "unit": ["Marguerite", "furlongs", "Marguerite"]})
    b = normalize_table("observation", obs, ctx=ctx, source="s")
    rows = b.tables["observation"].to_pylist()
    assert [(r["unit"], r["original_unit"]) for r in rows] == [(None, None), ("furlongs", "furlongs"),
                                                               (None, None)]
    assert [sorted(_issues(o)) for o in b.outcomes] == [["LOINC_INVALID", "UNIT_UNKNOWN"], ["LOINC_INVALID"],
                                                        ["UNIT_UNKNOWN"]]


def test_flat_condition_and_encounter_codes(ctx) -> None:
    cond = pa.table({"condition_id": ["c1", "c2"], "patient_id": ["p1", "p1"], "code": ["J10.1", "J10.1"],
                     "clinical_status": ["Active", "Marguerite"],
                     "verification_status": ["refuted", "confirmed"]})
    rows = normalize_table("condition", cond, ctx=ctx, source="s").tables["condition"].to_pylist()
    assert [(r["clinical_status"], r["verification_status"]) for r in rows] == [
        ("active", "refuted"), (None, "confirmed")]
    enc = pa.table({"encounter_id": ["e1", "e2", "e3"], "patient_id": ["p1"] * 3,
                    "class_code": ["amb", "E", "Smith"]})
    b = normalize_table("encounter", enc, ctx=ctx, source="s")
    assert b.tables["encounter"]["class_code"].to_pylist() == ["AMB", "EMER", None]
    assert _issues(b.outcomes[2]) == ["INVALID_FIELD"]


def test_fhir_comparator_is_stored_and_a_unit_conflict_is_said(ctx) -> None:
    low = observation("2160-0", 0.3, "mg/dL", rid="cr")
    low["valueQuantity"]["comparator"] = "<"
    conflict = observation("2345-7", 126, "mmol/L", rid="glu")
    conflict["valueQuantity"]["unit"] = "mg/dL"  # display says mg/dL, the UCUM code mmol/L
    named = observation("99999-9", 5, "Marguerite", rid="nm", ucum=False)
    batch = normalize_fhir(json.dumps(bundle(patient(), low, conflict, named)), ctx=ctx, source="t")
    rows = {r["resource_id"]: r for r in batch.tables["observation"].to_pylist()}
    by_comparator = {r["value_comparator"]: r["value"] for r in rows.values()}
    assert by_comparator["<"] == 0.3
    codes = [i.code for o in batch.outcomes for i in o.issues]
    assert "UNIT_CONFLICT" in codes and "VALUE_CENSORED" in codes
    assert all(r["original_unit"] != "Marguerite" and r["unit"] != "Marguerite" for r in rows.values())


def test_blood_pressure_in_kilopascal_is_converted(ctx) -> None:
    obs = pa.table({"observation_id": ["k"], "patient_id": ["p1"], "loinc": ["8480-6"], "value": [16.0],
                    "unit": ["kPa"]})
    row = normalize_table("observation", obs, ctx=ctx, source="s").tables["observation"].to_pylist()[0]
    assert row["unit"] == "mm[Hg]" and abs(row["value"] - 120.01) < 0.01


def test_a_date_before_anyone_alive_was_born_is_impossible(ctx) -> None:
    obs = pa.table({"observation_id": ["a", "b"], "patient_id": ["p1"] * 2, "loinc": ["8480-6"] * 2,
                    "value": [120.0, 120.0], "unit": ["mm[Hg]"] * 2,
                    "effective": ["1500-03-01T10:00:00Z", "2020-03-01T10:00:00Z"]})
    b = normalize_table("observation", obs, ctx=ctx, source="s")
    assert [o.status for o in b.outcomes] == [Status.REJECTED, Status.ACCEPTED]
    assert "effective is before 1880" in b.outcomes[0].issues[0].message


def test_flat_code_text_that_is_no_code_is_not_stored(ctx) -> None:
    cond = pa.table({"condition_id": ["a", "b", "c", "d"], "patient_id": ["p1"] * 4,
                     "code": ["Quenneville-Ostrowski", "J10.1", "J10.1", "XYZ-9"],
                     "code_system": ["ICD10CM", "Marguerite", "http://example.org/codes", "urn:oid:1.2.3"]})
    b = normalize_table("condition", cond, ctx=ctx, source="s")
    rows = b.tables["condition"].to_pylist()
    # the row whose code is no code is not stored at all (a condition without a code), as over FHIR
    assert [r["code"] for r in rows] == ["|J10.1", "http://example.org/codes|J10.1", "urn:oid:1.2.3|XYZ-9"]
    assert [o.issues[0].code for o in b.outcomes] == ["CODE_NOT_STORED", "CODE_SYSTEM_UNKNOWN",
                                                      "CODE_SYSTEM_UNKNOWN", "CODE_SYSTEM_UNKNOWN"]
    assert "Quenneville" not in str(b.tables) + str(b.outcomes) and "Marguerite" not in str(b.tables)


def test_flat_loinc_text_that_is_no_loinc_rejects_its_row(ctx) -> None:
    obs = pa.table({"observation_id": ["a", "b"], "patient_id": ["p1"] * 2,
                    "loinc": ["987-65-4329", "8480-5"], "value": [1.0, 120.0], "unit": ["mm[Hg]"] * 2})
    b = normalize_table("observation", obs, ctx=ctx, source="s")
    assert [o.status for o in b.outcomes] == [Status.REJECTED, Status.ACCEPTED_WITH_WARNINGS]
    assert [[i.code for i in o.issues] for o in b.outcomes] == [["LOINC_INVALID"], ["LOINC_INVALID"]]
    assert "987-65" not in str(b.tables) + str(b.outcomes)  # the check digit only is a warning
