"""Any tabular cohort (CSV or Parquet) + a TOML spec (:mod:`healthai.cohort.spec`) → :class:`RiskData`
with per-feature domains; the table → features step is :mod:`healthai.cohort.features` (shared with
``healthai-client score --table``), the target, patient split and imputation are here.

Everything is checked before training: unknown spec keys, unknown columns, non-numeric values,
values outside the domain (per policy), a target that is not binary. Errors name the spec key,
the column and the first offending data rows (1-based, as in a spreadsheet without its header).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from healthai.cohort.features import FeatureBuilder, cohort_features, describe_rows, read_table
from healthai.cohort.spec import CohortSpec, FeatureRule, load_spec, parse_spec
from healthai.cohort.spec import input_error as _err
from healthai_training.risk.data import FeatureSpec, RiskData, patient_split

__all__ = ["CohortSpec", "FeatureRule", "build_cohort", "fill_value", "load_cohort", "load_spec", "midpoint",
           "parse_spec", "read_table", "spec_features"]


def _target(df: pd.DataFrame, spec: CohortSpec) -> np.ndarray:
    where = "cohort.target"
    if spec.target not in df.columns:
        raise _err(f"{where}: unknown column {spec.target!r}; the table has {list(df.columns)}", where)
    raw = df[spec.target]
    if raw.isna().any():
        empty = describe_rows(raw.isna().to_numpy())
        raise _err(f"{where}: target {spec.target!r} is empty in {empty}", where)
    if spec.positive is not None:
        positive = raw.isin(list(spec.positive))
        negative = raw[~positive].value_counts()
        if len(negative) > 1:  # every label that is not positive would silently become negative
            shown = (", ".join(f"{v!r} ({c} rows)" for v, c in negative.items())
                     if len(negative) <= 8 and spec.target != spec.patient_id
                     else f"{len(negative)} distinct values (not shown)")
            raise _err(f"{where}: target {spec.target!r} is not binary: positive = {list(spec.positive)} "
                       f"matches {int(positive.sum())} rows and the other rows hold several values: {shown}; "
                       "a target holds one negative value (add the positive ones to positive = [...], "
                       "fix or drop the others)", where)
        y = positive.to_numpy(dtype=np.float32)
    else:
        values = sorted(map(str, pd.unique(raw)))
        if not raw.isin([0, 1, True, False]).all():
            # a few labels are shown (to write positive = [...]); many are likely identifiers: not shown
            found = (f"found values {values}" if len(values) <= 8 and spec.target != spec.patient_id
                     else f"found {len(values)} distinct values (not shown)")
            raise _err(f"{where}: target {spec.target!r} must be binary 0/1 (or set positive = [...]); "
                       f"{found}", where)
        y = raw.to_numpy(dtype=np.float32)
    if len(np.unique(y)) < 2:
        raise _err(f"{where}: target {spec.target!r} has a single class", where)
    return y


def build_cohort(
    df: pd.DataFrame, spec: CohortSpec, *, seed: int, source: str, impute: str = "train_mean"
) -> RiskData:
    """Validate ``df`` against ``spec``; impute (training-patient means, or with ``impute="midpoint"``
    the middle of each feature's domain: data-independent, for federated sites); split by patient."""
    y = _target(df, spec)
    if spec.patient_id is not None:
        if spec.patient_id not in df.columns:
            raise _err(f"cohort.patient_id: unknown column {spec.patient_id!r}; the table has "
                       f"{list(df.columns)}", "cohort.patient_id")
        ids = df[spec.patient_id]
        if ids.isna().any():
            raise _err(f"cohort.patient_id: column {spec.patient_id!r} is empty in "
                       f"{describe_rows(ids.isna().to_numpy())}", "cohort.patient_id")
        groups = pd.factorize(ids.astype(str))[0]
    else:
        groups = np.arange(len(df))
    table = cohort_features(df, spec)
    names = table.names
    keep = ~table.drop
    if keep.sum() == 0:
        raise _err("every row was dropped by the missing/out_of_domain policies", "features")
    x = table.x[keep]
    y, groups = y[keep], pd.factorize(groups[keep])[0]
    split = patient_split(groups, seed=seed)
    if impute == "midpoint":
        means = np.array([fill_value(table.domains[n], n) for n in names])
    else:  # flags take the training mode, so they stay 0/1 (their valid domain)
        shares = np.nanmean(x[split["train"]], axis=0)  # a flag's mean is its share of training rows
        flags = np.array([f.unit == "flag" for f in table.features])
        means = np.where(flags, (shares >= 0.5).astype(np.float64), shares)
        for group in dict.fromkeys(f.group for f in table.features if f.group):
            # a one-hot group's mode is its most frequent category: that flag 1, the others 0, so a
            # missing category is still exactly one (flag by flag, every share under 0.5 gives none)
            members = [j for j, f in enumerate(table.features) if f.group == group]
            means[members] = 0.0
            means[members[int(np.nanargmax(shares[members]))]] = 1.0
    missing = np.isnan(x)  # a DP run re-imputes these cells with DP values (risk.release)
    for j in np.flatnonzero(table.impute):
        if np.isnan(means[j]):
            raise _err(f"features: {names[j]} has no value in any training row", f"features.{names[j]}")
        x[np.isnan(x[:, j]), j] = means[j]
    imputation = {  # what Score does with a missing value (NaN) of a feature the spec lets be missing
        "values": {n: float(means[j]) for j, n in enumerate(names) if n in table.imputable},
        "indicators": table.indicators,
        "rule": "training mean (flags: mode)" if impute != "midpoint" else "domain midpoint (flags: 0)",
    }
    per_patient = np.bincount(groups)
    unit = (f"patient (column {spec.patient_id!r}; {int(per_patient.max())} rows at most per patient)"
            if spec.patient_id else "patient (one row per patient, rows_are_patients = true)")
    return RiskData(
        name=spec.name,
        x=x.astype(np.float32),
        y=y,
        features=table.features,
        split=split,
        description={
            "source": source,
            "label": f"{spec.target}" + (f" in {list(spec.positive)}" if spec.positive else " = 1"),
            "rows": int(keep.sum()),
            "rows_dropped": int((~keep).sum()),
            "patients": len(per_patient),
            "unit_of_row": "one row" if spec.patient_id else "one patient",
            "privacy_unit": unit,
            "spec": spec.description,
        },
        groups=groups if spec.patient_id else None,
        domains=table.domains,
        imputation=imputation,
        missing=missing,
    )


def spec_features(spec: CohortSpec) -> tuple[list[FeatureSpec], dict[str, dict[str, Any]]]:
    """The model's features and domains from the spec alone (what a federated coordinator knows)."""
    columns = sorted({c for rule in spec.features for c in rule.columns})
    builder = FeatureBuilder(pd.DataFrame({c: pd.Series([], dtype=float) for c in columns}))
    for rule in spec.features:
        builder.rule(rule)
    return builder.features, builder.domains


def fill_value(domain: dict[str, Any], name: str) -> float:
    """Data-independent imputation (federated sites): flags 0, numeric features their domain midpoint."""
    return 0.0 if domain["type"] in ("binary", "onehot") else midpoint(domain, name)


def midpoint(domain: dict[str, Any], name: str) -> float:
    if domain["min"] is None or domain["max"] is None:
        raise _err(f"features.{name}: federated training needs min and max in the spec (the model scales "
                   "each feature by its domain, not by site data)", f"features.{name}")
    return (float(domain["min"]) + float(domain["max"])) / 2


def load_cohort(table: Path | str, spec: Path | str, *, seed: int) -> tuple[RiskData, CohortSpec]:
    parsed = load_spec(spec)
    data = build_cohort(read_table(table), parsed, seed=seed, source=f"{Path(table).name} with spec "
                        f"{Path(spec).name}")
    return data, parsed
