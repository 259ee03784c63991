"""Risk datasets as (features, label, patient) tables with documented features.

Each loader validates its input (required columns, labels) before anything else, returns raw
(unstandardised) feature values — the exported model standardises inside its graph — and a
patient-level split. Missing values are imputed with the training mean, with a ``*_missing``
indicator where a feature is often absent; the card's ``imputation`` block lists them, so Score fills a
NaN of those features the same way (a DP run's card: the released fill values, ``risk.release``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from healthai.cohort.features import FeatureSpec as FeatureSpec  # re-exported: training's name for it
from healthai_training.errors import TrainingInputError


@dataclass
class RiskData:
    name: str
    x: np.ndarray  # [n, F] float32 raw feature values (missing already imputed)
    y: np.ndarray  # [n] float32 in {0, 1}
    features: list[FeatureSpec]
    split: dict[str, np.ndarray]  # train / val / test row indices, disjoint by patient
    description: dict[str, object]
    # patient index per row when a patient may have several rows (None: one row per patient);
    # DP-SGD then samples and clips per patient (``healthai_training.risk.patients``)
    groups: np.ndarray | None = None
    # cohort specs: each feature's declared domain {type, min, max, group} (federated scaling); the
    # card's served domains come from ``risk.domains``
    domains: dict[str, dict[str, object]] | None = None
    # cohort specs and the heart loader: the card's ``imputation`` block ({"values": {feature: fill},
    # "indicators": {feature: indicator}, "rule"}): Score fills a missing (NaN) value of those features as
    # training did
    imputation: dict[str, object] | None = None
    # [n, F] bool: cells that were missing and imputed (a DP run re-imputes them from ``risk.release``)
    missing: np.ndarray | None = None


def require_columns(df: pd.DataFrame, columns: list[str], *, dataset: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise TrainingInputError(f"{dataset}: missing required columns {missing}", field="columns")


def require_binary_labels(y: pd.Series, *, dataset: str, column: str) -> np.ndarray:
    if y.isna().any():
        raise TrainingInputError(
            f"{dataset}: label column {column!r} has {int(y.isna().sum())} NaN values", field=column
        )
    values = set(np.unique(y.to_numpy()))
    if not values <= {0, 1}:
        raise TrainingInputError(
            f"{dataset}: label column {column!r} must be 0/1, got {sorted(values)[:5]}", field=column
        )
    if len(values) < 2:
        raise TrainingInputError(f"{dataset}: label column {column!r} has a single class", field=column)
    return y.to_numpy(dtype=np.float32)


def patient_split(
    groups: np.ndarray, *, seed: int, fractions: tuple[float, float] = (0.6, 0.2)
) -> dict[str, np.ndarray]:
    """Shuffle distinct patients and cut them train/val/test; all rows of a patient stay together."""
    patients = np.unique(groups)
    rng = np.random.default_rng(seed)
    rng.shuffle(patients)
    a = int(fractions[0] * len(patients))
    b = int((fractions[0] + fractions[1]) * len(patients))
    which = {p: 0 for p in patients[:a]} | {p: 1 for p in patients[a:b]} | {p: 2 for p in patients[b:]}
    part = np.array([which[g] for g in groups])
    return {name: np.flatnonzero(part == i) for i, name in enumerate(("train", "val", "test"))}


def train_means(x: np.ndarray, train_rows: np.ndarray) -> np.ndarray:
    """Per column the mean of the values present in the training rows (0 where there is none)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-missing column: 0
        means = np.nanmean(np.asarray(x[train_rows], dtype=np.float64), axis=0)
    return np.where(np.isnan(means), 0.0, means)


def impute_with_train_mean(x: np.ndarray, train_rows: np.ndarray) -> np.ndarray:
    """Fill NaN per column with the mean over training rows (0 if the column is all missing there)."""
    x = x.astype(np.float64, copy=True)
    means = train_means(x, train_rows)
    rows, cols = np.nonzero(np.isnan(x))
    x[rows, cols] = means[cols]
    return x.astype(np.float32)


# --- UCI Heart Disease (4 sites) -------------------------------------------------------------------

