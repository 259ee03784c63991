"""A risk cohort built from the store (ingested FHIR / flat records): one row per index encounter,
the pseudonymous patient as privacy unit, features from ``store_features``, 30-day readmission.

Cohort definition (written verbatim into the spec, hence the model card):

- **index encounters**: ``index_encounter="inpatient"`` — class IMP; ``"any"`` — every class. Status
  not planned / cancelled / entered-in-error, admission and discharge both stored, discharge ≥
  admission, patient row with a birth year, age at discharge ≥ ``min_age`` (18 by default: adult
  readmission, a convention, not fitted to data);
- **prediction time** = the index discharge: features use what is stored at or before it;
- **outcome** ``readmission30``: 1 when another inpatient (IMP, not void) encounter of the patient
  starts after the index discharge and at most ``window_days`` (30) days after it; else 0. An
  inpatient stay starting before the discharge (overlap, transfer) is not a readmission;
- **censoring**: an index whose window ends after the last stored encounter date (``data_end``: the
  latest admission or discharge stored from the index's source — each sending system covers its own
  period —, or one given date) is excluded, readmitted or not (the
  30 days must be observable); so is an index of a patient whose generalized death date (year-month)
  falls in or before the month the window ends (death is a competing event we cannot date to the day);
- **per patient** (``per_patient``): ``all`` keeps every eligible index; the spec then names
  ``patient_id`` as privacy unit and training stacks a patient's rows into one DP-SGD example
  (``risk.patients``); ``first`` / ``last`` / ``random`` keep one index per patient (seeded).

Missing values: measurements and Charlson → the training mean plus a ``<name>_missing`` flag
(``missing = "indicator"``); sex → the training mode. A measurement stored for fewer than
``min_measured`` patients (10) is left out of the spec (the report lists it). Values outside a
feature's clinical limits (``LIMITS``; set from physiology and definitions, not from data) count as
not measured; stays longer than a year and implausible counts drop the row. The domains in the card
then follow the ``--table`` rule (observed training range ± one span, within these limits).

Stores ingested with ``date_policy = shift`` move each patient's event dates by up to ±364 days
(birth and death year-month are not moved): windows and intervals stay exact, but ages are off by up
to a year and a source's last stored date is not each patient's, so give ``data_end`` at least 364
days before the real end of the data there, or censoring under-excludes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from healthai.normalize import charlson
from healthai.normalize.features import VOID_ENCOUNTER_STATUS
from healthai_training.errors import TrainingInputError
from healthai_training.risk.cohort import CohortSpec, build_cohort, parse_spec
from healthai_training.risk.data import RiskData
from healthai_training.risk.store_features import censored_counts, index_features
from healthai_training.risk.store_options import INDEX_ENCOUNTERS, OUTCOMES, PER_PATIENT, StoreCohortOptions
from healthai_training.stores import open_existing_store

TARGET = "readmitted_30d"
CHARLSON_MAX = float(charlson.index_from_matrix(np.ones((1, len(charlson.GROUPS))))[0])
# feature -> (type, unit, clinical min, max, missing policy, out-of-domain policy, description)
LIMITS: dict[str, tuple[str, str, float | None, float | None, str, str, str]] = {
    "age_years": ("numeric", "years", None, 120.0, "drop_row", "drop_row", "age at discharge"),
    "sex_male": ("binary", "flag", None, None, "impute", "error", "1 if male"),
    "length_of_stay_days": ("numeric", "days", 0.0, 365.0, "drop_row", "drop_row", "index length of stay"),
    "prior_inpatient_365d": ("numeric", "count", 0.0, 366.0, "impute", "drop_row",
                             "inpatient encounters started in the 365 days before admission"),
    "prior_emergency_365d": ("numeric", "count", 0.0, 1000.0, "impute", "drop_row",
                             "emergency encounters started in the 365 days before admission"),
    "prior_outpatient_365d": ("numeric", "count", 0.0, 1000.0, "impute", "drop_row",
                              "ambulatory encounters started in the 365 days before admission"),
    "charlson_index": ("numeric", "points", 0.0, CHARLSON_MAX, "indicator", "missing",
                       "Charlson index (original weights) of conditions up to discharge"),
    "sbp_last": ("numeric", "mm[Hg]", 40.0, 300.0, "indicator", "missing", "latest systolic BP (8480-6)"),
    "dbp_last": ("numeric", "mm[Hg]", 20.0, 200.0, "indicator", "missing", "latest diastolic BP (8462-4)"),
    "heart_rate_last": ("numeric", "/min", 20.0, 300.0, "indicator", "missing", "latest heart rate (8867-4)"),
    "bmi": ("numeric", "kg/m2", 8.0, 100.0, "indicator", "missing",
            "latest BMI (39156-5, else weight/height²)"),
    "hba1c_pct": ("numeric", "%", 3.0, 20.0, "indicator", "missing", "latest HbA1c (4548-4)"),
    "creatinine_mg_dl": ("numeric", "mg/dL", 0.1, 30.0, "indicator", "missing",
                         "latest creatinine (2160-0, 38483-4)"),
    "glucose_mg_dl": ("numeric", "mg/dL", 10.0, 2000.0, "indicator", "missing",
                      "latest glucose (2345-7, 2339-0)"),
    "sodium_mmol_l": ("numeric", "mmol/L", 100.0, 200.0, "indicator", "missing",
                      "latest sodium (2951-2, 2947-0)"),
    "potassium_mmol_l": ("numeric", "mmol/L", 1.0, 10.0, "indicator", "missing",
                         "latest potassium (2823-3, 6298-4)"),
}


@dataclass
class StoreCohort:
    table: pd.DataFrame  # patient_id, encounter_id, discharge, features..., readmitted_30d
    spec_toml: str
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> CohortSpec:
        return parse_spec(self.spec_toml, where="store cohort spec")

    def risk_data(self, *, seed: int, impute: str = "train_mean") -> RiskData:
        """Checked, imputed, patient-split training data (``risk.cohort.build_cohort``); a federated
        site passes ``impute="midpoint"`` (every numeric feature here has clinical min and max)."""
        return build_cohort(self.table, self.spec, seed=seed, source="store cohort", impute=impute)

    def write(self, directory: Path | str) -> tuple[Path, Path]:
        """``cohort.parquet`` + ``cohort.toml`` (+ ``cohort_report.json``) for ``train risk --table``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        table, spec = directory / "cohort.parquet", directory / "cohort.toml"
        self.table.to_parquet(table, index=False)
        spec.write_text(self.spec_toml)
        (directory / "cohort_report.json").write_text(json.dumps(self.report, indent=2, default=str) + "\n")
        return table, spec


