"""The model against independent solvers: scipy.integrate on the same ODE, the NumPy engine, and the
law of large numbers; interventions move the curves the expected way."""

from __future__ import annotations

import numpy as np

from healthai.ops.metapop import MobilityGraph, SeirState, advance
from healthai.scenario.model import Disease, Intervention, Scenario, run, schedules
from healthai.scenario.reference import NumpyEngine, solve_ode
from tests.scenario.conftest import grid_graph

DISEASE = Disease(r0=2.2, latent_days=3.0, infectious_days=5.0)


def seed_start(g: MobilityGraph, fraction: float = 1e-3) -> tuple[np.ndarray, ...]:
    i = np.zeros(g.n_regions, np.int64)
    i[0] = max(1, round(fraction * g.population[0]))
    z = np.zeros_like(i)
    return g.population - i, z, i, z.copy()


def engine_ode(
    g: MobilityGraph, start: tuple[np.ndarray, ...], days: int, interventions=()
) -> tuple[np.ndarray, ...]:
    """Daily I [days + 1, n] and onsets [days, n] from the native deterministic mode."""
    contact, travel, vacc = schedules(g, days, interventions)
    st = SeirState.start(*start, runs=1, mode="deterministic")
    i_daily, onsets = [st.I[:, 0].copy()], []
    for t in range(days):
        onsets.append(
            advance(
                g,
                st,
                beta=[DISEASE.beta],
                sigma=DISEASE.sigma,
                gamma=DISEASE.gamma,
                contact=contact[t : t + 1],
                travel=travel[t : t + 1],
                vacc=vacc[t : t + 1],
                substeps=8,
            )[:, 0]
        )
        i_daily.append(st.I[:, 0].copy())
        total = st.S + st.E + st.I + st.R
        np.testing.assert_allclose(total[:, 0], g.population, rtol=1e-12)
    return np.array(i_daily), np.array(onsets), st


def assert_peaks_within_1pct(ours: np.ndarray, ref: np.ndarray) -> None:
    size_ours, size_ref = ours.max(axis=0), ref.max(axis=0)
    day_ours, day_ref = ours.argmax(axis=0), ref.argmax(axis=0)
    assert np.all(np.abs(size_ours / size_ref - 1) < 0.01), np.abs(size_ours / size_ref - 1).max()
    assert np.all(np.abs(day_ours - day_ref) <= np.maximum(0.01 * day_ref, 0)), (day_ours, day_ref)


def test_deterministic_mode_matches_scipy_on_a_graph() -> None:
    g = grid_graph(4)
    start = seed_start(g)
    days = 150
    i_ours, onsets_ours, st = engine_ode(g, start, days)
    ref = solve_ode(g, start, beta=DISEASE.beta, sigma=DISEASE.sigma, gamma=DISEASE.gamma, days=days)
    assert_peaks_within_1pct(i_ours, ref["I"])
    np.testing.assert_allclose(onsets_ours, ref["onsets"], rtol=1e-4, atol=1e-3 * g.population.max() * 1e-3)
    # the engine's own peak tracking agrees with the daily series
    assert np.array_equal(st.peak_step[:, 0], i_ours.argmax(axis=0))
    np.testing.assert_allclose(st.peak_value[:, 0], i_ours.max(axis=0), rtol=1e-12)


def test_deterministic_mode_matches_scipy_with_interventions() -> None:
    g = grid_graph(3, seed=4)
    start = seed_start(g)
    days = 160
    ivs = [
        Intervention(start=20, end=70, contact_multiplier=0.7),
        Intervention(start=0, end=160, regions=(8,), travel_multiplier=0.2),
        Intervention(start=40, end=100, regions=(4, 5), vaccination_rate=0.01),
    ]
    i_ours, _, _ = engine_ode(g, start, days, ivs)
    contact, travel, vacc = schedules(g, days, ivs)
    ref = solve_ode(
        g,
        start,
        beta=DISEASE.beta,
        sigma=DISEASE.sigma,
        gamma=DISEASE.gamma,
        days=days,
        contact=contact,
        travel=travel,
        vacc=vacc,
    )
    assert_peaks_within_1pct(i_ours, ref["I"])


