"""Forecast metrics and seasonal baselines against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from healthai_training.epi import baselines, metrics


def test_point_metrics_hand_computed() -> None:
    y = np.array([[1.0, 2.0], [3.0, 4.0]])
    yhat = np.array([[2.0, 2.0], [3.0, 2.0]])
    assert metrics.rmse(y, yhat) == pytest.approx(math.sqrt((1 + 0 + 0 + 4) / 4))
    assert metrics.mae(y, yhat) == pytest.approx(3 / 4)
    # pooled Pearson of [1,2,3,4] vs [2,2,3,2]: cov = 0.25 * ... computed by hand:
    # x - 2.5 = [-1.5,-.5,.5,1.5]; y - 2.25 = [-.25,-.25,.75,-.25]; sum xy = .375+.125+.375-.375 = .5
    # sum x^2 = 5, sum y^2 = .75 → r = .5 / sqrt(3.75)
    assert metrics.pcc(y, yhat) == pytest.approx(0.5 / math.sqrt(3.75))
    assert math.isnan(metrics.pcc(y, np.ones_like(y)))


def test_pinball_hand_computed() -> None:
    # y = 10, quantiles 8 (0.1) and 13 (0.9): 0.1*2 = 0.2 and 0.1*3 = 0.3 → mean 0.25
    assert metrics.pinball(np.array([10.0]), np.array([[8.0, 13.0]]), np.array([0.1, 0.9])) == pytest.approx(
        0.25
    )


def test_wis_hand_computed() -> None:
    levels = np.array([0.25, 0.5, 0.75])
    q = np.array([[4.0, 5.0, 7.0]])
    # y = 9: 0.5|9-5| = 2; IS_0.5 = (7-4) + 2/0.5*(9-7) = 11, weighted 0.25*11 = 2.75 → (2+2.75)/1.5
    assert metrics.weighted_interval_score(np.array([9.0]), q, levels) == pytest.approx(4.75 / 1.5)
    # y inside: 0.5*|6-5| + 0.25*3 = 1.25 → /1.5
    assert metrics.weighted_interval_score(np.array([6.0]), q, levels) == pytest.approx(1.25 / 1.5)
    # WIS equals twice the mean pinball loss over the levels (a known identity)
    y = np.array([9.0, 6.0, 1.0])
    qq = np.repeat(q, 3, axis=0)
    assert metrics.weighted_interval_score(y, qq, levels) == pytest.approx(2 * metrics.pinball(y, qq, levels))


def test_wis_rejects_asymmetric_levels() -> None:
    with pytest.raises(ValueError, match="symmetric"):
        metrics.weighted_interval_score(np.array([1.0]), np.array([[0.0, 1.0]]), np.array([0.2, 0.5]))


def test_coverage() -> None:
    levels = np.array([0.025, 0.25, 0.5, 0.75, 0.975])
    q = np.tile([0.0, 4.0, 5.0, 6.0, 10.0], (4, 1))
    y = np.array([5.0, 3.0, 9.0, 11.0])
    assert metrics.coverage(y, q, levels, 0.5) == pytest.approx(0.25)
    assert metrics.coverage(y, q, levels, 0.95) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="80% interval"):
        metrics.coverage(y, q, levels, 0.8)


def test_baselines_pick_the_right_weeks() -> None:
    series = np.arange(200, dtype=float)[:, None] * np.array([[1.0, 10.0]])
    targets = np.array([150, 160])
    np.testing.assert_array_equal(baselines.lag52(series, targets), series[[98, 108]])
    np.testing.assert_array_equal(baselines.last_value(series, targets, 3), series[[147, 157]])
    # mean of weeks t-54..t-50 and t-106..t-102 = mean(t-52, t-104) for a linear series
    np.testing.assert_allclose(
        baselines.seasonal_mean(series, targets), series[targets] - 78 * np.array([[1.0, 10.0]])
    )
    # one prior season observed: its five weeks only; none: refused
    np.testing.assert_allclose(baselines.seasonal_mean(series, np.array([100])), series[[48]])
    with pytest.raises(ValueError, match="54 earlier periods"):
        baselines.seasonal_mean(series, np.array([53]))
    # seasonal naive with drift: lag 52 + mean seasonal difference (52 per week for this series)
    np.testing.assert_allclose(
        baselines.seasonal_naive_drift(series, targets, 3), series[[98, 108]] + 52 * np.array([[1.0, 10.0]])
    )
