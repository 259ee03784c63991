"""Diabetes 130-US hospitals → 30-day readmission features, one encounter per patient.

Privacy unit = patient: we keep exactly one encounter per patient (by default one drawn at random
with the run's seed; ``encounter="first"`` keeps the lowest ``encounter_id``), so per-example
DP-SGD is per-patient DP. Encounters ending in death or hospice
(discharge codes 11, 13, 14, 19, 20, 21) are dropped: those patients cannot be readmitted.
Diagnosis features (Strack 2014 groups of the primary diagnosis, Charlson groups from ICD-9, Quan
2005) and the age risk curve come from ``healthai.normalize`` — the same code the server runs.
"""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pandas as pd

from healthai_training.errors import TrainingInputError
from healthai_training.risk.data import (
    FeatureSpec,
    RiskData,
    impute_with_train_mean,
    patient_split,
    require_columns,
)

NUMERIC = [
    ("time_in_hospital", "length of stay", "d"),
    ("num_lab_procedures", "lab tests during the stay", "count"),
    ("num_procedures", "procedures (non-lab) during the stay", "count"),
    ("num_medications", "distinct medications during the stay", "count"),
    ("number_outpatient", "outpatient visits in the prior year", "count"),
    ("number_emergency", "emergency visits in the prior year", "count"),
    ("number_inpatient", "inpatient admissions in the prior year", "count"),
    ("number_diagnoses", "diagnoses entered for the stay", "count"),
]
NUMERIC_LIMITS = {"time_in_hospital": (0, 365)}  # counts: (0, None)
DISCHARGE = "discharge"  # one-hot group of the discharge flags; none set = discharged home
REQUIRED = [
    "encounter_id",
    "patient_nbr",
    "age",
    "gender",
    "admission_type_id",
    "discharge_disposition_id",
    "admission_source_id",
    "A1Cresult",
    "max_glu_serum",
    "insulin",
    "change",
    "diabetesMed",
    "diag_1",
    "diag_2",
    "diag_3",
    "readmitted",
] + [c for c, _, _ in NUMERIC]
DEATH_OR_HOSPICE = {11, 13, 14, 19, 20, 21}
LABELS = {"<30": 1.0, ">30": 0.0, "NO": 0.0}


def read_diabetes(folder: Path | str) -> pd.DataFrame:
    parts = sorted(glob.glob(str(Path(folder) / "diabetic_data.part*.csv")))
    if not parts:
        raise TrainingInputError(f"no diabetic_data.part*.csv files in {folder}", field="data_root")
    return pd.concat(
        [
            pd.read_csv(
                p, keep_default_na=False, na_values=["?"], dtype={"diag_1": str, "diag_2": str, "diag_3": str}
            )
            for p in parts
        ],
        ignore_index=True,
    )


def diagnosis_features(df: pd.DataFrame) -> tuple[np.ndarray, list[FeatureSpec]]:
    """Strack group of diag_1 (one-hot), Charlson groups and index over diag_1..3 (healthai.normalize)."""
    from healthai.normalize import charlson, diag_groups

    primary = diag_groups.diag_groups(df["diag_1"].where(df["diag_1"].notna(), None))
    cols = [(primary == name).astype(float) for name in diag_groups.STRACK_GROUPS]
    specs = [
        FeatureSpec(f"primary_dx_{name}", f"primary diagnosis in Strack 2014 group '{name}' (ICD-9)", "flag",
                    group="primary_dx")
        for name in diag_groups.STRACK_GROUPS
    ]
    present = np.zeros((len(df), len(charlson.GROUPS)), dtype=bool)
    for col in ("diag_1", "diag_2", "diag_3"):
        present |= charlson.groups_matrix(df[col].where(df[col].notna(), None), "icd9")
    for j, group in enumerate(charlson.GROUPS):
        cols.append(present[:, j].astype(float))
        specs.append(
            FeatureSpec(
                f"charlson_{group}",
                f"Charlson group: {charlson.GROUP_NAMES[group]} (ICD-9, Quan 2005)",
                "flag",
            )
        )
    cols.append(charlson.index_from_matrix(present))
    most = float(charlson.index_from_matrix(np.ones((1, len(charlson.GROUPS))))[0])
    specs.append(
        FeatureSpec("charlson_index", "Charlson comorbidity index over diag_1..3", "points", limits=(0, most))
    )
    return np.column_stack(cols), specs