def _attack_curve(g: MobilityGraph, runs: int, substeps: int, mode: str) -> np.ndarray:
    """Mean over runs of total daily onsets [days]."""
    s = Scenario(
        graph=g,
        start=seed_start(g, 2e-3),
        horizon=120,
        runs=runs,
        seed=5,
        disease=DISEASE,
        period_days=1,
        mode=mode,
        substeps=substeps,
    )  # type: ignore[arg-type]
    res = run(s)
    return res.mean.sum(axis=1)


def test_stochastic_mean_converges_to_the_ode_as_populations_grow() -> None:
    errors = []
    for scale in (2_000, 20_000, 2_000_000):
        g = grid_graph(3, pop_scale=scale, seed=2)
        ode = _attack_curve(g, 1, 4, "deterministic")
        mean = _attack_curve(g, 64, 4, "stochastic")
        errors.append(np.abs(mean - ode).sum() / ode.sum())
    assert errors[0] > errors[1] > errors[2], errors
    # what remains at large N is the tau-leap's O(dt) time discretization: a finer leap removes it
    fine = _attack_curve(g, 64, 16, "stochastic")
    fine_error = np.abs(fine - ode).sum() / ode.sum()
    assert fine_error < min(0.02, errors[2] / 2), (errors, fine_error)


def test_native_and_numpy_engines_agree_in_distribution() -> None:
    g = grid_graph(3, pop_scale=20_000, seed=3)
    runs, days = 400, 60
    start = seed_start(g, 5e-3)
    st = SeirState.start(*start, runs=runs, mode="stochastic")
    ones = np.ones((days, g.n_regions))
    beta = np.full(runs, DISEASE.beta)
    advance(
        g,
        st,
        beta=beta,
        sigma=DISEASE.sigma,
        gamma=DISEASE.gamma,
        contact=ones,
        travel=ones,
        vacc=np.zeros_like(ones),
        seed=9,
    )
    ref = NumpyEngine(g, beta=beta, sigma=DISEASE.sigma, gamma=DISEASE.gamma, seed=9)
    S, E, I, R = (np.repeat(a[:, None], runs, axis=1).astype(np.int64) for a in start)  # noqa: E741
    for t in range(days):
        ref.leap(S, E, I, R, ones[t], ones[t], np.zeros(g.n_regions))
    for ours, theirs in ((st.R, R), (st.I, I)):
        m1, m2 = ours.mean(axis=1), theirs.mean(axis=1)
        se = np.sqrt(ours.var(axis=1) / runs + theirs.var(axis=1) / runs) + 1e-9
        assert np.all(np.abs(m1 - m2) < 5 * se), np.max(np.abs(m1 - m2) / se)


def test_interventions_move_the_curves_the_expected_way() -> None:
    g = grid_graph(4, seed=6)
    base = Scenario(
        graph=g, start=seed_start(g), horizon=200, runs=48, seed=1, disease=DISEASE, period_days=7
    )
    far = g.n_regions - 1

    def summary(ivs: list[Intervention]) -> tuple[float, float, float, float]:
        res = run(Scenario(**{**base.__dict__, "interventions": ivs}))
        total = res.total_quantiles[:, list(res.levels).index(0.5)]
        return (
            float(res.mean.sum()),
            float(total.max()),
            float(res.period_start[total.argmax()]),
            float(np.median(res.final.peak_step[far])),
        )

    b_total, b_peak, b_day, b_far = summary([])
    c_total, c_peak, c_day, _ = summary([Intervention(start=14, end=200, contact_multiplier=0.7)])
    assert c_total < b_total and c_peak < 0.8 * b_peak and c_day > b_day  # lower, later
    v_total, v_peak, _, _ = summary([Intervention(start=0, end=200, vaccination_rate=0.01)])
    assert v_total < b_total and v_peak < b_peak
    _, _, _, t_far = summary([Intervention(start=0, end=200, travel_multiplier=0.1)])
    assert t_far > b_far  # less travel: the epidemic reaches the far corner later
    up_total, _, _, _ = summary([Intervention(start=14, end=200, contact_multiplier=1.3)])
    assert up_total > b_total
