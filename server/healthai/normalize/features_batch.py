"""Vectorized :func:`healthai.normalize.features.patient_features` for many patients (training, batch
scoring). Same definitions, same primitives (``features.age_years``, ``age_risk``, ``bmi``,
``sbp_trend_frame``, ``charlson.groups_matrix``); a test asserts both agree patient by patient.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from healthai.normalize import charlson
from healthai.normalize import features as f

_EARLIEST = pd.Timestamp("1677-09-22", tz="UTC")  # undated rows sort first, as in patient_features


def _frame(x: Any, columns: list[str]) -> pd.DataFrame:
    if x is None:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    df = x.to_pandas() if isinstance(x, pa.Table) else pd.DataFrame(x)
    return df[columns].copy()


def _times(s: pd.Series) -> pd.Series:
    t = pd.to_datetime(s, utc=True)
    return t.fillna(_EARLIEST)


def _latest(obs: pd.DataFrame, codes: tuple[str, ...]) -> pd.Series:
    rows = obs[obs["loinc"].isin(codes)]
    return rows.groupby("patient_id", sort=False)["value"].last()


def features_frame(
    patients: Any,
    *,
    observations: Any = None,
    conditions: Any = None,
    encounters: Any = None,
    at: dt.date | dt.datetime,
    weights: str = "charlson",
) -> pd.DataFrame:
    """One row per patient (index ``patient_id``), columns ``features.FEATURE_NAMES`` (float, NaN = unknown).

    Inputs: normalized tables (pyarrow or pandas) in the :mod:`healthai.normalize.records` schemas.
    """
    end = pd.Timestamp(f._at_end(at))
    pat = _frame(patients, ["patient_id", "birth_year", "birth_month", "sex"]).drop_duplicates("patient_id")
    out = pd.DataFrame(index=pd.Index(pat["patient_id"], name="patient_id"))
    year = pd.to_numeric(pat["birth_year"], errors="coerce").to_numpy(np.float64)
    month = pd.to_numeric(pat["birth_month"], errors="coerce").to_numpy(np.float64)
    known = ~np.isnan(year) & (year > 0)
    births = np.full(len(pat), np.datetime64("NaT"), dtype="datetime64[D]")
    for i in np.flatnonzero(known):
        births[i] = np.datetime64(f.birth_date(int(year[i]), None if np.isnan(month[i]) else int(month[i])))
    age = f.age_years(births, np.datetime64(end.date()))
    out["age_years"] = np.where(known, age, np.nan)
    out["age_risk"] = f.age_risk(out["age_years"].to_numpy())
    sex = pat["sex"].to_numpy(object)
    out["sex_male"] = np.where(sex == "male", 1.0, np.where(sex == "female", 0.0, np.nan))

    obs = _frame(observations, ["patient_id", "loinc", "value", "effective", "status"])
    obs = obs[obs["value"].notna() & ~obs["status"].isin(f.VOID_STATUS)].assign(
        effective=lambda d: _times(d["effective"])
    )
    obs = obs[obs["effective"] <= end].sort_values(["patient_id", "effective"], kind="stable")
    obs["value"] = obs["value"].astype(np.float64)
    bmi = _latest(obs, (f.BMI,))
    w, h = _latest(obs, f.WEIGHTS).align(_latest(obs, (f.HEIGHT,)), join="inner")
    computed = pd.Series(
        np.atleast_1d(f.bmi(w.to_numpy(), h.to_numpy())) if len(w) else [], index=w.index, dtype=np.float64
    )
    out["bmi"] = bmi.reindex(out.index).fillna(computed.reindex(out.index))
    sbp = obs[obs["loinc"] == f.SBP]
    trend = f.sbp_trend_frame(sbp) if len(sbp) else pd.DataFrame(columns=["sbp_ewm", "sbp_trend", "sbp_last"])
    out["sbp_last"] = trend["sbp_last"].reindex(out.index)
    out["sbp_ewm"] = trend["sbp_ewm"].reindex(out.index)
    out["sbp_trend"] = trend["sbp_trend"].reindex(out.index)
    out["dbp_last"] = _latest(obs, (f.DBP,)).reindex(out.index)
    for name, codes in f.LAB_CODES.items():
        out[name] = _latest(obs, codes).reindex(out.index)

    enc = _frame(encounters, ["patient_id", "class_code", "start", "status"])
    enc = enc[~enc["status"].isin(f.VOID_ENCOUNTER_STATUS)]
    enc = enc.assign(start=pd.to_datetime(enc["start"], utc=True))
    enc = enc[(enc["start"] >= end - pd.Timedelta(days=365)) & (enc["start"] <= end)]
    for col, cls in (("n_inpatient_365d", "IMP"), ("n_emergency_365d", "EMER"), ("n_outpatient_365d", "AMB")):
        out[col] = enc[enc["class_code"] == cls].groupby("patient_id").size().reindex(out.index).fillna(0.0)

    out = _no_conditions_means_none(out.join(_charlson(conditions, end, weights)))
    return out[list(f.FEATURE_NAMES)].astype(np.float64)


def _charlson(conditions: Any, end: pd.Timestamp, weights: str) -> pd.DataFrame:
    cols = ["patient_id", "icd10_code", "icd9_code", "verification_status", "onset", "recorded"]
    cond = _frame(conditions, cols)
    cond = cond[~cond["verification_status"].isin(["refuted", "entered-in-error"])]
    when = pd.to_datetime(cond["onset"], utc=True).fillna(pd.to_datetime(cond["recorded"], utc=True))
    cond = cond[when.isna() | (when <= end)]
    icd10 = charlson.groups_matrix(cond["icd10_code"].where(cond["icd10_code"].notna(), None), "icd10")
    use9 = cond["icd10_code"].isna().to_numpy()
    icd9 = charlson.groups_matrix(cond["icd9_code"].where(cond["icd9_code"].notna() & use9, None), "icd9")
    unmapped = (cond["icd10_code"].isna() & cond["icd9_code"].isna()).to_numpy()
    groups = pd.DataFrame(icd10 | icd9, columns=list(charlson.GROUPS), index=cond["patient_id"].to_numpy())
    per = groups.groupby(level=0).any().astype(np.float64)
    unknown = pd.Series(unmapped, index=cond["patient_id"].to_numpy()).groupby(level=0).any()
    per = per.where(~((per == 0.0) & unknown.reindex(per.index).to_numpy()[:, None]), np.nan)
    result = per.rename(columns=lambda g: f"charlson_{g}")
    result["charlson_index"] = charlson.index_from_matrix(per.to_numpy(), weights)
    result["charlson_available"] = (~unknown.reindex(per.index)).astype(np.float64)
    return result


def _no_conditions_means_none(frame: pd.DataFrame) -> pd.DataFrame:
    """Patients with no condition rows: every group absent (0), index 0, available."""
    names = [f"charlson_{g}" for g in charlson.GROUPS]
    missing = frame["charlson_available"].isna()
    frame.loc[missing, names] = 0.0
    frame.loc[missing, "charlson_index"] = 0.0
    frame.loc[missing, "charlson_available"] = 1.0
    return frame