def _check(options: StoreCohortOptions) -> None:
    for value, allowed, flag in ((options.outcome, OUTCOMES, "outcome"),
                                 (options.index_encounter, INDEX_ENCOUNTERS, "index_encounter"),
                                 (options.per_patient, PER_PATIENT, "per_patient")):
        if value not in allowed:
            raise TrainingInputError(f"{flag} {value!r}: must be one of {', '.join(allowed)}", field=flag)
    if options.window_days < 1:
        raise TrainingInputError(f"window_days {options.window_days}: must be >= 1", field="window_days")


def read_store(uri: str) -> dict[str, pd.DataFrame]:
    """The four normalized kinds of a store as pandas frames (only the columns the cohort uses)."""
    columns = {
        "patient": ["patient_id", "sex", "birth_year", "birth_month", "deceased_year", "deceased_month"],
        "encounter": ["source", "patient_id", "resource_id", "status", "class_code", "start", "end"],
        "condition": ["patient_id", "icd10_code", "icd9_code", "verification_status", "onset", "recorded"],
        "observation": ["patient_id", "loinc", "value", "unit", "effective", "status", "value_comparator"],
    }
    store = open_existing_store(uri)
    try:
        missing = [kind for kind in ("patient", "encounter") if not store.files(kind)]
        if missing:
            raise TrainingInputError(f"{uri}: the store holds no {' or '.join(missing)} records",
                                     field="from_store")
        frames = {}
        for kind, cols in columns.items():
            frames[kind] = (store.read(kind, cols).to_pandas() if store.files(kind) else  # latest versions
                            pd.DataFrame({c: pd.Series(dtype=object) for c in cols}))
    finally:
        store.close()
    return frames