def load_diabetes(folder: Path | str, *, seed: int = 0, encounter: str = "random") -> RiskData:
    """``encounter``: which single encounter per patient to keep — ``"random"`` (seeded) or ``"first"``."""
    if encounter not in ("random", "first"):
        raise TrainingInputError(
            f"encounter must be 'random' or 'first', got {encounter!r}", field="encounter"
        )
    df = read_diabetes(folder)
    require_columns(df, REQUIRED, dataset="diabetes130")
    missing_label = df["readmitted"].isna() | (df["readmitted"].astype(str).str.strip() == "")
    if missing_label.any():
        raise TrainingInputError(
            f"diabetes130: label column 'readmitted' has {int(missing_label.sum())} missing values",
            field="readmitted",
        )
    unknown = set(df["readmitted"]) - set(LABELS)
    if unknown:
        raise TrainingInputError(
            f"diabetes130: 'readmitted' has unknown values {sorted(unknown)[:5]}", field="readmitted"
        )
    n_rows = len(df)
    df = df[~df["discharge_disposition_id"].isin(DEATH_OR_HOSPICE)]
    df = df.sort_values("encounter_id") if encounter == "first" else df.sample(frac=1.0, random_state=seed)
    df = df.drop_duplicates("patient_nbr", keep="first").sort_values("encounter_id").reset_index(drop=True)
    from healthai.normalize import features as shared

    try:
        age = np.asarray(shared.age_from_band(df["age"].to_numpy()), dtype=float)
    except ValueError as exc:
        raise TrainingInputError(f"diabetes130: bad age band ({exc})", field="age") from exc
    cols: list[np.ndarray] = [
        age,
        np.asarray(shared.age_risk(age), float),
        (df["gender"] == "Male").to_numpy(float),
    ]
    specs = [
        FeatureSpec("age", "age (midpoint of the 10-year band)", "a", limits=(0, 120)),
        FeatureSpec("age_risk", "1 / (1 + exp(-0.1 (age - 50)))", "1", limits=(0, 1)),
        FeatureSpec("sex_male", "1 if male", "flag"),
    ]
    for col, desc, unit in NUMERIC:
        cols.append(df[col].to_numpy(float))
        specs.append(FeatureSpec(col, desc, unit, limits=NUMERIC_LIMITS.get(col, (0, None))))
    disposition = df["discharge_disposition_id"]
    flags = [
        ("emergency_admission", "admission type emergency or urgent", df["admission_type_id"].isin([1, 2])),
        ("admitted_from_er", "admission source emergency room", df["admission_source_id"] == 7),
        ("discharged_home_health", "discharged home with home health service", disposition == 6),
        ("discharged_to_snf", "discharged to a skilled nursing facility", disposition == 3),
        (
            "discharged_to_hospital",
            "transferred to another short-term or inpatient hospital",
            disposition.isin([2, 5]),
        ),
        ("discharged_to_rehab", "discharged to an inpatient rehabilitation facility", disposition == 22),
        (
            "discharged_other_care",
            "discharged to an intermediate or long-term care facility",
            disposition.isin([4, 23, 24, 27, 28, 15, 16, 17]),
        ),
        ("discharge_unknown", "discharge disposition not recorded", disposition.isin([18, 25, 26])),
        ("left_against_advice", "left against medical advice", disposition == 7),
        ("hba1c_measured", "HbA1c measured during the stay", df["A1Cresult"] != "None"),
        ("hba1c_above_7", "HbA1c > 7%", df["A1Cresult"].isin([">7", ">8"])),
        ("glucose_measured", "max serum glucose measured", df["max_glu_serum"] != "None"),
        ("glucose_above_200", "max serum glucose > 200 mg/dL", df["max_glu_serum"].isin([">200", ">300"])),
        ("on_insulin", "insulin prescribed", df["insulin"] != "No"),
        ("insulin_changed", "insulin dose changed (up or down)", df["insulin"].isin(["Up", "Down"])),
        ("diabetes_med_changed", "any diabetes medication changed", df["change"] == "Ch"),
        ("on_diabetes_med", "any diabetes medication prescribed", df["diabetesMed"] == "Yes"),
    ]
    requires = {"hba1c_above_7": "hba1c_measured", "glucose_above_200": "glucose_measured",
                "insulin_changed": "on_insulin"}
    for name, desc, values in flags:
        cols.append(values.to_numpy(float))
        group = DISCHARGE if name.startswith("discharge") or name == "left_against_advice" else None
        specs.append(FeatureSpec(name, desc, "flag", group=group, requires=requires.get(name)))
    dx, dx_specs = diagnosis_features(df)
    x = np.column_stack([np.column_stack(cols), dx])
    specs += dx_specs
    y = df["readmitted"].map(LABELS).to_numpy(np.float32)
    split = patient_split(df["patient_nbr"].to_numpy(), seed=seed)
    return RiskData(
        name="diabetes130",
        x=impute_with_train_mean(x, split["train"]),
        missing=np.isnan(x),
        y=y,
        features=specs,
        split=split,
        description={
            "source": "UCI Diabetes 130-US hospitals 1999-2008 (id 296), Strack et al. 2014",
            "label": "readmitted within 30 days (readmitted == '<30')",
            "rows_in_file": n_rows,
            "rows_used": len(df),
            "unit_of_row": f"one encounter per patient ({encounter}; seed {seed})",
            "exclusions": "encounters ending in death or hospice",
            "privacy_unit": f"patient (one encounter per patient, chosen {encounter}ly; seed {seed})",
        },
    )
