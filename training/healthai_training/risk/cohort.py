"""Any tabular cohort (CSV or Parquet) + a TOML spec (``cohort_spec``) → :class:`RiskData` with
per-feature domains.

Everything is checked before training: unknown spec keys, unknown columns, non-numeric values,
values outside the domain (per policy), a target that is not binary. Errors name the spec key,
the column and the first offending data rows (1-based, as in a spreadsheet without its header).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from healthai_training.risk.cohort_spec import CohortSpec, FeatureRule, load_spec, parse_spec
from healthai_training.risk.cohort_spec import input_error as _err
from healthai_training.risk.data import FeatureSpec, RiskData, patient_split

__all__ = ["CohortSpec", "FeatureRule", "build_cohort", "fill_value", "load_cohort", "load_spec", "midpoint",
           "parse_spec", "read_table", "spec_features"]


def read_table(path: Path | str) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise _err(f"table file not found: {path}", "table")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in (".csv", ".txt"):
            return pd.read_csv(path)
    except (ValueError, OSError) as exc:
        raise _err(f"table {path}: cannot be read ({exc})", "table") from exc
    raise _err(f"table {path}: use a .csv or .parquet file (got {suffix or 'no suffix'})", "table")


def _rows(mask: np.ndarray, limit: int = 5) -> str:
    idx = np.flatnonzero(mask)
    shown = ", ".join(str(i + 1) for i in idx[:limit])
    return f"{len(idx)} rows (first: {shown})"


def _numeric(df: pd.DataFrame, column: str, where: str) -> np.ndarray:
    values = pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=np.float64)
    bad = np.isnan(values) & df[column].notna().to_numpy()
    if bad.any():
        first = df[column].to_numpy()[np.flatnonzero(bad)[0]]
        raise _err(f"{where}: column {column!r} has non-numeric values in {_rows(bad)}, e.g. {first!r}",
                   where)
    return values


class _Builder:
    """Turns one rule into model columns, a missing mask and rows to drop."""

    def __init__(self, df: pd.DataFrame) -> None:
        self.df = df
        self.drop = np.zeros(len(df), dtype=bool)
        self.columns: list[np.ndarray] = []
        self.features: list[FeatureSpec] = []
        self.domains: dict[str, dict[str, Any]] = {}
        self.impute: list[bool] = []  # per model column: impute NaN with the training mean

    def add(self, spec: FeatureSpec, values: np.ndarray, domain: dict[str, Any], impute: bool) -> None:
        self.features.append(spec)
        self.columns.append(values)
        self.domains[spec.name] = domain
        self.impute.append(impute)

    def _policy(self, rule: FeatureRule, where: str, missing: np.ndarray, outside: np.ndarray) -> np.ndarray:
        column = ",".join(rule.columns)
        if outside.any():
            lo = "-inf" if rule.min is None else f"{rule.min:g}"
            hi = "inf" if rule.max is None else f"{rule.max:g}"
            domain = f"[{lo}, {hi}]" if rule.type == "numeric" else "its domain"
            if rule.out_of_domain == "error":
                raise _err(f"{where}: column {column!r} has values outside {domain} in {_rows(outside)} "
                           "(set out_of_domain = \"missing\" or \"drop_row\" to accept them)", where)
            if rule.out_of_domain == "drop_row":
                self.drop |= outside
            else:
                missing = missing | outside
        if missing.any():
            if rule.missing == "error":
                raise _err(f"{where}: column {column!r} is missing in {_rows(missing)} (missing = \"error\")",
                           where)
            if rule.missing == "drop_row":
                self.drop |= missing
        return missing

    def rule(self, rule: FeatureRule) -> None:
        where = f"features.{rule.name}"
        for column in rule.columns:
            if column not in self.df.columns:
                raise _err(f"{where}: unknown column {column!r}; the table has {list(self.df.columns)}",
                           where)
        if rule.type == "onehot":
            self._onehot(rule, where)
            return
        raw = self.df[rule.columns[0]]
        missing = raw.isna().to_numpy() | raw.isin(list(rule.missing_values)).to_numpy()
        if rule.type == "numeric":
            values = _numeric(self.df, rule.columns[0], where)
            outside = ~missing & (
                (values < (rule.min if rule.min is not None else -np.inf))
                | (values > (rule.max if rule.max is not None else np.inf))
            )
            missing = self._policy(rule, where, missing, outside)
            values = np.where(missing, np.nan, values)
            domain = {"type": "numeric", "min": rule.min, "max": rule.max, "group": None}
            self.add(FeatureSpec(rule.name, rule.description, rule.unit, limits=(rule.min, rule.max)), values,
                     domain, True)
        elif rule.type == "binary":
            outside = ~missing & ~raw.isin(list(rule.values)).to_numpy()
            missing = self._policy(rule, where, missing, outside)
            flag = (raw == rule.positive).to_numpy(dtype=np.float64)
            self.add(
                FeatureSpec(rule.name, rule.description, "flag"),
                np.where(missing, np.nan, flag),
                {"type": "binary", "min": 0.0, "max": 1.0, "group": None},
                True,
            )
        else:  # categorical → one flag per category
            outside = ~missing & ~raw.isin(list(rule.categories)).to_numpy()
            missing = self._policy(rule, where, missing, outside)
            for cat in rule.categories:
                label = rule.labels.get(str(cat), str(cat))
                flag = np.where(missing, np.nan, (raw == cat).to_numpy(dtype=np.float64))
                self.add(
                    FeatureSpec(f"{rule.name}_{label}", f"{rule.description}: {label}", "flag",
                                group=rule.name),
                    flag,
                    {"type": "onehot", "min": 0.0, "max": 1.0, "group": rule.name},
                    True,
                )
        if rule.missing == "indicator":
            self._indicator(rule, missing)

    def _onehot(self, rule: FeatureRule, where: str) -> None:
        block = np.column_stack([_numeric(self.df, c, where) for c in rule.columns])
        missing = np.isnan(block).all(axis=1)
        partial = np.isnan(block).any(axis=1) & ~missing
        present = np.nan_to_num(block)
        not_onehot = ~np.isin(present, (0.0, 1.0)).all(axis=1) | (present.sum(axis=1) != 1)
        outside = ~missing & (partial | not_onehot)
        missing = self._policy(rule, where, missing, outside)
        for j, column in enumerate(rule.columns):
            self.add(
                FeatureSpec(column, f"{rule.description}: {column}", "flag", group=rule.name),
                np.where(missing, np.nan, present[:, j]),
                {"type": "onehot", "min": 0.0, "max": 1.0, "group": rule.name},
                True,
            )
        if rule.missing == "indicator":
            self._indicator(rule, missing)

    def _indicator(self, rule: FeatureRule, missing: np.ndarray) -> None:
        self.add(
            FeatureSpec(f"{rule.name}_missing", f"1 if {rule.name} was missing", "flag"),
            missing.astype(np.float64),
            {"type": "binary", "min": 0.0, "max": 1.0, "group": None},
            False,
        )


def _target(df: pd.DataFrame, spec: CohortSpec) -> np.ndarray:
    where = "cohort.target"
    if spec.target not in df.columns:
        raise _err(f"{where}: unknown column {spec.target!r}; the table has {list(df.columns)}", where)
    raw = df[spec.target]
    if raw.isna().any():
        raise _err(f"{where}: target {spec.target!r} is empty in {_rows(raw.isna().to_numpy())}", where)
    if spec.positive is not None:
        y = raw.isin(list(spec.positive)).to_numpy(dtype=np.float32)
    else:
        values = sorted(map(str, pd.unique(raw)))
        if not raw.isin([0, 1, True, False]).all():
            raise _err(f"{where}: target {spec.target!r} must be binary 0/1 (or set positive = [...]); "
                       f"found values {values[:8]}", where)
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
                       f"{_rows(ids.isna().to_numpy())}", "cohort.patient_id")
        groups = pd.factorize(ids.astype(str))[0]
    else:
        groups = np.arange(len(df))
    builder = _Builder(df)
    for rule in spec.features:
        builder.rule(rule)
    names = [f.name for f in builder.features]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise _err(f"features: model feature names collide: {dupes}", "features")
    keep = ~builder.drop
    if keep.sum() == 0:
        raise _err("every row was dropped by the missing/out_of_domain policies", "features")
    x = np.column_stack(builder.columns)[keep]
    y, groups = y[keep], pd.factorize(groups[keep])[0]
    split = patient_split(groups, seed=seed)
    fill = np.array(builder.impute)
    if impute == "midpoint":
        means = np.array([fill_value(builder.domains[n], n) for n in names])
    else:  # flags take the training mode, so they stay 0/1 (their valid domain)
        means = np.nanmean(x[split["train"]], axis=0)
        flags = np.array([f.unit == "flag" for f in builder.features])
        means = np.where(flags, (means >= 0.5).astype(np.float64), means)
    for j in np.flatnonzero(fill):
        if np.isnan(means[j]):
            raise _err(f"features: {names[j]} has no value in any training row", f"features.{names[j]}")
        x[np.isnan(x[:, j]), j] = means[j]
    per_patient = np.bincount(groups)
    unit = (f"patient (column {spec.patient_id!r}; {int(per_patient.max())} rows at most per patient)"
            if spec.patient_id else "patient (one row per patient, rows_are_patients = true)")
    return RiskData(
        name=spec.name,
        x=x.astype(np.float32),
        y=y,
        features=builder.features,
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
        domains=builder.domains,
    )


def spec_features(spec: CohortSpec) -> tuple[list[FeatureSpec], dict[str, dict[str, Any]]]:
    """The model's features and domains from the spec alone (what a federated coordinator knows)."""
    columns = sorted({c for rule in spec.features for c in rule.columns})
    builder = _Builder(pd.DataFrame({c: pd.Series([], dtype=float) for c in columns}))
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
