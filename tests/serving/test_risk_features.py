"""Server-side derivation of engineered risk inputs equals what training computed.

Parity runs on real Diabetes 130 rows through the training loader: the engineered columns
(age_risk, primary_dx_*, charlson_*, charlson_index) are dropped and derived back from the raw age
column and the rows' ICD-9 codes, then compared exactly with the loader's values.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from healthai.errors import InvalidInput
from healthai.normalize import charlson
from healthai.normalize import features as shared
from healthai.serving.risk.features import derivable_features, derive_features
from healthai.serving.settings import newest_version_dir
from healthai_training.risk.diabetes import load_diabetes, read_diabetes

CARD = newest_version_dir("risk_readmission") / "model_card.json"
CARD_NAMES = tuple(f["name"] for f in json.loads(CARD.read_text())["features"])
DERIVED = tuple(derivable_features(CARD_NAMES))
RAW_NAMES = tuple(n for n in CARD_NAMES if n not in DERIVED)


@pytest.fixture(scope="module")
def diabetes_sample(shared_data: Path) -> tuple[np.ndarray, list[tuple[list[str], str]]]:
    """~200 rows of the training matrix (card order) and each row's diag_1..3 codes (ICD-9)."""
    folder = shared_data / "risk" / "diabetes130"
    data = load_diabetes(folder, seed=0, encounter="first")
    assert tuple(f.name for f in data.features) == CARD_NAMES
    # The loader's rows with encounter="first": one encounter per patient, lowest encounter_id.
    df = read_diabetes(folder)
    df = df[~df["discharge_disposition_id"].isin({11, 13, 14, 19, 20, 21})]
    df = df.sort_values("encounter_id").drop_duplicates("patient_nbr", keep="first").reset_index(drop=True)
    assert len(df) == len(data.x)
    for name in ("time_in_hospital", "num_lab_procedures", "number_diagnoses"):  # rows line up
        np.testing.assert_array_equal(df[name].to_numpy(np.float32), data.x[:, CARD_NAMES.index(name)])
    has_primary = df["diag_1"].notna().to_numpy()
    rng = np.random.default_rng(0)
    picks: list[int] = []
    for name in DERIVED:  # a few rows with each derived flag set, so every column is exercised
        if name.startswith(("primary_dx_", "charlson_")) and name != "charlson_index":
            rows = np.flatnonzero((data.x[:, CARD_NAMES.index(name)] == 1) & has_primary)
            picks += rng.choice(rows, size=min(4, len(rows)), replace=False).tolist()
    rows = np.flatnonzero(has_primary & ~np.isin(np.arange(len(df)), picks))
    picks += rng.choice(rows, size=200 - len(picks), replace=False).tolist()
    picks = sorted(set(picks))
    diagnoses = [
        ([c for c in df.loc[i, ["diag_1", "diag_2", "diag_3"]] if isinstance(c, str)], "icd9") for i in picks
    ]
    return data.x[picks], diagnoses


def test_derived_columns_equal_training(diabetes_sample):
    x, diagnoses = diabetes_sample
    assert len(x) == 200
    assert any(len(codes) < 3 for codes, _ in diagnoses)  # rows with missing diag_2/diag_3 included
    raw_cols = [CARD_NAMES.index(n) for n in RAW_NAMES]
    derived = derive_features(CARD_NAMES, RAW_NAMES, x[:, raw_cols], diagnoses=diagnoses)
    assert derived.dtype == np.float32 and derived.shape == x.shape
    for j, name in enumerate(CARD_NAMES):
        np.testing.assert_array_equal(derived[:, j], x[:, j], err_msg=name)
    # every derived flag is set for some row and clear for others: the comparison is not vacuous
    for name in DERIVED:
        column = x[:, CARD_NAMES.index(name)]
        if name.startswith("primary_dx_") or name in ("charlson_mi", "charlson_chf", "charlson_index"):
            assert 0 < np.count_nonzero(column) < len(x), name


