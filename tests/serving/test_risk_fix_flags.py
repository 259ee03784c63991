"""A missing-value flag is derived from its feature's value (0 where it has one), never taken from the
caller, in Risk.Score and KServe ModelInfer alike (``Imputation.derive_flags``)."""

from __future__ import annotations

import numpy as np

from healthai.serving.risk.imputation import parse_imputation

CARD = {"imputation": {"values": {"sbp": 130.0, "age": 50.0}, "indicators": {"sbp": "sbp_missing"}}}
NAMES = ["age", "sbp", "sbp_missing"]


def test_flag_contradicting_a_value_is_set_to_zero() -> None:
    imp = parse_imputation(CARD, NAMES, "card")
    x = np.array([[60, 140, 1], [60, np.nan, 0], [60, 120, 0]], np.float32)
    derived = imp.derive_flags(x)
    assert derived[0, 2] == 0 and derived[2, 2] == 0 and x[0, 2] == 1  # a copy, the input untouched
    filled = imp.fill(derived)
    assert filled[1].tolist() == [60, 130, 1]
    same = np.array([[60, 140, 0], [60, 130, 1]], np.float32)  # the second: already filled, as training did
    assert imp.derive_flags(same) is same  # nothing to change: no copy
