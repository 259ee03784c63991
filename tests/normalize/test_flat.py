"""Flat (Arrow) records: columns, per-row outcomes, units/codes vectorized, hypothesis properties."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from healthai.errors import InvalidInput
from healthai.normalize import units
from healthai.normalize.flat import INPUT_COLUMNS, REQUIRED_COLUMNS, normalize_table
from healthai.normalize.records import KINDS, SCHEMAS, Status


def statuses(batch):
    return [o.status for o in batch.outcomes]


@pytest.mark.parametrize("kind", KINDS)
def test_missing_required_column_names_it(ctx, kind) -> None:
    cols = {c: pa.array(["x"]) for c in REQUIRED_COLUMNS[kind][1:]}
    with pytest.raises(InvalidInput, match=REQUIRED_COLUMNS[kind][0]):
        normalize_table(kind, pa.table(cols or {"other": ["x"]}), ctx=ctx, source="s")


def test_unknown_kind_and_wrong_column_type(ctx) -> None:
    with pytest.raises(InvalidInput, match=r"record kind is unknown \(one of patient"):
        normalize_table("claim", pa.table({"a": [1]}), ctx=ctx, source="s")
    t = pa.table({"observation_id": ["o"], "patient_id": ["p"], "loinc": ["8480-6"], "value": [[1.0]]})
    with pytest.raises(InvalidInput, match=r"observation\.value must be double"):
        normalize_table("observation", t, ctx=ctx, source="s")


def test_observations_converted_flagged_rejected(ctx) -> None:
    t = pa.table(
        {
            "observation_id": ["a", "b", "c", "d", "e", "f", "g", "h", None],
            "patient_id": ["p1"] * 9,
            "loinc": [
                "8310-5",
                "29463-7",
                "2339-0",
                "8480-6",
                "8480-6",
                "8480-5",
                "8480-6",
                "8480-6",
                "8480-6",
            ],
            "value": [98.6, 150.0, 5.5, 1200.0, 120.0, 120.0, None, 120.0, 120.0],
            "unit": ["F", "lbs", "mmol/L", "mmHg", "kg", "mm[Hg]", "mm[Hg]", "parsecs", "mm[Hg]"],
            "effective": ["2020-01-01T10:00:00Z", "2020-01-01", None, None, None, None, None, None, None],
            "state": ["Massachusetts", "MA", "XX", None, None, None, None, None, None],
        }
    )
    b = normalize_table("observation", t, ctx=ctx, source="s")
    W, A, R = Status.ACCEPTED_WITH_WARNINGS, Status.ACCEPTED, Status.REJECTED
    assert statuses(b) == [W, W, A, R, R, W, R, W, R]
    codes = [[i.code for i in o.issues] for o in b.outcomes]
    assert codes[:2] == [["UNIT_NOT_UCUM"]] * 2  # F and lbs: converted, flagged as non-UCUM spellings
    assert b.outcomes[0].issues[0].field_path == "[0].unit"
    assert codes[3:] == [
        ["VALUE_IMPOSSIBLE"],
        ["UNIT_INCOMPATIBLE"],
        ["LOINC_INVALID"],
        ["MISSING_FIELD"],
        ["UNIT_UNKNOWN"],
        ["MISSING_FIELD"],
    ]
    assert b.outcomes[3].issues[0].field_path == "[3].value"
    assert "outside the possible range" in b.outcomes[3].issues[0].message
    rows = b.tables["observation"].to_pylist()
    assert [r["value"] for r in rows[:3]] == pytest.approx([37.0, 68.0388555, 99.088])
    assert [r["unit"] for r in rows[:3]] == ["Cel", "kg", "mg/dL"]
    assert [r["region"] for r in rows[:3]] == ["US-MA", "US-MA", None]
    assert rows[0]["effective"] == dt.datetime(2020, 1, 1, 10, tzinfo=dt.UTC)
    assert rows[1]["effective"] == dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    assert rows[4]["value"] is None and rows[4]["original_unit"] == "parsecs"
    assert b.tables["observation"].schema.equals(SCHEMAS["observation"])


def test_duplicates_and_panel_components(ctx) -> None:
    t = pa.table(
        {
            "observation_id": ["bp", "bp", "bp", "x"],
            "patient_id": ["p"] * 4,
            "loinc": ["8480-6", "8462-4", "8480-6", "8867-4"],
            "value": [120.0, 80.0, 121.0, 60.0],
            "unit": ["mmHg", "mmHg", "mmHg", "/min"],
            "panel_loinc": ["85354-9", "85354-9", "85354-9", None],
        }
    )
    b = normalize_table("observation", t, ctx=ctx, source="s")
    W = Status.ACCEPTED_WITH_WARNINGS  # mmHg: a non-UCUM spelling, converted with a warning
    assert statuses(b) == [W, W, Status.REJECTED, Status.ACCEPTED]
    assert [i.code for i in b.outcomes[2].issues] == ["UNIT_NOT_UCUM", "DUPLICATE_ID"]
    keys = b.tables["observation"]["record_key"].to_pylist()
    assert keys[0].endswith("#8480-6") and keys[1].endswith("#8462-4") and keys[2].endswith("#8867-4")


def test_conditions_codes(ctx_with_map) -> None:
    t = pa.table(
        {
            "condition_id": ["1", "2", "3", "4", "5", "6"],
            "patient_id": ["p"] * 6,
            "code": ["e119", "E11.99", "25001", "44054006", "15777000", "X1"],
            "code_system": [None, "ICD10CM", "ICD9CM", "http://snomed.info/sct", "SNOMED", "LOCAL"],
        }
    )
    b = normalize_table("condition", t, ctx=ctx_with_map, source="s")
    codes = [[i.code for i in o.issues] for o in b.outcomes]
    assert codes == [[], ["ICD10_INVALID"], [], [], ["CODE_UNMAPPED"], ["CODE_SYSTEM_UNKNOWN"]]
    rows = b.tables["condition"].to_pylist()
    assert [r["icd10_code"] for r in rows] == ["E11.9", None, None, "E11.9", None, None]
    assert [r["icd10_mapped"] for r in rows] == [False, False, False, True, False, False]
    assert rows[2]["icd9_code"] == "250.01" and rows[5]["code"] == "LOCAL|X1"


def test_patients_pseudonymized_generalized(ctx) -> None:
    t = pa.table(
        {
            "patient_id": ["MRN-1", "MRN-2", "MRN-3", "MRN-4"],
            "sex": ["F", "male", "x", None],
            "birth_date": pa.array([dt.date(1960, 5, 17), dt.date(2999, 1, 1), dt.date(1990, 1, 1), None]),
            "deceased_date": pa.array([dt.date(2020, 1, 2), None, None, None]),
            "state": ["Illinois", None, None, "TX"],
        }
    )
    b = normalize_table("patient", t, ctx=ctx, source="s")
    assert statuses(b) == [Status.ACCEPTED, Status.REJECTED, Status.REJECTED, Status.ACCEPTED]
    assert [i.code for i in b.outcomes[1].issues] == ["DATE_IMPOSSIBLE"]
    assert b.outcomes[2].issues[0].field_path == "[2].sex"
    rows = b.tables["patient"].to_pylist()
    assert (rows[0]["birth_year"], rows[0]["birth_month"], rows[0]["sex"], rows[0]["region"]) == (
        1960,
        5,
        "female",
        "US-IL",
    )
    assert rows[0]["deceased"] is True and rows[0]["deceased_year"] == 2020
    assert "MRN-1" not in str(rows) and len(rows[0]["patient_id"]) == 64


def test_encounters(ctx) -> None:
    t = pa.table(
        {
            "encounter_id": ["e1", "e2", "e3"],
            "patient_id": ["p", "p", "p"],
            "status": ["finished", "done", "finished"],
            "class_code": ["IMP", "AMB", "EMER"],
            "start": pa.array([dt.datetime(2020, 1, 1), dt.datetime(2020, 1, 1), dt.datetime(2020, 1, 5)]),
            "end": pa.array([dt.datetime(2020, 1, 2), None, dt.datetime(2020, 1, 1)]),
        }
    )
    b = normalize_table("encounter", t, ctx=ctx, source="s")
    assert statuses(b) == [Status.ACCEPTED, Status.REJECTED, Status.REJECTED]
    assert b.tables["encounter"]["start"][0].as_py() == dt.datetime(2020, 1, 1, tzinfo=dt.UTC)


def test_flat_and_fhir_pseudonyms_agree(ctx) -> None:
    from healthai.normalize.fhir import normalize_fhir
    from tests.normalize.fhir_builders import patient

    fhir = normalize_fhir(patient(id="abc"), ctx=ctx, source="s").tables["patient"]["patient_id"][0].as_py()
    flat = normalize_table("patient", pa.table({"patient_id": ["abc"]}), ctx=ctx, source="s")
    assert flat.tables["patient"]["patient_id"][0].as_py() == fhir


def test_input_columns_cover_required() -> None:
    for kind in KINDS:
        assert set(REQUIRED_COLUMNS[kind]) <= set(INPUT_COLUMNS[kind])


_LOINCS = sorted(units.CANONICAL)
_UNITS = [
    "mm[Hg]",
    "mmHg",
    "kg",
    "lbs",
    "cm",
    "in",
    "Cel",
    "F",
    "/min",
    "mg/dL",
    "mmol/L",
    "%",
    "bogus",
    None,
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["o1", "o2", "o3", "o4", "o5", "", None]),
            st.sampled_from([*_LOINCS, "8480-5", "abc"]),
            st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True, width=64)),
            st.sampled_from(_UNITS),
        ),
        max_size=40,
    )
)
def test_flat_observations_properties(ctx, rows) -> None:
    t = pa.table(
        {
            "observation_id": pa.array([r[0] for r in rows], pa.string()),
            "patient_id": pa.array(["p"] * len(rows), pa.string()),
            "loinc": pa.array([r[1] for r in rows], pa.string()),
            "value": pa.array([r[2] for r in rows], pa.float64()),
            "unit": pa.array([r[3] for r in rows], pa.string()),
        }
    )
    b = normalize_table("observation", t, ctx=ctx, source="s")
    # one outcome per input row, in order; kept rows = non-rejected outcomes
    assert [o.index for o in b.outcomes] == list(range(len(rows)))
    kept = [o for o in b.outcomes if o.status is not Status.REJECTED]
    out = b.tables["observation"]
    assert out.num_rows == len(kept)
    assert all(o.issues for o in b.outcomes if o.status is not Status.ACCEPTED)
    # every kept canonical value is finite and inside its code's possible range
    for loinc, value, unit in zip(
        out["loinc"].to_pylist(), out["value"].to_pylist(), out["unit"].to_pylist(), strict=True
    ):
        spec = units.CANONICAL.get(loinc)
        if value is not None:
            assert np.isfinite(value)
            if spec is not None:
                assert spec.low <= value <= spec.high and unit == spec.unit
    # no kept record key repeats
    keys = out["record_key"].to_pylist()
    assert len(keys) == len(set(keys))


def test_a_value_that_overflows_in_its_unit_conversion_is_impossible(ctx) -> None:
    """7e307 inches is finite, its centimetres are not: rejected as FHIR rejects it, with no overflow."""
    t = pa.table({"observation_id": ["o1", "o2"], "patient_id": ["p", "p"], "loinc": ["8302-2", "8302-2"],
                  "value": [7.077532027016992e307, 70.0], "unit": ["in", "in"]})
    b = normalize_table("observation", t, ctx=ctx, source="s")
    bad, good = b.outcomes
    assert bad.status is Status.REJECTED and good.status is not Status.REJECTED
    assert [(i.code, i.message) for i in bad.issues] == [("VALUE_IMPOSSIBLE", "value is not a finite number")]
    assert b.tables["observation"]["value"].to_pylist() == [pytest.approx(177.8)]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    codes=st.lists(
        st.tuples(st.text(max_size=8), st.sampled_from(["ICD10CM", "ICD9CM", "SNOMED", "X", None])),
        max_size=30,
    )
)
def test_flat_conditions_never_drop_a_code(ctx, codes) -> None:
    t = pa.table(
        {
            "condition_id": pa.array([str(i) for i in range(len(codes))], pa.string()),
            "patient_id": pa.array(["p"] * len(codes), pa.string()),
            "code": pa.array([c for c, _ in codes], pa.string()),
            "code_system": pa.array([s for _, s in codes], pa.string()),
        }
    )
    b = normalize_table("condition", t, ctx=ctx, source="s")
    assert len(b.outcomes) == len(codes)
    for o, (code, _) in zip(b.outcomes, codes, strict=True):
        # blank codes are missing (rejected); every other code is kept, flagged when not valid, except
        # text not shaped like a code: accepted, said not stored (as over FHIR)
        assert (o.status is Status.REJECTED) == (code.strip() == "")
    unstored = sum(1 for o in b.outcomes if any(i.code == "NOT_STORED" for i in o.issues))
    assert b.tables["condition"].num_rows == sum(1 for c, _ in codes if c.strip()) - unstored


def test_explicit_regions_are_checked(ctx) -> None:
    t = pa.table(
        {
            "encounter_id": ["a", "b", "c"],
            "patient_id": ["p"] * 3,
            "region": ["us-ny", "Narnia", None],
            "state": [None, None, "Texas"],
        }
    )
    b = normalize_table("encounter", t, ctx=ctx, source="s")
    assert b.tables["encounter"]["region"].to_pylist() == ["US-NY", None, "US-TX"]
    assert [[i.code for i in o.issues] for o in b.outcomes] == [[], ["INVALID_FIELD"], []]
    assert b.outcomes[1].status is Status.ACCEPTED_WITH_WARNINGS


def test_flat_icd10_gets_unique_snomed_and_not_ambiguous_ones(ctx_with_map) -> None:
    t = pa.table({"condition_id": ["1", "2"], "patient_id": ["p", "p"], "code": ["I50.9", "J45.909"]})
    rows = normalize_table("condition", t, ctx=ctx_with_map, source="s").tables["condition"].to_pylist()
    assert [(r["snomed_code"], r["snomed_mapped"]) for r in rows] == [("88805009", True), ("233678006", True)]


def test_blank_patient_id_is_one_missing_field(ctx) -> None:
    b = normalize_table("patient", pa.table({"patient_id": ["p1", " ", None]}), ctx=ctx, source="s")
    assert [[(i.code, i.field_path) for i in o.issues] for o in b.outcomes] == [
        [],
        [("MISSING_FIELD", "[1].patient_id")],
        [("MISSING_FIELD", "[2].patient_id")],
    ]
    assert b.tables["patient"].num_rows == 1


def test_arrow_nanosecond_times_and_repeated_columns(ctx) -> None:
    """pandas' default nanosecond timestamps are taken (cut to microseconds); a column named twice is
    refused naming it, not an internal error."""
    ns = pa.array([1709280000123456789], pa.timestamp("ns", tz="UTC"))
    t = pa.table({"observation_id": ["o1"], "patient_id": ["p1"], "loinc": ["2345-7"], "unit": ["mg/dL"],
                  "value": [99.0], "effective": ns})
    b = normalize_table("observation", t, ctx=ctx, source="s")
    assert statuses(b) == [Status.ACCEPTED]
    assert b.tables["observation"]["effective"][0].as_py() == dt.datetime(2024, 3, 1, 8, 0, 0, 123456,
                                                                            tzinfo=dt.UTC)
    schema = pa.schema([("observation_id", pa.string()), ("patient_id", pa.string()),
                        ("loinc", pa.string()), ("value", pa.float64()), ("value", pa.float64())])
    twice = pa.Table.from_arrays([pa.array(["o2"]), pa.array(["p1"]), pa.array(["2345-7"]),
                                  pa.array([100.0]), pa.array([200.0])], schema=schema)
    with pytest.raises(InvalidInput, match="column\\(s\\) 'value' more than once") as err:
        normalize_table("observation", twice, ctx=ctx, source="s")
    assert err.value.field == "value"


def test_birth_and_death_dates_are_the_local_dates_written(ctx) -> None:
    """A birth date-time late on New Year's Eve in Chicago is a December birth, however it is sent."""
    tz_aware = pa.array([dt.datetime(1989, 1, 1, 2, 0, tzinfo=dt.UTC)],
                        pa.timestamp("us", tz="America/Chicago"))
    for birth in (pa.array(["1988-12-31T20:00:00-06:00"]), tz_aware):
        t = pa.table({"patient_id": ["MRN-9"], "birth_date": birth,
                      "deceased_date": pa.array(["2020-12-31T23:30:00-05:00"])})
        row = normalize_table("patient", t, ctx=ctx, source="s").tables["patient"].to_pylist()[0]
        assert (row["birth_year"], row["birth_month"]) == (1988, 12)
        assert (row["deceased_year"], row["deceased_month"]) == (2020, 12)


def test_a_snomed_code_of_two_map_groups_gets_both_icd10_codes(ctx_with_map) -> None:
    """127013003 (diabetic renal disease) maps to E11.21 in group 1 and N18.9 in group 2: both apply,
    so Charlson sees the renal disease too."""
    t = pa.table({"condition_id": ["c1"], "patient_id": ["p1"], "code": ["127013003"],
                  "code_system": ["SNOMED"]})
    b = normalize_table("condition", t, ctx=ctx_with_map, source="s")
    rows = b.tables["condition"].to_pylist()
    assert [(r["icd10_code"], r["record_key"].endswith("#group2")) for r in rows] == [
        ("E11.21", False), ("N18.9", True)]
    assert len(b.outcomes) == 1 and rows[0]["resource_id"] == rows[1]["resource_id"]
