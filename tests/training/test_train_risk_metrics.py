"""Risk metrics against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from healthai_training.risk import metrics

Y = np.array([0, 0, 1, 1])
P = np.array([0.1, 0.4, 0.35, 0.8])


def test_auroc_counts_pairs_and_ties() -> None:
    assert metrics.auroc(Y, P) == pytest.approx(3 / 4)
    assert metrics.auroc(Y, np.array([0.5, 0.5, 0.5, 0.5])) == pytest.approx(0.5)
    assert np.isnan(metrics.auroc(np.zeros(3), np.arange(3.0)))


def test_auprc_is_average_precision() -> None:
    # ranked: 0.8(+) 0.4(-) 0.35(+) 0.1(-): precisions at the positives 1 and 2/3
    assert metrics.auprc(Y, P) == pytest.approx((1 + 2 / 3) / 2)


def test_brier_and_ece() -> None:
    assert metrics.brier(Y, P) == pytest.approx((0.01 + 0.16 + 0.4225 + 0.04) / 4)
    # bins [0, .5): mean p .2833 vs rate 1/3 (weight 3/4); [.5, 1]: .8 vs 1 (weight 1/4)
    assert metrics.ece(Y, P, bins=2) == pytest.approx(0.75 * abs(0.85 / 3 - 1 / 3) + 0.25 * 0.2)
    assert metrics.accuracy(Y, P) == pytest.approx(0.75)  # predicts 0,0,0,1


def test_shape_mismatch_is_rejected() -> None:
    with pytest.raises(ValueError, match="same length"):
        metrics.auroc(Y, P[:3])
