"""A cohort table checked against its spec (:mod:`healthai.cohort.spec`) and turned into model
features: one-hot flags for categories, missing-value indicators, values outside the domain handled by
the spec's policy. Missing values stay NaN here: training imputes them (``train risk --table``), and
at Score time the model card's ``imputation`` block does the same on the server.

Shared by training and ``healthai-client score --table`` so a table is read the same way for both.
Errors name the spec key, the column and the first offending data rows (1-based, as in a spreadsheet
without its header).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from healthai.cohort.spec import CohortSpec, FeatureRule
from healthai.cohort.spec import input_error as _err


@dataclass(frozen=True)
class FeatureSpec:
    """A model input. ``limits``: clinical / definitional (min, max) of a numeric feature (None: no
    limit on that side); ``group``: the one-hot group a flag belongs to; ``requires``: a flag that must
    be set whenever this one is. They feed the card's valid domains (``risk.domains``)."""

    name: str
    description: str
    unit: str
    limits: tuple[float | None, float | None] | None = None
    group: str | None = None
    requires: str | None = None


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


def describe_rows(mask: np.ndarray, limit: int = 5) -> str:
    idx = np.flatnonzero(mask)
    shown = ", ".join(str(i + 1) for i in idx[:limit])
    return f"{len(idx)} rows (first: {shown})"


def _numeric(df: pd.DataFrame, column: str, where: str) -> np.ndarray:
    values = pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=np.float64)
    bad = np.isnan(values) & df[column].notna().to_numpy()
    if bad.any():  # the cells are not shown: a column named by mistake may hold identifiers
        raise _err(f"{where}: column {column!r} has non-numeric values in {describe_rows(bad)} (values not "
                   "shown)", where)
    return values


class FeatureBuilder:
    """Turns one rule into model columns, a missing mask and rows to drop."""

    def __init__(self, df: pd.DataFrame) -> None:
        self.df = df
        self.drop = np.zeros(len(df), dtype=bool)
        self.columns: list[np.ndarray] = []
        self.features: list[FeatureSpec] = []
        self.domains: dict[str, dict[str, Any]] = {}
        self.impute: list[bool] = []  # per model column: impute NaN with the training mean
        self.imputable: set[str] = set()  # features whose spec says missing = impute | indicator
        self.indicators: dict[str, str] = {}  # feature -> its missing indicator

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
                raise _err(f"{where}: column {column!r} has values outside {domain} in "
                           f"{describe_rows(outside)} (set out_of_domain = \"missing\" or \"drop_row\" to "
                           "accept them)", where)
            if rule.out_of_domain == "drop_row":
                self.drop |= outside
            else:
                missing = missing | outside
        if missing.any():
            if rule.missing == "error":
                raise _err(f"{where}: column {column!r} is missing in {describe_rows(missing)} "
                           "(missing = \"error\")", where)
            if rule.missing == "drop_row":
                self.drop |= missing
        return missing

    def rule(self, rule: FeatureRule) -> None:
        """Add the model columns of one spec rule, noting which may be missing (and their indicator)."""
        start = len(self.features)
        self._columns(rule)
        indicator = f"{rule.name}_missing" if rule.missing == "indicator" else None
        for spec in self.features[start:]:
            if spec.name == indicator or rule.missing not in ("impute", "indicator"):
                continue
            self.imputable.add(spec.name)
            if indicator:
                self.indicators[spec.name] = indicator

    def _columns(self, rule: FeatureRule) -> None:
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


@dataclass(frozen=True)
class CohortFeatures:
    features: list[FeatureSpec]
    x: np.ndarray  # float64 [rows x features]; NaN = missing (imputed later), rows dropped included
    impute: np.ndarray  # bool per feature: NaN is filled in (every feature but missing indicators)
    drop: np.ndarray  # bool per row: dropped by a missing / out_of_domain = "drop_row" policy
    domains: dict[str, dict[str, Any]]
    imputable: frozenset[str]  # features the spec lets be missing (missing = impute | indicator)
    indicators: dict[str, str]  # feature -> its missing-indicator feature

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]


def cohort_features(df: pd.DataFrame, spec: CohortSpec) -> CohortFeatures:
    """Check ``df`` against ``spec`` and build the model's feature columns (NaN where missing)."""
    builder = FeatureBuilder(df)
    for rule in spec.features:
        builder.rule(rule)
    names = [f.name for f in builder.features]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise _err(f"features: model feature names collide: {dupes}", "features")
    x = np.column_stack(builder.columns) if builder.columns else np.zeros((len(df), 0))
    return CohortFeatures(builder.features, x, np.array(builder.impute, dtype=bool), builder.drop,
                          builder.domains, frozenset(builder.imputable), dict(builder.indicators))
