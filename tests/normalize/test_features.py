"""Features against hand-computed cases; Charlson from ICD-10 and ICD-9; unavailable is not 0."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from healthai.normalize import charlson, diag_groups, features
from healthai.normalize.fhir import normalize_fhir
from tests.normalize.fhir_builders import bp_panel, bundle, condition, observation, patient

UTC = dt.UTC


def test_age_years_scalar_and_vectorized() -> None:
    # 1960-05-15 → 2020-05-15: 60·365 + 15 leap days = 21915 days
    assert features.age_years(dt.date(1960, 5, 15), dt.date(2020, 5, 15)) == pytest.approx(21915 / 365.2425)
    births = np.array(["1960-05-15", "2000-01-01"], dtype="datetime64[D]")
    got = features.age_years(births, np.datetime64("2020-05-15"))
    assert got == pytest.approx([21915 / 365.2425, 7440 / 365.2425])
    assert np.isnan(
        features.age_years(
            np.array(["NaT", "2000-01-01"], dtype="datetime64[D]"), np.datetime64("2020-01-01")
        )[0]
    )
    assert features.birth_date(1960, 5) == dt.date(1960, 5, 15)
    assert features.birth_date(1960, None) == dt.date(1960, 7, 1)


def test_age_band_and_age_risk() -> None:
    assert features.age_from_band("[70-80)") == 75.0
    assert list(features.age_from_band(np.array(["[0-10)", "[90-100)"]))) == [5.0, 95.0]
    with pytest.raises(ValueError, match="not an age band"):
        features.age_from_band("seventy")
    assert features.age_risk(50) == 0.5
    assert features.age_risk(60) == pytest.approx(1 / (1 + math.exp(-1)))
    assert features.age_risk(np.array([40.0, 50.0])) == pytest.approx([1 / (1 + math.e), 0.5])


def test_bmi() -> None:
    assert features.bmi(80, 180) == pytest.approx(80 / 1.8**2)
    assert math.isnan(features.bmi(80, 0))


def test_sbp_trend_by_hand_and_against_pandas() -> None:
    # α = 2/(7+1) = 0.25. Level: 120 → 122.5 → 123.125. Diffs 10, -5 → 10 → 6.25.
    assert features.sbp_trend([120, 130, 125]) == pytest.approx((123.125, 6.25))
    level, trend = features.sbp_trend([140])
    assert level == 140 and math.isnan(trend)
    assert all(math.isnan(x) for x in features.sbp_trend([]))
    values = [120, 135, 128, 150, 149, 160, 158, 171, 165]
    s = pd.Series(values, dtype=float)
    ref = (
        s.ewm(span=7, adjust=False).mean().iloc[-1],
        s.diff().dropna().ewm(span=7, adjust=False).mean().iloc[-1],
    )
    assert features.sbp_trend(values) == pytest.approx(ref)


def test_sbp_trend_frame_matches_the_scalar_definition() -> None:
    t0 = pd.Timestamp("2020-01-01", tz="UTC")
    df = pd.DataFrame(
        {
            "patient_id": ["a", "b", "a", "a", "b"],
            "effective": [t0 + pd.Timedelta(days=d) for d in (3, 1, 1, 2, 2)],
            "value": [125.0, 140.0, 120.0, 130.0, 150.0],
        }
    )
    out = features.sbp_trend_frame(df)
    assert out.loc["a", ["sbp_ewm", "sbp_trend"]].tolist() == pytest.approx([123.125, 6.25])
    assert out.loc["b", ["sbp_ewm", "sbp_trend", "sbp_last"]].tolist() == pytest.approx([142.5, 10.0, 150.0])


def test_charlson_from_icd10_with_hierarchy_and_both_weightings() -> None:
    g = charlson.comorbidities(icd10=["E11.9", "I50.9", "C78.5", "C18.9", "J01.90"])
    assert {k for k, v in g.items() if v == 1.0} == {"diab", "chf", "metacanc", "canc"}
    assert charlson.charlson_index(g) == 1 + 1 + 6  # canc counted only as metastatic
    assert charlson.charlson_index(g, "quan") == 0 + 2 + 6


def test_charlson_from_icd9() -> None:
    g = charlson.comorbidities(icd9=["410.01", "250.40", "250.00", "585.3", "571.2", "572.3", "V45.11"])
    assert {k for k, v in g.items() if v == 1.0} == {"mi", "diabwc", "diab", "rend", "mld", "msld"}
    assert charlson.charlson_index(g) == 1 + 2 + 2 + 3
    assert charlson.charlson_index(g, "quan") == 0 + 1 + 1 + 4
    assert charlson.groups_of_code("42", "icd9") == {"aids"}  # leading zero dropped: 042
    assert charlson.groups_of_code("250", "icd9") == frozenset()  # 4th digit decides
    assert charlson.charlson_index(charlson.icd9_groups([])) == 0


@pytest.mark.parametrize(
    ("code", "system", "group"),
    [
        ("I21.4", "icd10", "mi"),
        ("I25.2", "icd10", "mi"),
        ("I42.6", "icd10", "chf"),
        ("G30.9", "icd10", "dementia"),
        ("J44.9", "icd10", "cpd"),
        ("M05.79", "icd10", "rheumd"),
        ("K25.0", "icd10", "pud"),
        ("K70.30", "icd10", "mld"),
        ("E10.21", "icd10", "diabwc"),
        ("G82.20", "icd10", "hp"),
        ("N18.3", "icd10", "rend"),
        ("C50.911", "icd10", "canc"),
        ("K72.10", "icd10", "msld"),
        ("C79.51", "icd10", "metacanc"),
        ("B20", "icd10", "aids"),
        ("I70.0", "icd10", "pvd"),
        ("I63.9", "icd10", "cevd"),
        ("428.0", "icd9", "chf"),
        ("437.3", "icd9", "pvd"),
        ("362.34", "icd9", "cevd"),
        ("331.2", "icd9", "dementia"),
        ("496", "icd9", "cpd"),
        ("714.0", "icd9", "rheumd"),
        ("531.00", "icd9", "pud"),
        ("070.54", "icd9", "mld"),
        ("344.1", "icd9", "hp"),
        ("V56.0", "icd9", "rend"),
        ("174.9", "icd9", "canc"),
        ("456.0", "icd9", "msld"),
        ("197.7", "icd9", "metacanc"),
        ("238.6", "icd9", "canc"),
    ],
)
def test_charlson_group_of_each_list(code, system, group) -> None:
    assert group in charlson.groups_of_code(code, system)


@pytest.mark.parametrize(
    ("code", "system"),
    [
        ("I25.1", "icd10"),
        ("C44.9", "icd10"),
        ("E11", "icd10"),
        ("173.3", "icd9"),
        ("195.9", "icd9"),
        ("250", "icd9"),
    ],
)
def test_codes_outside_every_group(code, system) -> None:
    assert charlson.groups_of_code(code, system) == frozenset()


def test_unmapped_conditions_make_charlson_unavailable_not_zero() -> None:
    g = charlson.comorbidities(icd10=["I21.4"], unmapped=1)
    assert g["mi"] == 1.0 and math.isnan(g["chf"])
    assert math.isnan(charlson.charlson_index(g))
    assert charlson.charlson_index(charlson.comorbidities(unmapped=0)) == 0.0


def test_groups_matrix_is_the_vectorized_lookup() -> None:
    codes = ["410.01", None, "250.40", "410.01", ""]
    m = charlson.groups_matrix(codes, "icd9")
    assert m.shape == (5, 17)
    assert m[0, charlson.GROUPS.index("mi")] and m[3, charlson.GROUPS.index("mi")]
    assert not m[1].any() and not m[4].any()
    assert charlson.index_from_matrix(m).tolist() == [1.0, 0.0, 2.0, 1.0, 0.0]


def test_strack_groups() -> None:
    codes = [
        "428",
        "786.5",
        "250.83",
        "V45",
        "E880",
        "8",
        "715",
        "996",
        "162.1",
        "590",
        "788",
        "540",
        None,
        "?",
    ]
    assert list(diag_groups.diag_groups(codes)) == [
        "circulatory",
        "respiratory",
        "diabetes",
        "other",
        "other",
        "other",
        "musculoskeletal",
        "injury",
        "neoplasms",
        "genitourinary",
        "genitourinary",
        "digestive",
        "missing",
        "missing",
    ]
    assert diag_groups.strack_group("785") == "circulatory"
    assert "missing" not in diag_groups.STRACK_GROUPS


def _patient_rows(ctx, *conditions):
    b = bundle(
        patient(birthDate="1960-05-03", gender="male"),
        observation("8480-6", 120, "mm[Hg]", rid="s1", effectiveDateTime="2020-01-01T00:00:00Z"),
        bp_panel("85354-9", 130, 80, rid="bp2"),
        observation("29463-7", 176.37, "lbs", rid="w", ucum=False),
        observation("8302-2", 180, "cm", rid="h"),
        observation("2339-0", 5.5, "mmol/L", rid="g"),
        *conditions,
    )
    return normalize_fhir(b, ctx=ctx, source="t").tables


def test_patient_features_from_normalized_rows(ctx) -> None:
    icd = "http://hl7.org/fhir/sid/icd-10-cm"
    t = _patient_rows(ctx, condition(icd, "I50.9", rid="c1"), condition(icd, "E11.22", rid="c2"))
    f = features.patient_features(
        t["patient"].to_pylist()[0],
        observations=t["observation"],
        conditions=t["condition"],
        at=dt.date(2020, 5, 15),
    )
    assert list(f) == list(features.FEATURE_NAMES)
    assert f["age_years"] == pytest.approx(21915 / 365.2425)  # born 1960-05 → the 15th
    assert f["sex_male"] == 1.0
    assert f["bmi"] == pytest.approx(80.0 / 1.8**2, rel=1e-4)
    assert (f["sbp_last"], f["dbp_last"]) == (130.0, 80.0)
    assert (f["sbp_ewm"], f["sbp_trend"]) == pytest.approx((122.5, 10.0))
    assert f["glucose_mg_dl"] == pytest.approx(99.088)
    assert math.isnan(f["hba1c_pct"])
    assert (f["charlson_chf"], f["charlson_diabwc"], f["charlson_mi"]) == (1.0, 1.0, 0.0)
    assert (f["charlson_index"], f["charlson_available"]) == (3.0, 1.0)
    early = features.patient_features(
        t["patient"].to_pylist()[0], observations=t["observation"], at=dt.date(2019, 12, 31)
    )
    assert math.isnan(early["sbp_last"]) and early["charlson_index"] == 0.0


def test_patient_features_snomed_only_is_unavailable_until_mapped(ctx, ctx_with_map) -> None:
    sct = "http://snomed.info/sct"
    for c, expect in ((ctx, None), (ctx_with_map, 1.0 + 6.0)):
        t = _patient_rows(c, condition(sct, "88805009", rid="c1"), condition(sct, "94260004", rid="c2"))
        f = features.patient_features(
            t["patient"].to_pylist()[0], conditions=t["condition"], at=dt.date(2021, 1, 1)
        )
        if expect is None:
            assert math.isnan(f["charlson_index"]) and f["charlson_available"] == 0.0
        else:
            assert f["charlson_index"] == expect and f["charlson_available"] == 1.0


def test_features_frame_agrees_with_patient_features_on_synthea(bundle_paths, ctx_with_map) -> None:
    import pyarrow as pa

    from healthai.normalize.features_batch import features_frame

    batches = [normalize_fhir(p.read_bytes(), ctx=ctx_with_map, source="synthea") for p in bundle_paths[:12]]
    tables = {k: pa.concat_tables(b.tables[k] for b in batches) for k in batches[0].tables}
    at = dt.date(2021, 6, 1)
    frame = features_frame(
        tables["patient"],
        observations=tables["observation"],
        conditions=tables["condition"],
        encounters=tables["encounter"],
        at=at,
    )
    assert list(frame.columns) == list(features.FEATURE_NAMES) and len(frame) == 12
    for row in tables["patient"].to_pylist():
        pid = row["patient_id"]

        def mine(k, pid=pid):
            return tables[k].filter(pa.compute.equal(tables[k]["patient_id"], pid))

        one = features.patient_features(
            row,
            observations=mine("observation"),
            conditions=mine("condition"),
            encounters=mine("encounter"),
            at=at,
        )
        np.testing.assert_allclose(frame.loc[pid].to_numpy(), np.array(list(one.values())), rtol=1e-12)
    assert frame["charlson_available"].isin([0.0, 1.0]).all()
    assert (frame["charlson_available"] == 0.0).sum() > 0 and frame["sbp_trend"].notna().sum() > 0


def test_features_frame_without_clinical_rows() -> None:
    import pyarrow as pa

    from healthai.normalize.features_batch import features_frame
    from healthai.normalize.records import SCHEMAS

    row = {
        "source": "s",
        "record_key": "a",
        "resource_id": "a",
        "patient_id": "a",
        "sex": "female",
        "birth_year": 1950,
        "birth_month": None,
    }
    pat = pa.Table.from_pylist([row], schema=SCHEMAS["patient"])
    frame = features_frame(pat, at=dt.date(2020, 7, 1))
    assert frame.loc["a", "age_years"] == pytest.approx(
        (dt.date(2020, 7, 1) - dt.date(1950, 7, 1)).days / 365.2425
    )
    assert math.isnan(frame.loc["a", "sbp_last"]) and frame.loc["a", "charlson_index"] == 0.0
    empty = {
        "observations": SCHEMAS["observation"].empty_table(),
        "conditions": SCHEMAS["condition"].empty_table(),
        "encounters": SCHEMAS["encounter"].empty_table(),
    }
    frame = features_frame(pat, at=dt.date(2020, 7, 1), **empty)
    assert frame.loc["a", "charlson_available"] == 1.0 and frame.loc["a", "n_inpatient_365d"] == 0.0