def test_given_names_in_any_order_and_shuffled_raw_inputs(diabetes_sample):
    x, diagnoses = diabetes_sample
    names = [*RAW_NAMES[::-1], "charlson_chf"]  # one engineered column sent: taken as given
    given = x[:, [CARD_NAMES.index(n) for n in names]].copy()
    given[:, -1] = 1.0  # the caller's value wins, even where the codes say otherwise
    out = derive_features(CARD_NAMES, names, given, diagnoses=diagnoses)
    chf = CARD_NAMES.index("charlson_chf")
    assert (out[:, chf] == 1.0).all()
    others = [j for j in range(len(CARD_NAMES)) if j != chf]
    np.testing.assert_array_equal(out[:, others], x[:, others])


def test_all_given_fast_path_returns_the_same_matrix(diabetes_sample):
    x, _ = diabetes_sample
    same = derive_features(CARD_NAMES, CARD_NAMES, x, diagnoses=None)
    np.testing.assert_array_equal(same, x)
    perm = np.random.default_rng(1).permutation(len(CARD_NAMES))
    shuffled = [CARD_NAMES[j] for j in perm]
    np.testing.assert_array_equal(derive_features(CARD_NAMES, shuffled, x[:, perm], diagnoses=None), x)


def test_age_risk_from_age_in_years():
    card = ("age", "age_risk", "sex_male")
    ages = np.array([50.0, 73.0, 0.0, 95.0], np.float32)
    x = np.column_stack([ages, np.zeros(4, np.float32)])
    out = derive_features(card, ("age", "sex_male"), x)
    np.testing.assert_array_equal(out[:, 1], shared.age_risk(ages.astype(np.float64)).astype(np.float32))
    assert out[0, 1] == 0.5
    np.testing.assert_array_equal(out[:, [0, 2]], x)
    # a card without an `age` feature still accepts `age` as the raw input of age_risk
    out = derive_features(("age_risk", "sex_male"), ("sex_male", "age"), x[:, ::-1])
    np.testing.assert_array_equal(out[:, 0], shared.age_risk(ages.astype(np.float64)).astype(np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -3.0])
def test_age_that_cannot_give_age_risk_is_named(bad):
    x = np.array([[60.0, 1.0], [bad, 0.0]], np.float32)
    with pytest.raises(InvalidInput, match=r"features\[1\]\.age: .*age_risk") as err:
        derive_features(("age", "age_risk", "sex_male"), ("age", "sex_male"), x)
    assert err.value.field == "features[1].age"


def test_charlson_from_icd10_codes():
    card = ("sex_male", *(f"charlson_{g}" for g in charlson.GROUPS), "charlson_index")
    diagnoses = [
        (["I50.9", "E11.9", "C78.00"], "icd10"),  # chf, diab, metacanc
        (["e1122", "K70.30", "K72.10"], ""),  # "" = ICD-10: diabwc, mld + msld (severe counts only)
        (["J45.909"], "icd10"),  # cpd
        (["Z00.00"], "http://hl7.org/fhir/sid/icd-10-cm"),  # none
        (["428.0", "250.40"], "icd9"),  # systems may differ per patient: chf, diabwc
    ]
    out = derive_features(card, ("sex_male",), np.zeros((5, 1), np.float32), diagnoses=diagnoses)
    expected_groups = [
        {"chf", "diab", "metacanc"}, {"diabwc", "mld", "msld"}, {"cpd"}, set(), {"chf", "diabwc"},
    ]
    for i, groups in enumerate(expected_groups):
        flags = {g for j, g in enumerate(charlson.GROUPS) if out[i, 1 + j] == 1.0}
        assert flags == groups, i
    np.testing.assert_array_equal(out[:, -1], [8, 5, 1, 0, 3])
    for i, (codes, system) in enumerate(diagnoses):  # same as the shared per-patient function
        kind = "icd9" if system == "icd9" else "icd10"
        expected = charlson.charlson_index(charlson.comorbidities(**{kind: codes}))
        assert out[i, -1] == expected


def test_missing_features_name_what_would_derive_them():
    names = tuple(n for n in CARD_NAMES if n not in ("charlson_chf", "age_risk"))
    x = np.zeros((2, len(names)), np.float32)
    with pytest.raises(InvalidInput, match=r"missing charlson_chf: give them, or give diagnoses") as err:
        derive_features(CARD_NAMES, names, x, diagnoses=None)
    assert err.value.field == "feature_names"
    no_age = tuple(n for n in RAW_NAMES if n != "age")
    expected = (r"age: give it; age_risk: give it, or give an 'age' column; "
                r"primary_dx_circulatory, .*charlson_index: give them, or give diagnoses")
    with pytest.raises(InvalidInput, match=expected):
        derive_features(CARD_NAMES, no_age, np.zeros((2, len(no_age)), np.float32))


