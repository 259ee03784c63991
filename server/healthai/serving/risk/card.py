"""What a risk model's card says that serving needs: feature order and baselines, risk bands, the
features' valid domains (``domains.py``) and how missing values are filled (``imputation.py``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from healthai.serving.risk.domains import FeatureDomains, parse_domains
from healthai.serving.risk.imputation import Imputation, parse_imputation
from healthai.serving.runtime.repository import RepositoryError

logger = logging.getLogger(__name__)

RISK_INPUT = "features"
RISK_OUTPUT = "probability"


@dataclass(frozen=True)
class RiskCard:
    feature_names: tuple[str, ...]
    baseline: np.ndarray  # float32 [F]
    band_names: tuple[str, ...]
    band_uppers: np.ndarray  # float64 [bands], ascending, last >= 1
    domains: FeatureDomains | None = None  # None: an older card; values are only checked to be finite
    imputation: Imputation | None = None  # None: a missing (NaN) value is refused like any non-finite one

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @cached_property
    def names_array(self) -> np.ndarray:
        return np.array(self.feature_names, dtype=object)


def _bands(raw: Any, where: str) -> tuple[tuple[str, ...], np.ndarray]:
    """Accepts ``[{name, upper}]`` / ``[{name, min, max}]`` / ``{name: [lo, hi]}`` / ``{name: upper}``."""
    items: list[tuple[str, float]] = []
    if isinstance(raw, dict):
        for name, v in raw.items():
            upper = v[-1] if isinstance(v, list | tuple) else v
            items.append((str(name), float(upper)))
    elif isinstance(raw, list):
        for b in raw:
            if not isinstance(b, dict) or "name" not in b:
                raise RepositoryError(f"{where}: risk_bands entries need a name ({b!r})")
            upper = b.get("upper", b.get("max", b.get("upper_bound", b.get("to"))))
            if upper is None:
                raise RepositoryError(f"{where}: risk band {b['name']!r} has no upper bound")
            items.append((str(b["name"]), float(upper)))
    else:
        raise RepositoryError(f"{where}: risk_bands missing or not a list/dict")
    if not items:
        raise RepositoryError(f"{where}: risk_bands is empty")
    items.sort(key=lambda t: t[1])
    uppers = np.array([u for _, u in items], dtype=np.float64)
    uppers[-1] = max(uppers[-1], 1.0)
    return tuple(n for n, _ in items), uppers


def parse_risk_card(card: dict[str, Any], *, n_inputs: int, where: str) -> RiskCard:
    features = card.get("features")
    if not isinstance(features, list) or not features:
        raise RepositoryError(f"{where}: model card has no 'features' list")
    names, baseline = [], []
    for i, f in enumerate(features):
        if not isinstance(f, dict) or "name" not in f:
            raise RepositoryError(f"{where}: model card features[{i}] has no name")
        names.append(str(f["name"]))
        baseline.append(float(f.get("baseline", 0.0)))
    if len(set(names)) != len(names):
        raise RepositoryError(f"{where}: model card repeats a feature name")
    if n_inputs > 0 and len(names) != n_inputs:
        raise RepositoryError(f"{where}: model card lists {len(names)} features but the model's "
                              f"'{RISK_INPUT}' input takes {n_inputs}")
    band_names, uppers = _bands(card.get("risk_bands"), where)
    domains = parse_domains(card, names, where)
    if domains is None:
        logger.warning("%s: model card has no feature domains; feature values are only checked to be "
                       "finite (add them with `healthai train domains`)", where)
    return RiskCard(tuple(names), np.asarray(baseline, np.float32), band_names, uppers, domains,
                    parse_imputation(card, names, where))


def example_patient(card: dict[str, Any]) -> dict[str, float]:
    """Feature name -> value of a valid patient near the card's baseline (for load tests and examples;
    a card without domains gives its baseline)."""
    risk = parse_risk_card(card, n_inputs=0, where=str(card.get("name", "model card")))
    row = risk.domains.typical_patient(risk.baseline)[0] if risk.domains else risk.baseline
    return dict(zip(risk.feature_names, row.tolist(), strict=True))
