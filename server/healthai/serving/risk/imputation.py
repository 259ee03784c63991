"""Missing values at Score time, filled as training filled them (the card's ``imputation`` block).

Cards of models trained on a cohort table (``healthai train risk --table --spec``) list the features
the spec lets be missing (``missing = "impute" | "indicator"``), the value training put in (the
training mean; flags: the mode; a DP model: its released fill, ``privacy.released``) and, for
``indicator``, the flag that marks it; so do cards of the built-in data sets whose loader fills
missing values (``heart``: resting_sbp, cholesterol, max_heart_rate, st_depression; the shipped
risk_heart fills each with its clinical range's midpoint)::

    "imputation": {"values": {"cholesterol": 525.0, ...},
                   "indicators": {"cholesterol": "cholesterol_missing"}, "rule": "..."}

A NaN in one of those features is replaced by its value and sets its indicator to 1. Any other
non-finite value (NaN elsewhere, ±inf) is still refused, and cards without the block fill nothing.
An indicator follows its feature, as in training: 1 where the feature is NaN (then filled), 0 where it
has a value other than the card's fill value (a flag sent as 1 next to a measured value is set to 0:
training never produced that pair; a row already filled with the card's value keeps its 1). Risk.Score
and KServe ModelInfer alike (:meth:`Imputation.derive_flags`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from healthai.serving.runtime.repository import RepositoryError


@dataclass(frozen=True)
class Imputation:
    columns: np.ndarray  # intp [K]: feature columns that may be missing
    values: np.ndarray  # float32 [K]: what training filled in
    indicators: np.ndarray  # intp [K]: the column of each one's missing flag, -1 for none

    def flag_sources(self, names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
        """(missing flag, the feature it marks) by name: a caller may leave the flags out."""
        return tuple((names[f], names[c]) for c, f in zip(self.columns.tolist(), self.indicators.tolist(),
                                                          strict=True) if f >= 0)

    def derive_flags(self, x: np.ndarray) -> np.ndarray:
        """``x`` with each missing flag 0 where every feature it marks has a value that is not the card's
        fill value (a copy only when one changes). A flag may mark several features (risk_heart's
        ``exercise_test_missing``: max_heart_rate or st_depression missing), as training set it."""
        if not self._flagged.size:
            return x
        values = x[:, self._flagged]
        measured = ~np.isnan(values) & (values != self.values[self.indicators >= 0])
        flags = self._flags
        wrong = []
        for flag in np.unique(flags).tolist():
            rows = measured[:, flags == flag].all(axis=1) & (x[:, flag] != 0)
            if rows.any():
                wrong.append((flag, rows))
        if not wrong:
            return x
        x = np.array(x, dtype=np.float32, copy=True)
        for flag, rows in wrong:
            x[rows, flag] = 0.0
        return x

    @property
    def _flagged(self) -> np.ndarray:
        return self.columns[self.indicators >= 0]

    @property
    def _flags(self) -> np.ndarray:
        return self.indicators[self.indicators >= 0]

    def fill(self, x: np.ndarray) -> np.ndarray:
        """``x`` [patients x F] with NaNs of the imputable columns filled (a copy only when needed)."""
        missing = np.isnan(x[:, self.columns])
        if not missing.any():
            return x
        x = np.array(x, dtype=np.float32, copy=True)
        for k in np.flatnonzero(missing.any(axis=0)):
            rows = missing[:, k]
            x[rows, self.columns[k]] = self.values[k]
            if self.indicators[k] >= 0:
                x[rows, self.indicators[k]] = 1.0
        return x


def parse_imputation(card: dict[str, Any], names: list[str], where: str) -> Imputation | None:
    block = card.get("imputation")
    if block is None:
        return None
    values, indicators = (block.get("values"), block.get("indicators", {})) if isinstance(block, dict) else (
        None, None)
    if not isinstance(values, dict) or not isinstance(indicators, dict):
        raise RepositoryError(f"{where}: imputation must be {{'values': {{feature: value}}, 'indicators': "
                              "{feature: flag}}")
    index = {n: j for j, n in enumerate(names)}
    for name in [*values, *indicators, *indicators.values()]:
        if name not in index:
            raise RepositoryError(f"{where}: imputation names unknown feature {name!r}")
    for name, value in values.items():
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise RepositoryError(f"{where}: imputation value of {name!r} is not a finite number")
    if set(indicators) - set(values):
        raise RepositoryError(f"{where}: imputation indicators {sorted(set(indicators) - set(values))} "
                              "have no value")
    order = list(values)
    return Imputation(
        columns=np.array([index[n] for n in order], dtype=np.intp),
        values=np.array([values[n] for n in order], dtype=np.float32),
        indicators=np.array([index[indicators[n]] if n in indicators else -1 for n in order], dtype=np.intp),
    )