def _encounters(raw: pd.DataFrame) -> pd.DataFrame:
    enc = raw[~raw["status"].isin(VOID_ENCOUNTER_STATUS) & raw["patient_id"].notna()].rename(
        columns={"resource_id": "encounter_id"})
    return enc.assign(start=pd.to_datetime(enc["start"], utc=True), end=pd.to_datetime(enc["end"], utc=True))


def _outcome(index: pd.DataFrame, inpatient: pd.DataFrame) -> pd.Series:
    """Days from discharge to the first inpatient admission strictly after it (NaN: none)."""
    left = index[["patient_id", "at"]].reset_index(names="_row").sort_values("at", kind="stable")
    right = inpatient[["patient_id", "start"]].dropna().sort_values("start", kind="stable")
    merged = pd.merge_asof(left, right, left_on="at", right_on="start", by="patient_id",
                           direction="forward", allow_exact_matches=False)
    days = (merged["start"] - merged["at"]).dt.total_seconds() / 86400.0
    return pd.Series(days.to_numpy(), index=merged["_row"].to_numpy()).reindex(index.index)


def build_store_cohort(source: str | dict[str, pd.DataFrame],
                       options: StoreCohortOptions | None = None) -> StoreCohort:
    """The cohort of ``source`` (a store URI, or ``read_store``'s frames) under ``options``: table +
    TOML spec for ``risk.cohort`` (``--table`` training, federated sites) and a count report."""
    opts = options or StoreCohortOptions()
    _check(opts)
    frames = read_store(source) if isinstance(source, str) else source
    patients = frames["patient"].drop_duplicates("patient_id")
    enc = _encounters(frames["encounter"])
    stamps = pd.concat([enc[["source", "start"]].set_axis(["source", "t"], axis=1),
                        enc[["source", "end"]].set_axis(["source", "t"], axis=1)]).dropna()
    if stamps.empty:
        raise TrainingInputError("the store holds no dated encounters", field="from_store")
    ends = stamps.groupby("source")["t"].max()  # each sending system's last stored date
    if opts.data_end is not None:
        given = pd.Timestamp(opts.data_end)
        ends[:] = given.tz_localize("UTC") if given.tzinfo is None else given.tz_convert("UTC")
    counts: dict[str, int] = {}
    cand = enc if opts.index_encounter == "any" else enc[enc["class_code"] == "IMP"]
    counts["candidate_encounters"] = len(cand)
    cand = cand[cand["start"].notna() & cand["end"].notna() & (cand["end"] >= cand["start"])]
    counts["excluded_no_admission_or_discharge"] = counts["candidate_encounters"] - len(cand)
    born = patients[pd.to_numeric(patients["birth_year"], errors="coerce") > 0]["patient_id"]
    before = len(cand)
    cand = cand[cand["patient_id"].isin(born)]
    counts["excluded_no_birth_date"] = before - len(cand)
    index = cand[["patient_id", "encounter_id", "class_code", "start"]].assign(
        at=cand["end"], data_end=cand["source"].map(ends)).reset_index(drop=True)
    window = pd.Timedelta(days=opts.window_days)
    censored = (index["at"] + window) > index["data_end"]
    counts["excluded_censored_window_after_data_end"] = int(censored.sum())
    index = index[~censored]
    death = patients.set_index("patient_id")[["deceased_year", "deceased_month"]].reindex(index["patient_id"])
    window_end = index["at"] + window
    dy = pd.to_numeric(death["deceased_year"], errors="coerce").to_numpy(np.float64)
    dm = pd.to_numeric(death["deceased_month"], errors="coerce").fillna(12).to_numpy(np.float64)
    end_month = window_end.dt.year.to_numpy() * 12 + window_end.dt.month.to_numpy()
    died = np.isfinite(dy) & (dy * 12 + dm <= end_month)
    counts["excluded_death_before_window_end"] = int(died.sum())
    index = index[~died].reset_index(drop=True)
    if index.empty:
        raise TrainingInputError(f"no index encounters remain ({opts.index_encounter}): {counts}",
                                 field="from_store")
    inpatient = enc[enc["class_code"] == "IMP"]
    days = _outcome(index, inpatient)
    index[TARGET] = (days <= opts.window_days).astype(np.int64).to_numpy()
    index["days_to_readmission"] = days.to_numpy()
    feats = index_features(index, patients=patients, encounters=enc, conditions=frames["condition"],
                           observations=frames["observation"])
    index = index.join(feats)
    young = index["age_years"] < opts.min_age
    counts["excluded_age_below_min"] = int(young.sum())
    index = _one_per_patient(index[~young], opts)
    counts["index_encounters"] = len(index)
    counts["patients"] = int(index["patient_id"].nunique())
    counts["readmitted"] = int(index[TARGET].sum())
    measured = {name: int(index.loc[index[name].notna(), "patient_id"].nunique())
                for name in LIMITS if LIMITS[name][4] == "indicator"}
    dropped = sorted(name for name, n in measured.items() if n < opts.min_measured)
    kept = [name for name in LIMITS if name not in dropped]
    table = index[["patient_id", "encounter_id", "at", *kept, TARGET]].rename(columns={"at": "discharge"})
    report = {"options": dict(opts.__dict__), "data_end": {k: v.isoformat() for k, v in ends.items()},
              "counts": counts, "measured_patients": measured, "features_left_out": dropped,
              "censored_latest_values": censored_counts(index)}
    return StoreCohort(table=table.reset_index(drop=True), spec_toml=spec_toml(opts, kept), report=report)


