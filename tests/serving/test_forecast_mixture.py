"""Quantiles of a mixture of forecasts (``healthai.serving.forecast.mixture``): worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from healthai.serving.forecast.mixture import mixture_quantiles

LEVELS = np.array([0.01, 0.025, *np.round(np.arange(0.05, 0.951, 0.05), 2), 0.975, 0.99])


def test_one_forecast_is_its_own_mixture() -> None:
    q = 100 + 20 * norm.ppf(LEVELS)
    got = mixture_quantiles(q[None, None, None], LEVELS, LEVELS)[0, 0]
    # within 1.5 % of a sd: the strata straddle the kinks of the piecewise-linear quantile function
    np.testing.assert_allclose(got, q, atol=0.3)
    np.testing.assert_allclose(mixture_quantiles(np.stack([q, q])[:, None, None], LEVELS, LEVELS)[0, 0],
                               q, atol=0.3)


def test_two_uniforms_side_by_side_make_one_twice_as_wide() -> None:
    """U(0, 1) and U(1, 2), equally weighted: U(0, 2), whose quantile at p is 2 p, also at levels
    between the forecasts' own and in the tails beyond them."""
    q = np.stack([LEVELS, 1 + LEVELS])[:, None, None]
    out = np.array([0.005, 0.3, 0.5, 0.6, 0.995])
    np.testing.assert_allclose(mixture_quantiles(q, LEVELS, out)[0, 0], 2 * out, atol=1e-5)


def test_the_mixture_of_shifted_normals_is_wider_than_their_average() -> None:
    rng = np.random.default_rng(0)
    means = rng.normal(100, 30, 32)
    q = means[:, None] + 20 * norm.ppf(LEVELS)[None]
    got = mixture_quantiles(q[:, None, None], LEVELS, LEVELS)[0, 0]
    mc = np.quantile((means[:, None] + 20 * rng.standard_normal((32, 40_000))).ravel(), LEVELS)
    np.testing.assert_allclose(got, mc, atol=1.5)  # the mixture itself (Monte Carlo, 1.3 M values)
    averaged = q.mean(axis=0)  # Vincentization keeps one forecast's width
    assert got[-1] - got[0] > 1.5 * (averaged[-1] - averaged[0])


def test_counts_are_not_extended_below_zero_and_cells_stay_apart() -> None:
    q = np.zeros((2, 3, 4, len(LEVELS)))
    q[...] = np.linspace(0.0, 5.0, len(LEVELS))
    q[:, 1, 2] += 1000  # one cell far off: no leak into the others
    got = mixture_quantiles(q, LEVELS, LEVELS)
    assert got.shape == (3, 4, len(LEVELS)) and (got >= 0).all()
    assert got[1, 2, 0] > 999 and got[1, 1, -1] < 6 and got[0, 0, 0] == 0


def test_levels_must_match_the_quantiles() -> None:
    with pytest.raises(ValueError, match="levels"):
        mixture_quantiles(np.zeros((2, 1, 1, 3)), LEVELS, LEVELS)
