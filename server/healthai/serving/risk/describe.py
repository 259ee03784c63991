"""Risk.Describe: what a risk model takes, from its model card (features, domains, missing values,
derived inputs, privacy essentials).

Only what the card already publishes for callers is returned: no baseline, fill value, mean or any
other training statistic (``privacy.released`` stays on the card).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from healthai.serving.risk.card import RiskCard
from healthai.serving.risk.features import derivable_features
from healthai.v1 import risk_pb2

# A range side at or past this is open (the card writes +-3.4e38, float32's limit, for "no bound").
OPEN_BOUND = 1e38


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _privacy(raw: Any) -> risk_pb2.ModelPrivacy:
    if not isinstance(raw, Mapping) or not raw.get("private"):
        return risk_pb2.ModelPrivacy(private=False)
    out = risk_pb2.ModelPrivacy(private=True, privacy_unit=_text(raw.get("privacy_unit")))
    for key in ("epsilon", "delta"):
        value = raw.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            setattr(out, key, float(value))
    return out


def describe(card: RiskCard, raw: Mapping[str, Any], name: str, version: int) -> risk_pb2.DescribeResponse:
    """The Describe reply of one loaded version: ``card`` parsed, ``raw`` the card's JSON."""
    names = card.feature_names
    raw_features = raw.get("features") or []
    out = [risk_pb2.FeatureInfo(name=n) for n in names]
    for info, f in zip(out, raw_features, strict=False):
        if isinstance(f, Mapping):
            info.description, info.unit = _text(f.get("description")), _text(f.get("unit"))
    if (d := card.domains) is not None:
        for j, info in enumerate(out):
            if d.binary[j]:
                info.kind = "binary"
                continue
            info.kind, info.integer = "range", bool(d.integer[j])
            if float(d.lo[j]) > -OPEN_BOUND:
                info.min = float(d.lo[j])
            if float(d.hi[j]) < OPEN_BOUND:
                info.max = float(d.hi[j])
        for group, cols, rule in d.groups:
            for c in cols.tolist():
                out[c].one_hot_group, out[c].one_hot_rule = group, rule
    if (imp := card.imputation) is not None:
        for c, flag in zip(imp.columns.tolist(), imp.indicators.tolist(), strict=True):
            out[c].may_be_missing = True
            out[c].missing_flag = names[flag] if flag >= 0 else ""
        for flag_name, feature in imp.flag_sources(names):
            info = out[names.index(flag_name)]
            info.derived = True
            if feature not in info.derived_from:
                info.derived_from.append(feature)
    for feature, source in derivable_features(names).items():
        info = out[names.index(feature)]
        info.derived = True
        info.derived_from.append(source)
    return risk_pb2.DescribeResponse(model_name=name, model_version=version, features=out,
                                     risk_bands=list(card.band_names), privacy=_privacy(raw.get("privacy")))