HEART_COLUMNS = [
    "site",
    "age",
    "sex",
    "cp",
    "trestbps",
    "chol",
    "fbs",
    "restecg",
    "thalach",
    "exang",
    "oldpeak",
    "target",
]
HEART_FEATURES = [
    FeatureSpec("age", "age", "years", limits=(18, 110)),  # an adult cohort
    FeatureSpec("sex_male", "1 if male", "flag"),
    FeatureSpec("cp_typical_angina", "chest pain: typical angina", "flag", group="chest_pain"),
    FeatureSpec("cp_atypical_angina", "chest pain: atypical angina", "flag", group="chest_pain"),
    FeatureSpec("cp_non_anginal", "chest pain: non-anginal", "flag", group="chest_pain"),
    FeatureSpec("cp_asymptomatic", "chest pain: asymptomatic", "flag", group="chest_pain"),
    FeatureSpec("resting_sbp", "resting systolic blood pressure (missing: send baseline)", "mm[Hg]",
                limits=(50, 300)),
    FeatureSpec("cholesterol", "serum cholesterol (missing or 0: send baseline)", "mg/dL", limits=(50, 1000)),
    FeatureSpec("cholesterol_missing", "1 if cholesterol was not measured", "flag"),
    FeatureSpec("fasting_glucose_high", "fasting blood sugar > 120 mg/dL", "flag"),
    FeatureSpec("ecg_st_t_abnormal", "resting ECG: ST-T wave abnormality", "flag", group="resting_ecg"),
    FeatureSpec("ecg_lvh", "resting ECG: left ventricular hypertrophy", "flag", group="resting_ecg"),
    FeatureSpec("max_heart_rate", "maximum heart rate in the exercise test (missing: send baseline)", "/min",
                limits=(30, 250)),
    FeatureSpec("exercise_angina", "exercise-induced angina", "flag"),
    FeatureSpec("st_depression", "exercise ST depression relative to rest", "mm", limits=(-5, 10)),
    FeatureSpec("exercise_test_missing", "1 if the exercise test values are missing", "flag"),
]


# features the heart loader may find missing (NaN, or a 0 blood pressure / cholesterol), each with the
# flag that marks it (None: none); flags are never missing (a NaN compares as 0), and another numeric
# column that has a missing cell in some file is filled (and listed) without a flag
HEART_IMPUTED = {"resting_sbp": None, "cholesterol": "cholesterol_missing",
                 "max_heart_rate": "exercise_test_missing", "st_depression": "exercise_test_missing"}


def imputation_block(features: list[FeatureSpec], fill: np.ndarray, imputed: dict[str, str | None],
                     rule: str) -> dict[str, object]:
    """The card's ``imputation`` block: Score fills a NaN of ``imputed`` features with ``fill`` (the
    value training put in; a DP run's card gets its released fill instead, ``risk.domains``) and sets
    the marking flag, as the loader did."""
    index = {f.name: j for j, f in enumerate(features)}
    return {"values": {n: float(fill[index[n]]) for n in imputed},
            "indicators": {n: flag for n, flag in imputed.items() if flag},
            "rule": rule}


def load_heart(path: Path | str, *, seed: int = 0) -> RiskData:
    """``heart_disease_4sites.csv`` → 16 features; slope/ca/thal are left out (absent at 3 of 4 sites).
    A missing blood pressure, cholesterol or exercise test value is filled with the training mean (a DP
    run: the released fill) and flagged (``HEART_IMPUTED``); the card's ``imputation`` block says so."""
    df = pd.read_csv(path)
    require_columns(df, HEART_COLUMNS, dataset="heart")
    y = require_binary_labels(df["target"], dataset="heart", column="target")
    chol = df["chol"].where(df["chol"] > 0)
    sbp = df["trestbps"].where(df["trestbps"] > 0)
    cols = [
        df["age"],
        (df["sex"] == 1),
        df["cp"] == 1,
        df["cp"] == 2,
        df["cp"] == 3,
        df["cp"] == 4,
        sbp,
        chol,
        chol.isna(),
        df["fbs"] == 1,
        df["restecg"] == 1,
        df["restecg"] == 2,
        df["thalach"],
        df["exang"] == 1,
        df["oldpeak"],
        df["thalach"].isna() | df["oldpeak"].isna(),
    ]
    x = np.column_stack([np.asarray(c, dtype=np.float64) for c in cols])
    split = patient_split(np.arange(len(df)), seed=seed)  # one row per patient
    missing = np.isnan(x)
    imputed = dict(HEART_IMPUTED) | {f.name: None for j, f in enumerate(HEART_FEATURES)
                                     if missing[:, j].any() and f.name not in HEART_IMPUTED}
    return RiskData(
        name="heart",
        x=impute_with_train_mean(x, split["train"]),
        missing=missing,
        imputation=imputation_block(list(HEART_FEATURES), train_means(x, split["train"]), imputed,
                                    "training mean"),
        y=y,
        features=list(HEART_FEATURES),
        split=split,
        description={
            "source": "UCI Heart Disease (id 45), 4 sites, 920 patients",
            "label": "num > 0",
            "rows": len(df),
            "unit_of_row": "one patient",
            "privacy_unit": "patient (one row per patient)",
        },
    )
