"""Valid input domains of a risk model, written into its card (``features[j].domain`` and ``domains``)
and enforced by the server (``healthai.serving.risk.domains``, which documents the schema).

Computed from the training split (the rows the model was fit on, as the baseline and the graph's
standardisation are) and the features' declared clinical limits (``FeatureSpec.limits``):

- flag (unit ``flag``): binary, 0 or 1;
- numeric: ``[min(lo, max(c_lo, lo - span)), max(hi, min(c_hi, hi + span))]`` with ``[lo, hi]`` the
  observed range, ``span = hi - lo`` and ``[c_lo, c_hi]`` the clinical limits (unbounded where none):
  up to one observed span of extrapolation, never past what is clinically possible, never narrower
  than what training saw; ``integer`` for counts (units ``count``, ``points``) whose values are whole;
- one-hot groups (``FeatureSpec.group``): ``exactly_one`` when every training row has one flag set,
  else ``at_most_one`` (none set is a legal category, e.g. "discharged home");
- implications (``FeatureSpec.requires``) and derived features (``age_risk`` from ``age``,
  ``charlson_index`` from the 17 Charlson groups) with the functions that computed them; a derived
  feature with clinical limits spans them whole (the exact consistency check bounds it already).

Every rule is verified on the training rows: data that breaks one is a TrainingInputError.

A DP model's card (``privacy.released``, ``risk.release``) holds no observed extreme: a numeric range
is the clinical / spec limits, and an open side is the DP clipping bound plus one DP span
(``DP_RULE``); ``with_domains`` also puts the released imputation values and the privacy scope in.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from healthai_training.errors import TrainingInputError
from healthai_training.risk.data import RiskData

SCHEMA = 1  # healthai.serving.risk.domains.DOMAINS_SCHEMA
INTEGER_UNITS = ("count", "points")
RULE = ("numeric: [min(lo, max(clinical_min, lo - span)), max(hi, min(clinical_max, hi + span))], "
        "[lo, hi] = observed range on the training split, span = hi - lo; flags: 0 or 1; one-hot "
        "groups: exactly one set when every training row has one, else at most one")
DP_RULE = ("numeric: [clinical_min, clinical_max] (the spec's min/max or the feature's limits); an open "
           "side stays open (+-3.4e38) and the model clips a value past its DP clipping bound "
           "(privacy.released) to the bound, as training did; no observed value is published. Flags and "
           "one-hot groups as for non-private models")
SCOPE = (
    "(epsilon, delta) covers what is computed from the training patients: the weights (DP-SGD) and "
    "privacy.released (standardisation in the graph, baselines and imputation values: from the spec's "
    "or clinical bounds alone where a feature has both, else DP estimates with the clipping bounds "
    "behind open-ended served domains, composed in epsilon: privacy.mechanisms). Released without "
    "noise: counts (data.rows, data.patients, split sizes, metrics.training_examples, domains.rows), "
    "the one-hot rules and integer checks verified on training rows, and what is computed on "
    "validation and test patients, who are not training patients: the 2 Platt calibration parameters "
    "and the risk bands' base rate (validation) and the metrics")
AGE_RISK_TOLERANCE = 1e-3  # callers may round age_risk to 3 decimals


def derived_definitions() -> dict[str, dict[str, Any]]:
    """Derived feature -> its definition (the functions training used; the server calls the same)."""
    from healthai.normalize import charlson

    return {
        "age_risk": {"function": "healthai.normalize.features.age_risk", "from": ["age"],
                     "tolerance": AGE_RISK_TOLERANCE},
        "charlson_index": {"function": "healthai.normalize.charlson.index_from_matrix",
                           "from": [f"charlson_{g}" for g in charlson.GROUPS], "tolerance": 0.0},
    }


def _evaluate(function: str, x: np.ndarray) -> np.ndarray:
    from healthai.normalize import charlson
    from healthai.normalize import features as shared

    if function.endswith("age_risk"):
        return shared.age_risk(x[:, 0])
    return charlson.index_from_matrix(x)


def numeric_range(lo: float, hi: float, limits: tuple[float | None, float | None] | None) -> list[float]:
    c_lo, c_hi = limits or (None, None)
    span = hi - lo
    low = min(lo, lo - span if c_lo is None else max(c_lo, lo - span))
    high = max(hi, hi + span if c_hi is None else min(c_hi, hi + span))
    return [float(low), float(high)]


OPEN = float(np.finfo(np.float32).max)  # a served range's open side (a DP model clips past its bound)


def dp_range(bounds: list[float], limits: tuple[float | None, float | None] | None) -> list[float]:
    """A DP model's served range: the clinical limits; an open side stays open (±float32 max), since
    the model clips a value past its DP bound to the bound, as training did (``risk.model.Clip``)."""
    c_lo, c_hi = limits or (None, None)
    return [float(c_lo) if c_lo is not None else -OPEN, float(c_hi) if c_hi is not None else OPEN]


def _feature_domain(spec: Any, v: np.ndarray, bounds: list[float] | None = None) -> dict[str, Any]:
    if spec.unit == "flag":
        if not np.isin(v, (0.0, 1.0)).all():
            raise TrainingInputError(f"{spec.name}: a flag with values other than 0/1 in training",
                                     field=spec.name)
        return {"kind": "binary"}
    lo, hi = float(v.min()), float(v.max())
    c_lo, c_hi = spec.limits or (None, None)
    if (c_lo is not None and lo < c_lo) or (c_hi is not None and hi > c_hi):  # the values are not shown
        which = f"[{lo:g}, {hi:g}]" if bounds is None else "(not shown: a DP model)"
        raise TrainingInputError(f"{spec.name}: training values {which} break the clinical "
                                 f"limits {spec.limits}", field=spec.name)
    low, high = numeric_range(lo, hi, spec.limits) if bounds is None else dp_range(bounds, spec.limits)
    integer = spec.unit in INTEGER_UNITS and bool((v == np.floor(v)).all())
    if integer:
        low, high = float(np.ceil(low)), float(np.floor(high))
    if bounds is not None:
        return {"kind": "range", "min": low, "max": high, "integer": integer,
                "dp_bounds": [float(b) for b in bounds], "clinical": [c_lo, c_hi]}
    return {"kind": "range", "min": low, "max": high, "integer": integer, "observed": [lo, hi],
            "clinical": [c_lo, c_hi]}


def _rows_text(data: RiskData) -> str:
    tr = data.split["train"]
    patients = len(np.unique(data.groups[tr])) if data.groups is not None else len(tr)
    return f"training split ({len(tr)} rows of {patients} patients)"


def feature_domains(data: RiskData, released: dict[str, Any] | None = None
                    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(per-feature domains in feature order, the card's ``domains`` block) from ``data``'s training split;
    ``released`` (a DP card's ``privacy.released``): ranges from its bounds, no observed values."""
    x = np.asarray(data.x[data.split["train"]], np.float64)
    names = [f.name for f in data.features]
    col = {n: j for j, n in enumerate(names)}
    bounds = [released["features"][n]["bounds"] if released else None for n in names]
    per_feature = [_feature_domain(spec, x[:, j], bounds[j]) for j, spec in enumerate(data.features)]
    one_hot = []
    for group in dict.fromkeys(f.group for f in data.features if f.group):
        members = [f.name for f in data.features if f.group == group]
        sums = x[:, [col[m] for m in members]].sum(axis=1)
        if sums.max() > 1:
            raise TrainingInputError(f"one-hot group {group!r}: a training row sets several of {members}",
                                     field=group)
        rule = "exactly_one" if (sums == 1).all() else "at_most_one"
        one_hot.append({"name": group, "features": members, "rule": rule})
    implies = []
    for f in data.features:
        if f.requires:
            if (x[:, col[f.name]] > x[:, col[f.requires]]).any():
                raise TrainingInputError(f"{f.name} is set without {f.requires} in training", field=f.name)
            implies.append({"if": f.name, "then": f.requires})
    derived = []
    for name, definition in derived_definitions().items():
        if name in col and all(s in col for s in definition["from"]):
            expected = _evaluate(definition["function"], x[:, [col[s] for s in definition["from"]]])
            if np.abs(x[:, col[name]] - expected).max() > max(definition["tolerance"], 1e-6):
                raise TrainingInputError(f"{name} does not match {definition['function']} in training",
                                         field=name)
            derived.append({"feature": name, **definition})
            # Checked exactly against its inputs, a derived feature may take any value its definition
            # can produce: its range is the clinical (definitional) one, not the extrapolated one
            # (a patient with many comorbidities would otherwise be refused).
            spec, dom = data.features[col[name]], per_feature[col[name]]
            if dom["kind"] == "range" and spec.limits and None not in spec.limits:
                dom["min"], dom["max"] = float(spec.limits[0]), float(spec.limits[1])
    block = {"schema": SCHEMA, "rule": DP_RULE if released else RULE, "rows": _rows_text(data),
             "one_hot": one_hot, "implies": implies, "derived": derived}
    return per_feature, block