def test_bad_diagnoses_are_errors_not_imputed_values():
    card = ("sex_male", "primary_dx_diabetes", "charlson_diab", "charlson_index")
    x = np.zeros((2, 1), np.float32)
    derive = lambda dx: derive_features(card, ("sex_male",), x, diagnoses=dx)  # noqa: E731
    with pytest.raises(InvalidInput, match=r"diagnoses: 1 entries for 2 patients"):
        derive([(["250.01"], "icd9")])
    with pytest.raises(InvalidInput, match=r"diagnoses\[1\]\.codes: empty") as err:
        derive([(["250.01"], "icd9"), ([], "icd9")])
    assert err.value.field == "diagnoses[1].codes"
    with pytest.raises(InvalidInput, match=r"diagnoses\[1\]\.codes\[1\]: not a valid ICD-9-CM code"):
        derive([(["250.01"], "icd9"), (["428", "banana"], "icd9")])
    with pytest.raises(InvalidInput, match=r"diagnoses\[0\]\.system: primary_dx_\* .* ICD-9-CM only"):
        derive([(["E11.9"], "icd10"), (["428"], "icd9")])
    with pytest.raises(InvalidInput, match=r"diagnoses\[1\]\.system: 'snomed' is not icd10 or icd9"):
        derive([(["250.01"], "icd9"), (["73211009"], "snomed")])
    with pytest.raises(InvalidInput, match=r"diagnoses\[0\]\.codes\[0\]: not a valid ICD-10-CM code"):
        derive_features(card[:1] + card[2:], ("sex_male",), x, diagnoses=[(["E11.99X"], "icd10")] * 2)


def test_unknown_and_duplicate_given_names():
    with pytest.raises(InvalidInput, match=r"feature_names\[1\]: unknown feature 'bmi'"):
        derive_features(("age", "sex_male"), ("age", "bmi"), np.zeros((1, 2), np.float32))
    with pytest.raises(InvalidInput, match=r"'age' given twice"):
        derive_features(("age", "sex_male"), ("age", "age", "sex_male"), np.zeros((1, 3), np.float32))


def test_derivable_features_say_from_what():
    sources = derivable_features(CARD_NAMES)
    assert sources["age_risk"] == "age"
    for name in ("primary_dx_circulatory", "charlson_chf", "charlson_index"):
        assert sources[name] == "diagnoses"
    assert "age" not in sources and "num_medications" not in sources
    assert len(sources) == 1 + 9 + 17 + 1


def test_missing_flags_left_out_are_derived_from_their_features() -> None:
    """A store-cohort card: bmi and charlson_index may be missing (flags bmi_missing,
    charlson_index_missing). A caller who sends bmi and diagnoses need not send either flag; a flag whose
    feature is absent too stays an error naming the feature."""
    card = ("age_years", "bmi", "bmi_missing", "charlson_index", "charlson_index_missing")
    flags = (("bmi_missing", "bmi"), ("charlson_index_missing", "charlson_index"))
    x = np.array([[71.0, 31.0], [64.0, np.nan]], np.float32)
    diagnoses = [(["I50.9", "E11.9"], "icd10"), (["J10.1"], "")]
    out = derive_features(card, ("age_years", "bmi"), x, diagnoses=diagnoses, flags=flags)
    assert out[:, [2, 4]].tolist() == [[0.0, 0.0], [0.0, 0.0]]  # the NaN's flag is set by imputation
    assert out[0, 3] == 2.0 and np.isnan(out[1, 1])  # CHF + diabetes; the NaN is left to imputation
    with pytest.raises(InvalidInput, match="bmi: give it") as err:
        derive_features(card, ("age_years",), x[:, :1], diagnoses=[(["I50.9"], "")] * 2, flags=flags)
    assert "bmi_missing" not in err.value.message  # derived once bmi is sent (NaN when unmeasured)
