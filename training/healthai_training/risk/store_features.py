"""Features of index encounters from the store's normalized tables, each as of its own time ``at``.

The definitions are those of :mod:`healthai.normalize.features` (``patient_features``, the ONE
definition the Risk service documents), evaluated per index row instead of once per patient; a test
checks both agree on real Synthea patients. Per index row (patient, ``at`` = discharge, ``start`` =
admission):

- ``age_years``: ``features.age_years(features.birth_date(birth_year, birth_month), at)`` — stored
  birth dates are generalized to year-month, placed on the 15th;
- ``sex_male``: 1 male, 0 female, NaN otherwise;
- latest value at or before ``at`` of each LOINC code list (status not void, value present, stored
  in the code's canonical unit — ingest converts; rows in another unit are ignored); undated rows
  count as the earliest, as in ``patient_features``; ``bmi`` falls back to weight / height²;
- a censored latest value (stored ``value_comparator`` ``<``, ``<=``, ``>=``, ``>``: ``<40`` is stored
  as 40) is used as its bound, as ``patient_features`` does at serving time (the model must see what
  the Risk service will compute), but never silently: each measurement has a ``<name>_censored``
  flag column (the bound was used; for a computed ``bmi``, its weight or height was a bound), which
  :func:`censored_counts` sums for the cohort report; frames without ``value_comparator`` (stores
  written before it was kept) have no censored values;
- ``charlson_index``: Charlson (original weights) over ICD-10-CM (else ICD-9-CM) codes of
  conditions with onset (else recorded date) at or before ``at`` or undated, not refuted / entered
  in error; NaN (unknown, never a false 0) when one of those conditions has no ICD code (a SNOMED
  code without a map); 0 with no conditions;
- ``prior_*_365d``: the patient's other encounters (not void) by class that *started* in the 365 days
  before the index admission (the index encounter itself excluded);
- ``length_of_stay_days``: (discharge − admission) in days.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from healthai.normalize import charlson
from healthai.normalize import features as shared
from healthai.normalize.units import CANONICAL

EARLIEST = pd.Timestamp("1677-09-22", tz="UTC")  # undated rows sort first, as in patient_features
HEART_RATE = "8867-4"
# model feature -> LOINC codes (first = preferred name); units are the canonical ones of ingest
MEASUREMENTS: dict[str, tuple[str, ...]] = {
    "sbp_last": (shared.SBP,),
    "dbp_last": (shared.DBP,),
    "heart_rate_last": (HEART_RATE,),
    "bmi": (shared.BMI,),
    "hba1c_pct": shared.LAB_CODES["hba1c_pct"],
    "creatinine_mg_dl": shared.LAB_CODES["creatinine_mg_dl"],
    "glucose_mg_dl": shared.LAB_CODES["glucose_mg_dl"],
    "sodium_mmol_l": shared.LAB_CODES["sodium_mmol_l"],
    "potassium_mmol_l": shared.LAB_CODES["potassium_mmol_l"],
}
ENCOUNTER_CLASSES = {"prior_inpatient_365d": "IMP", "prior_emergency_365d": "EMER",
                     "prior_outpatient_365d": "AMB"}
LOOKBACK = pd.Timedelta(days=365)
CENSORED_SUFFIX = "_censored"  # per measurement: its latest value is a bound (value_comparator)


def _times(s: pd.Series) -> pd.Series:
    return pd.to_datetime(s, utc=True).astype("datetime64[us, UTC]")


def _asof(index: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """Per index row: ``value`` and ``censored`` (a bound) of the latest ``rows`` entry of its patient at
    or before ``at``; NaN and False without one."""
    out = pd.DataFrame({"value": np.nan, "censored": False}, index=index.index)
    if rows.empty:
        return out
    left = index[["patient_id", "at"]].reset_index(names="_row").sort_values("at", kind="stable")
    right = rows[["patient_id", "effective", "value", "censored"]].sort_values("effective", kind="stable")
    merged = pd.merge_asof(left, right, left_on="at", right_on="effective", by="patient_id",
                           direction="backward", allow_exact_matches=True)
    rows_at = merged["_row"].to_numpy()
    out.loc[rows_at, "value"] = merged["value"].to_numpy(np.float64)
    out.loc[rows_at, "censored"] = merged["censored"].eq(True).to_numpy()
    return out


def observation_rows(observations: pd.DataFrame) -> pd.DataFrame:
    """Usable measurement rows: not void, a value, in the code's canonical unit; undated → earliest;
    ``censored``: the value is a bound (a ``value_comparator``)."""
    obs = observations[observations["value"].notna() & ~observations["status"].isin(shared.VOID_STATUS)]
    canonical = obs["loinc"].map(lambda c: CANONICAL[c].unit if c in CANONICAL else None)
    obs = obs[obs["unit"].eq(canonical) | canonical.isna()]
    comparator = obs["value_comparator"] if "value_comparator" in obs else pd.Series(None, index=obs.index)
    return obs.assign(effective=_times(obs["effective"]).fillna(EARLIEST),
                      value=obs["value"].astype(np.float64),
                      censored=comparator.notna().to_numpy(bool))


def measurements(index: pd.DataFrame, observations: pd.DataFrame) -> pd.DataFrame:
    """Latest value of each measurement (``MEASUREMENTS``) and its ``<name>_censored`` flag."""
    obs = observation_rows(observations)
    out = pd.DataFrame(index=index.index)
    flags = pd.DataFrame(index=index.index)
    for name, codes in MEASUREMENTS.items():
        latest = _asof(index, obs[obs["loinc"].isin(codes)])
        out[name], flags[name + CENSORED_SUFFIX] = latest["value"], latest["censored"]
    weight = _asof(index, obs[obs["loinc"] == shared.WEIGHT])
    height = _asof(index, obs[obs["loinc"] == shared.HEIGHT])
    computed = pd.Series(np.asarray(shared.bmi(weight["value"].to_numpy(), height["value"].to_numpy()),
                                    np.float64), index=index.index)
    fallback = out["bmi"].isna() & computed.notna()
    out["bmi"] = out["bmi"].fillna(computed)
    flags["bmi" + CENSORED_SUFFIX] |= fallback & (weight["censored"] | height["censored"])
    return out.join(flags.astype(bool))


def censored_counts(features: pd.DataFrame) -> dict[str, int]:
    """Per measurement: how many rows of ``features`` (index rows of a cohort) use a censored latest value
    (its bound) — for the cohort report."""
    return {name: int(features[name + CENSORED_SUFFIX].sum()) for name in MEASUREMENTS
            if name + CENSORED_SUFFIX in features}


def charlson_index(index: pd.DataFrame, conditions: pd.DataFrame, weights: str = "charlson") -> pd.Series:
    cond = conditions[~conditions["verification_status"].isin(["refuted", "entered-in-error"])]
    when = _times(cond["onset"]).fillna(_times(cond["recorded"]))
    cond = cond.assign(when=when)[["patient_id", "when", "icd10_code", "icd9_code"]]
    pairs = index[["patient_id", "at"]].reset_index(names="_row").merge(cond, on="patient_id")
    pairs = pairs[pairs["when"].isna() | (pairs["when"] <= pairs["at"])]
    out = pd.Series(0.0, index=index.index)  # no conditions: every group absent
    if pairs.empty:
        return out
    icd10 = pairs["icd10_code"].where(pairs["icd10_code"].notna(), None)
    use9 = pairs["icd10_code"].isna()
    icd9 = pairs["icd9_code"].where(pairs["icd9_code"].notna() & use9, None)
    hits = charlson.groups_matrix(icd10, "icd10") | charlson.groups_matrix(icd9, "icd9")
    groups = pd.DataFrame(hits, columns=list(charlson.GROUPS)).groupby(pairs["_row"].to_numpy()).any()
    unknown = (pairs["icd10_code"].isna() & pairs["icd9_code"].isna()).groupby(pairs["_row"].to_numpy()).any()
    values = charlson.index_from_matrix(groups.to_numpy(), weights)
    out.loc[groups.index] = np.where(unknown.reindex(groups.index).to_numpy(), np.nan, values)
    return out


def prior_counts(index: pd.DataFrame, encounters: pd.DataFrame) -> pd.DataFrame:
    """Encounters by class that started in [admission − 365 d, admission), the index one excluded."""
    enc = encounters[["patient_id", "encounter_id", "class_code", "start"]]
    pairs = index[["patient_id", "encounter_id", "start"]].reset_index(names="_row").merge(
        enc, on="patient_id", suffixes=("", "_other"))
    keep = ((pairs["encounter_id_other"] != pairs["encounter_id"]) & (pairs["start_other"] < pairs["start"])
            & (pairs["start_other"] >= pairs["start"] - LOOKBACK))
    pairs = pairs[keep]
    out = pd.DataFrame(index=index.index)
    for name, cls in ENCOUNTER_CLASSES.items():
        counts = pairs[pairs["class_code"] == cls].groupby("_row").size()
        out[name] = counts.reindex(index.index).fillna(0).astype(np.float64)
    return out


def index_features(index: pd.DataFrame, *, patients: pd.DataFrame, encounters: pd.DataFrame,
                   conditions: pd.DataFrame, observations: pd.DataFrame) -> pd.DataFrame:
    """One feature row per index row (``index``: patient_id, encounter_id, start, at)."""
    pat = patients.set_index("patient_id").reindex(index["patient_id"])
    year = pd.to_numeric(pat["birth_year"], errors="coerce").to_numpy(np.float64)
    month = pd.to_numeric(pat["birth_month"], errors="coerce").to_numpy(np.float64)
    births = np.full(len(index), np.datetime64("NaT"), dtype="datetime64[D]")
    for i in np.flatnonzero(np.isfinite(year) & (year > 0)):
        births[i] = shared.birth_date(int(year[i]), None if np.isnan(month[i]) else int(month[i]))
    at_days = index["at"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[D]")
    out = pd.DataFrame(index=index.index)
    out["age_years"] = np.atleast_1d(shared.age_years(births, at_days)) if len(index) else []
    sex = pat["sex"].to_numpy(object)
    out["sex_male"] = np.where(sex == "male", 1.0, np.where(sex == "female", 0.0, np.nan))
    out["length_of_stay_days"] = (index["at"] - index["start"]).dt.total_seconds().to_numpy() / 86400.0
    out = out.join(prior_counts(index, encounters))
    out["charlson_index"] = charlson_index(index, conditions)
    return out.join(measurements(index, observations))