def with_domains(card: dict[str, Any], data: RiskData) -> dict[str, Any]:
    """``card`` with every feature's domain and the ``domains`` block. The card's features must be
    ``data``'s, in order, with baselines equal to the training means (the same data); a DP card's
    (``privacy.released``) equal to the released means, and its ``imputation`` values and privacy
    ``scope`` are set from the release too (nothing exact about a training patient stays)."""
    names = [f.get("name") for f in card.get("features", [])]
    if names != [f.name for f in data.features]:
        expected = [f.name for f in data.features]
        raise TrainingInputError(f"card features {names} are not the data's {expected}", field="features")
    released = (card.get("privacy") or {}).get("released")
    baseline = np.array([f.get("baseline", np.nan) for f in card["features"]], np.float64)
    if released:
        mean = np.array([released["features"][n]["mean"] for n in names], np.float64)
    else:
        mean = data.x[data.split["train"]].mean(axis=0).astype(np.float64)
    if not np.allclose(baseline, mean, rtol=1e-5, atol=1e-6):
        raise TrainingInputError("card baselines differ from this data's training means: not the data (or "
                                 "the seed) the model was trained on", field="baseline")
    per_feature, block = feature_domains(data, released)
    features = [{**f, "domain": d} for f, d in zip(card["features"], per_feature, strict=True)]
    out = {**card, "features": features, "domains": block}
    if released:
        out["privacy"] = {**card["privacy"], "scope": SCOPE}
        if isinstance(card.get("imputation"), dict):
            values = {n: released["features"][n]["fill"] for n in card["imputation"].get("values", {})}
            out["imputation"] = {**card["imputation"], "values": values, "rule": released["rule"]}
    return out
