"""The cohort spec (TOML) of ``healthai train risk --table --spec``, parsed and checked before any
data is read.

The spec (``training/examples/heart_cohort.toml`` is a worked example)::

    [cohort]
    name = "heart_cohort"             # model name is "risk_<name>" unless model_name is given
    target = "target"                 # 0/1 column, or give positive = [...] values
    patient_id = "patient"            # privacy unit; several rows per patient are allowed
    # rows_are_patients = true        # instead of patient_id: each row is one distinct patient

    [features.age]                    # key = model feature name; column defaults to the key
    type = "numeric"                  # numeric | binary | categorical | onehot
    min = 0
    max = 120
    missing = "impute"                # impute (training mean; flags: mode) | indicator (+ <name>_missing) |
                                      # drop_row | error
    missing_values = [0]              # sentinels that mean "not measured"
    out_of_domain = "error"           # error | missing | drop_row

Here: unknown sections and keys, types, policies, domains (min <= max), categories, binary values;
errors name the spec key. The table is checked against the spec in :mod:`healthai.cohort.features`
(shared by ``train risk --table`` and ``healthai-client score --table``).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from healthai.errors import InputFileError

TYPES = ("numeric", "binary", "categorical", "onehot")
MISSING = ("impute", "indicator", "drop_row", "error")
OUT_OF_DOMAIN = ("error", "missing", "drop_row")
COHORT_KEYS = {"name", "model_name", "description", "target", "positive", "patient_id", "rows_are_patients"}
FEATURE_KEYS = {
    "type", "column", "columns", "description", "unit", "min", "max", "values", "categories", "labels",
    "missing", "missing_values", "out_of_domain", "positive",
}


@dataclass(frozen=True)
class FeatureRule:
    name: str
    type: str
    columns: tuple[str, ...]
    description: str = ""
    unit: str = ""
    min: float | None = None
    max: float | None = None
    categories: tuple[Any, ...] = ()
    values: tuple[Any, ...] = (0, 1)
    labels: dict[str, str] = field(default_factory=dict)
    positive: Any = 1
    missing: str = "impute"
    missing_values: tuple[Any, ...] = ()
    out_of_domain: str = "error"


@dataclass(frozen=True)
class CohortSpec:
    name: str
    model_name: str
    description: str
    target: str
    positive: tuple[Any, ...] | None
    patient_id: str | None
    features: tuple[FeatureRule, ...]


def input_error(message: str, where: str) -> InputFileError:
    return InputFileError(message, field=where)


def _choice(value: Any, allowed: tuple[str, ...], where: str) -> str:
    if value not in allowed:
        raise input_error(f"spec {where} = {value!r}: must be one of {', '.join(allowed)}", where)
    return str(value)


def _rule(name: str, raw: Any) -> FeatureRule:
    where = f"features.{name}"
    if not isinstance(raw, dict):
        raise input_error(f"spec [{where}] must be a table", where)
    unknown = sorted(set(raw) - FEATURE_KEYS)
    if unknown:
        raise input_error(f"spec [{where}]: unknown keys {unknown} (allowed: {sorted(FEATURE_KEYS)})", where)
    kind = _choice(raw.get("type"), TYPES, f"{where}.type")
    columns = tuple(raw.get("columns", ())) if kind == "onehot" else (str(raw.get("column", name)),)
    if kind == "onehot" and len(columns) < 2:
        raise input_error(f"spec [{where}]: a onehot group needs columns = [at least 2 column names]", where)
    lo, hi = raw.get("min"), raw.get("max")
    for key, value in (("min", lo), ("max", hi)):
        if value is not None and not isinstance(value, int | float):
            raise input_error(f"spec {where}.{key} must be a number, got {value!r}", f"{where}.{key}")
    if lo is not None and hi is not None and lo > hi:
        raise input_error(f"spec {where}: min {lo} > max {hi}", where)
    categories = tuple(raw.get("categories", ()))
    if kind == "categorical" and len(categories) < 2:
        raise input_error(f"spec [{where}]: categorical needs categories = [at least 2 values]", where)
    values = tuple(raw.get("values", (0, 1)))
    if kind == "binary" and (len(values) != 2 or raw.get("positive", 1) not in values):
        raise input_error(f"spec [{where}]: binary needs values = [negative, positive] holding positive "
                   f"(got values {list(values)}, positive {raw.get('positive', 1)!r})", where)
    return FeatureRule(
        name=name,
        values=values,
        type=kind,
        columns=columns,
        description=str(raw.get("description", name)),
        unit=str(raw.get("unit", "flag" if kind != "numeric" else "")),
        min=None if lo is None else float(lo),
        max=None if hi is None else float(hi),
        categories=categories,
        labels={str(k): str(v) for k, v in raw.get("labels", {}).items()},
        positive=raw.get("positive", 1),
        missing=_choice(raw.get("missing", "impute"), MISSING, f"{where}.missing"),
        missing_values=tuple(raw.get("missing_values", ())),
        out_of_domain=_choice(raw.get("out_of_domain", "error"), OUT_OF_DOMAIN, f"{where}.out_of_domain"),
    )


def load_spec(path: Path | str) -> CohortSpec:
    """Parse and check a cohort spec (structure only; columns are checked against the table later)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise input_error(f"spec file not found: {path}", "spec") from exc
    return parse_spec(text, where=str(path))


def parse_spec(text: str, *, where: str = "spec") -> CohortSpec:
    """:func:`load_spec` on TOML text (``where`` names it in errors)."""
    path = where
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise input_error(f"spec {path}: not valid TOML ({exc})", "spec") from exc
    unknown = sorted(set(raw) - {"cohort", "features"})
    if unknown:
        raise input_error(f"spec {path}: unknown sections {unknown} (allowed: cohort, features)", "spec")
    cohort = raw.get("cohort")
    if not isinstance(cohort, dict):
        raise input_error(f"spec {path}: missing [cohort] section", "cohort")
    bad = sorted(set(cohort) - COHORT_KEYS)
    if bad:
        raise input_error(f"spec [cohort]: unknown keys {bad} (allowed: {sorted(COHORT_KEYS)})", "cohort")
    for key in ("name", "target"):
        if not isinstance(cohort.get(key), str) or not cohort[key]:
            raise input_error(f"spec [cohort]: {key} must be a non-empty string", f"cohort.{key}")
    pid, per_row = cohort.get("patient_id"), cohort.get("rows_are_patients", False)
    if (pid is None) == (per_row is not True):
        raise input_error(
            "spec [cohort]: give exactly one of patient_id = \"<column>\" (the privacy unit) or "
            "rows_are_patients = true",
            "cohort.patient_id",
        )
    feats = raw.get("features")
    if not isinstance(feats, dict) or not feats:
        raise input_error(f"spec {path}: no [features.<name>] tables", "features")
    positive = cohort.get("positive")
    return CohortSpec(
        name=cohort["name"],
        model_name=str(cohort.get("model_name", f"risk_{cohort['name']}")),
        description=str(cohort.get("description", "")),
        target=cohort["target"],
        positive=None if positive is None else tuple(positive if isinstance(positive, list) else [positive]),
        patient_id=pid,
        features=tuple(_rule(name, value) for name, value in feats.items()),
    )