def _one_per_patient(index: pd.DataFrame, opts: StoreCohortOptions) -> pd.DataFrame:
    index = index.sort_values(["patient_id", "at"], kind="stable")
    if opts.per_patient == "first":
        return index.groupby("patient_id", sort=False).head(1)
    if opts.per_patient == "last":
        return index.groupby("patient_id", sort=False).tail(1)
    if opts.per_patient == "random":
        rng = np.random.default_rng(opts.seed)
        return index.assign(_r=rng.random(len(index))).sort_values("_r").groupby(
            "patient_id", sort=False).head(1).drop(columns="_r").sort_values(["patient_id", "at"])
    return index


def _toml(value: Any) -> str:
    return json.dumps(value)  # strings, numbers and booleans are the same in TOML and JSON


def spec_toml(opts: StoreCohortOptions, features: list[str] | None = None) -> str:
    """The generated cohort spec (``risk.cohort`` format) with the cohort definition as description."""
    name = opts.name or f"store_{opts.outcome}_{opts.index_encounter}"
    one = opts.per_patient != "all"
    what = "inpatient" if opts.index_encounter == "inpatient" else "any-class"
    description = (
        f"store cohort: {what} index encounters (not void, admission and discharge stored, age at discharge"
        f" >= {opts.min_age:g}); prediction at discharge; outcome = an inpatient admission starting after "
        f"the discharge and within {opts.window_days} days of it; excluded: windows ending after "
        + (f"the data end {opts.data_end.date().isoformat()}" if opts.data_end else
           "the last stored admission or discharge of the index's source")
        + " and deaths (year-month) up to the window's month; "
        + ("one index per patient (" + opts.per_patient + ")" if one else
           "every index kept, grouped per patient (privacy unit) for DP-SGD"))
    lines = ["# Generated by healthai_training.risk.store_cohort; the table is cohort.parquet beside it.",
             "[cohort]", f"name = {_toml(name)}", f"description = {_toml(description)}",
             f"target = {_toml(TARGET)}", 'patient_id = "patient_id"', ""]
    for feature in features if features is not None else LIMITS:
        kind, unit, lo, hi, missing, ood, text = LIMITS[feature]
        lo = opts.min_age if feature == "age_years" else lo
        if missing == "indicator":  # what a Risk.Score caller sends for an unmeasured value
            text += f"; not measured: send the card baseline and {feature}_missing = 1"
        lines += [f"[features.{feature}]", f"type = {_toml(kind)}", f"description = {_toml(text)}"]
        if kind == "numeric":
            lines.append(f"unit = {_toml(unit)}")
            lines += [f"{key} = {value!r}" for key, value in (("min", lo), ("max", hi)) if value is not None]
        lines += [f"missing = {_toml(missing)}", f"out_of_domain = {_toml(ood)}", ""]
    return "\n".join(lines)


__all__ = ["LIMITS", "StoreCohort", "StoreCohortOptions", "build_store_cohort", "read_store"]
