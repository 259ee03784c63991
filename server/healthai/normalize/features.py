"""Model-input features — the ONE definition used by training and by the Risk service.

Definitions
-----------
- ``age_years(birth, at)``: (at − birth) in days / 365.2425. Stored birth dates are generalized to
  year + month; :func:`birth_date` places them on the 15th (July 1st when only the year is known).
- ``age_risk(age) = 1 / (1 + exp(−0.1·(age − 50)))`` (the product brief's curve).
- SBP trend (LOINC 8480-6, readings ordered by time, span 7 → α = 2/(7+1) = 0.25, pandas
  ``ewm(span=7, adjust=False)``): ``sbp_ewm`` = exponentially weighted mean of the readings (level);
  ``sbp_trend`` = exponentially weighted mean of the first differences between consecutive readings
  (mmHg per reading; positive = rising). One reading → level only, trend NaN; none → both NaN.
- ``bmi``: latest LOINC 39156-5, else latest weight (kg; ``WEIGHTS``: 29463-7 or 3141-9, whichever is
  latest) / (latest height (m))².
- latest labs (``LAB_CODES``): the most recent value at or before ``at``, in canonical units.
- Charlson: :mod:`healthai.normalize.charlson` (Quan 2005 lists, original Charlson weights by
  default); unavailable (NaN, ``charlson_available = 0``) when any condition is coded only in a
  system we cannot map (e.g. SNOMED CT without a loaded map) — never a false 0.
- utilisation: encounters in the 365 days before ``at`` by class (inpatient IMP, emergency EMER,
  outpatient AMB) — the analogue of Diabetes 130's number_inpatient/emergency/outpatient.
- rows with status ``entered-in-error`` or ``cancelled`` (and planned encounters) are ignored.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from healthai.normalize import charlson
from healthai.normalize.redact import withheld

SBP_SPAN = 7
SBP, DBP, BMI, WEIGHT, HEIGHT = "8480-6", "8462-4", "39156-5", "29463-7", "8302-2"
WEIGHTS = (WEIGHT, "3141-9")  # body weight; measured body weight (InterSystems IRIS, OpenMRS send it)
# Every code of a lab has a canonical unit (units.CANONICAL) equal to the feature's, whatever unit it came in.
LAB_CODES: dict[str, tuple[str, ...]] = {
    "glucose_mg_dl": ("2345-7", "2339-0", "14749-6", "15074-8", "41653-7"),
    "hba1c_pct": ("4548-4", "17856-6", "4549-2", "17855-8", "59261-8"),
    "creatinine_mg_dl": ("2160-0", "38483-4", "14682-9", "59826-8", "77140-2"),
    "egfr": ("33914-3", "48642-3", "48643-1", "50044-7", "62238-1", "69405-9", "77147-7", "88293-6",
             "88294-4", "98979-8"),
    "cholesterol_total_mg_dl": ("2093-3", "14647-2"),
    "ldl_mg_dl": ("18262-6", "13457-7", "2089-1", "22748-8", "39469-2", "69419-0"),
    "hdl_mg_dl": ("2085-9", "14646-4"),
    "sodium_mmol_l": ("2951-2", "2947-0"),
    "potassium_mmol_l": ("2823-3", "6298-4"),
}
FEATURE_NAMES: tuple[str, ...] = (
    "age_years", "age_risk", "sex_male", "bmi", "sbp_last", "sbp_ewm", "sbp_trend", "dbp_last",
    *LAB_CODES, "n_inpatient_365d", "n_emergency_365d", "n_outpatient_365d",
    *(f"charlson_{g}" for g in charlson.GROUPS), "charlson_index", "charlson_available",
)  # fmt: skip

_DAYS_PER_YEAR = 365.2425
VOID_STATUS = frozenset({"entered-in-error", "cancelled"})
VOID_ENCOUNTER_STATUS = VOID_STATUS | {"planned"}


def birth_date(year: int, month: int | None) -> dt.date:
    """Representative date of a generalized birth date (15th of the month, or July 1st)."""
    return dt.date(int(year), int(month), 15) if month else dt.date(int(year), 7, 1)


def age_years(birth: Any, at: Any) -> Any:
    """Age in years (float). Scalars (date/datetime) or numpy datetime64 arrays (vectorized)."""
    b = np.asarray(birth, dtype="datetime64[D]")
    a = np.asarray(at, dtype="datetime64[D]")
    diff = a - b
    out = np.where(np.isnat(diff), np.nan, diff.astype(np.float64)) / _DAYS_PER_YEAR  # NaT → NaN
    return float(out) if out.ndim == 0 else out


def age_from_band(band: Any) -> Any:
    """Midpoint of an age band like ``"[70-80)"`` → 75.0 (Diabetes 130); vectorized over arrays."""
    arr = np.asarray(band, dtype=object)
    flat = [_band_mid(x) for x in arr.reshape(-1)]
    out = np.array(flat, dtype=np.float64).reshape(arr.shape)
    return float(out) if out.ndim == 0 else out


def _band_mid(band: Any) -> float:
    if band is None:
        return math.nan
    s = str(band).strip().strip("[]()")
    lo, sep, hi = s.partition("-")
    if not sep:
        raise ValueError(f"not an age band like [70-80) {withheld(str(band))}")
    return (float(lo) + float(hi)) / 2.0


def age_risk(age: Any) -> Any:
    """1 / (1 + exp(-0.1 (age - 50))); vectorized."""
    out = 1.0 / (1.0 + np.exp(-0.1 * (np.asarray(age, dtype=np.float64) - 50.0)))
    return float(out) if np.ndim(out) == 0 else out


def bmi(weight_kg: Any, height_cm: Any) -> Any:
    h = np.asarray(height_cm, dtype=np.float64) / 100.0
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.asarray(weight_kg, dtype=np.float64) / (h * h)
    out = np.where(h > 0, out, np.nan)
    return float(out) if out.ndim == 0 else out


def ewm_last(values: Sequence[float], span: int = SBP_SPAN) -> float:
    """Last value of the EWM mean (adjust=False): m0 = x0, m_t = α·x_t + (1−α)·m_{t−1}."""
    alpha = 2.0 / (span + 1.0)
    m = math.nan
    for x in values:
        m = x if math.isnan(m) else alpha * x + (1.0 - alpha) * m
    return m


def sbp_trend(values: Sequence[float], span: int = SBP_SPAN) -> tuple[float, float]:
    """(EWM level, EWM of first differences) of time-ordered SBP readings; NaN where undefined."""
    v = [float(x) for x in values if x is not None and not math.isnan(x)]
    level = ewm_last(v, span)
    diffs = [b - a for a, b in itertools.pairwise(v)]
    return level, ewm_last(diffs, span)


def sbp_trend_frame(
    df: pd.DataFrame,
    *,
    patient: str = "patient_id",
    time: str = "effective",
    value: str = "value",
    span: int = SBP_SPAN,
) -> pd.DataFrame:
    """Vectorized :func:`sbp_trend` for many patients: index patient, columns sbp_ewm, sbp_trend, sbp_last."""
    d = df[[patient, time, value]].dropna(subset=[value]).sort_values([patient, time], kind="stable")
    g = d.groupby(patient, sort=False)[value]
    level = g.transform(lambda s: s.ewm(span=span, adjust=False).mean())
    diff = g.diff()
    d = d.assign(_level=level, _diff=diff)
    trend = (
        d.dropna(subset=["_diff"])
        .groupby(patient, sort=False)["_diff"]
        .agg(lambda s: s.ewm(span=span, adjust=False).mean().iloc[-1])
    )
    last = d.groupby(patient, sort=False).agg(sbp_ewm=("_level", "last"), sbp_last=(value, "last"))
    return last.join(trend.rename("sbp_trend"), how="left")[["sbp_ewm", "sbp_trend", "sbp_last"]]


def _rows(x: pa.Table | Iterable[Mapping[str, Any]] | None) -> list[Mapping[str, Any]]:
    if x is None:
        return []
    return x.to_pylist() if isinstance(x, pa.Table) else list(x)


def _when(row: Mapping[str, Any], key: str) -> dt.datetime | None:
    t = row.get(key)
    if isinstance(t, dt.datetime):
        return t if t.tzinfo else t.replace(tzinfo=dt.UTC)
    if isinstance(t, dt.date):
        return dt.datetime(t.year, t.month, t.day, tzinfo=dt.UTC)
    return None


def _at_end(at: dt.date | dt.datetime) -> dt.datetime:
    if isinstance(at, dt.datetime):
        return at if at.tzinfo else at.replace(tzinfo=dt.UTC)
    return dt.datetime(at.year, at.month, at.day, 23, 59, 59, tzinfo=dt.UTC)


def latest_values(
    observations: Iterable[Mapping[str, Any]], codes: Sequence[str], at: dt.datetime
) -> list[float]:
    """Time-ordered values of the given LOINC codes at or before ``at`` (undated rows first)."""
    hits = []
    for r in observations:
        when = _when(r, "effective")
        if r.get("status") in VOID_STATUS:
            continue
        if r.get("loinc") in codes and r.get("value") is not None and (when is None or when <= at):
            hits.append((when or dt.datetime.min.replace(tzinfo=dt.UTC), float(r["value"])))
    hits.sort(key=lambda h: h[0])
    return [v for _, v in hits]


def latest_labs(observations: Any, at: dt.date | dt.datetime) -> dict[str, float]:
    rows = _rows(observations)
    end = _at_end(at)
    out = {}
    for name, codes in LAB_CODES.items():
        vals = latest_values(rows, codes, end)
        out[name] = vals[-1] if vals else math.nan
    return out


def charlson_features(
    conditions: Any, at: dt.date | dt.datetime, weights: str = "charlson"
) -> dict[str, float]:
    """Charlson groups (1/0/NaN), index and availability from normalized condition rows."""
    end = _at_end(at)
    icd10, icd9, unmapped = [], [], 0
    for r in _rows(conditions):
        if r.get("verification_status") in ("refuted", "entered-in-error"):
            continue
        onset = _when(r, "onset") or _when(r, "recorded")
        if onset is not None and onset > end:
            continue
        if r.get("icd10_code"):
            icd10.append(r["icd10_code"])
        elif r.get("icd9_code"):
            icd9.append(r["icd9_code"])
        else:
            unmapped += 1
    groups = charlson.comorbidities(icd10=icd10, icd9=icd9, unmapped=unmapped)
    out = {f"charlson_{g}": v for g, v in groups.items()}
    out["charlson_index"] = charlson.charlson_index(groups, weights)
    out["charlson_available"] = 0.0 if unmapped else 1.0
    return out


def patient_features(
    patient: Mapping[str, Any],
    *,
    observations: Any = None,
    conditions: Any = None,
    encounters: Any = None,
    at: dt.date | dt.datetime,
    weights: str = "charlson",
) -> dict[str, float]:
    """Model-input features (``FEATURE_NAMES``, floats, NaN = unknown) of one patient at ``at``.

    Inputs are normalized rows (pyarrow Tables or dicts in :mod:`healthai.normalize.records`
    schemas) of this one patient.
    """
    end = _at_end(at)
    obs = _rows(observations)
    out: dict[str, float] = {}
    if patient.get("birth_year"):
        out["age_years"] = age_years(
            birth_date(patient["birth_year"], patient.get("birth_month")), end.date()
        )
    else:
        out["age_years"] = math.nan
    out["age_risk"] = age_risk(out["age_years"]) if not math.isnan(out["age_years"]) else math.nan
    sex = patient.get("sex")
    out["sex_male"] = 1.0 if sex == "male" else 0.0 if sex == "female" else math.nan
    bmis = latest_values(obs, (BMI,), end)
    if bmis:
        out["bmi"] = bmis[-1]
    else:
        w, h = latest_values(obs, WEIGHTS, end), latest_values(obs, (HEIGHT,), end)
        out["bmi"] = bmi(w[-1], h[-1]) if w and h else math.nan
    sbp = latest_values(obs, (SBP,), end)
    out["sbp_last"] = sbp[-1] if sbp else math.nan
    out["sbp_ewm"], out["sbp_trend"] = sbp_trend(sbp)
    dbp = latest_values(obs, (DBP,), end)
    out["dbp_last"] = dbp[-1] if dbp else math.nan
    out.update(latest_labs(obs, end))
    counts = {"IMP": 0, "EMER": 0, "AMB": 0}
    since = end - dt.timedelta(days=365)
    for e in _rows(encounters):
        start = _when(e, "start")
        if e.get("status") in VOID_ENCOUNTER_STATUS:
            continue
        if start is not None and since <= start <= end and e.get("class_code") in counts:
            counts[e["class_code"]] += 1
    out["n_inpatient_365d"], out["n_emergency_365d"] = float(counts["IMP"]), float(counts["EMER"])
    out["n_outpatient_365d"] = float(counts["AMB"])
    out.update(charlson_features(conditions, end, weights))
    return {name: float(out[name]) for name in FEATURE_NAMES}
