"""The optional hospital compartment (SEIHR): conservation, the SEIR part left unchanged, thread
independence, the ODE against scipy, the stochastic engine against the NumPy oracle, and the RPC."""

from __future__ import annotations

import numpy as np
import pytest

from healthai.ops.metapop import MobilityGraph, SeirState, advance
from healthai.scenario.model import Disease, Scenario, run
from healthai.scenario.reference import NumpyEngine, solve_ode
from tests.scenario.conftest import grid_graph

D = Disease(r0=2.5, hospital_fraction=0.05, hospital_days=6.0)


def start(g: MobilityGraph, infectious: int = 20) -> tuple[np.ndarray, ...]:
    i = np.zeros(g.n_regions, np.int64)
    i[0] = infectious
    z = np.zeros_like(i)
    return g.population - i, z, i, z.copy()


def advance_days(g: MobilityGraph, st: SeirState, days: int, *, threads: int | None = None) -> np.ndarray:
    ones = np.ones((days, g.n_regions))
    return advance(
        g,
        st,
        beta=np.full(st.S.shape[1], D.beta),
        sigma=D.sigma,
        gamma=D.gamma,
        contact=ones,
        travel=ones,
        vacc=np.zeros_like(ones),
        seed=11,
        num_threads=threads,
        hosp_frac=D.hospital_fraction,
        hosp_rate=D.hosp_rate,
    )


def test_seihr_conserves_people_and_leaves_the_seir_part_unchanged(grid: MobilityGraph) -> None:
    runs = 12
    seir = SeirState.start(*start(grid), runs=runs, mode="stochastic")
    seihr = SeirState.start(*start(grid), runs=runs, mode="stochastic", H=np.zeros(grid.n_regions))
    pop = np.repeat(grid.population[:, None], runs, axis=1)
    occupied = 0
    for _ in range(100):
        advance_days(grid, seir, 1)
        advance_days(grid, seihr, 1)
        assert seihr.H is not None and seihr.H.dtype == np.int32 and seihr.H.min() >= 0
        assert np.array_equal(seihr.S.astype(np.int64) + seihr.E + seihr.I + seihr.H + seihr.R, pop)
        occupied = max(occupied, int(seihr.H.sum()))
        # H is not infectious and draws after the SEIR transitions: S, E, I are the same samples
        for a, b in ((seir.S, seihr.S), (seir.E, seihr.E), (seir.I, seihr.I)):
            assert np.array_equal(a, b)
        assert np.array_equal(seir.R, seihr.R + seihr.H)
    assert occupied > 0


def test_seihr_same_seed_same_beds_on_1_and_2_threads(grid: MobilityGraph) -> None:
    outs = []
    for threads in (1, 2):
        st = SeirState.start(*start(grid), runs=9, mode="stochastic", H=np.zeros(grid.n_regions))
        advance_days(grid, st, 70, threads=threads)
        assert st.H is not None
        outs.append(st.H.copy())
    assert np.array_equal(outs[0], outs[1]) and outs[0].sum() > 0


def test_seihr_ode_matches_scipy() -> None:
    g = grid_graph(3, seed=4)
    s0 = start(g, 100)
    days = 160
    st = SeirState.start(*s0, runs=1, mode="deterministic", H=np.zeros(g.n_regions))
    h_daily = [st.H[:, 0].copy()]  # type: ignore[index]
    for _ in range(days):
        ones = np.ones((1, g.n_regions))
        advance(
            g,
            st,
            beta=[D.beta],
            sigma=D.sigma,
            gamma=D.gamma,
            contact=ones,
            travel=ones,
            vacc=np.zeros_like(ones),
            substeps=8,
            hosp_frac=D.hospital_fraction,
            hosp_rate=D.hosp_rate,
        )
        assert st.H is not None
        h_daily.append(st.H[:, 0].copy())
        total = st.S + st.E + st.I + st.H + st.R
        np.testing.assert_allclose(total[:, 0], g.population, rtol=1e-12)
    ref = solve_ode(
        g,
        s0,
        beta=D.beta,
        sigma=D.sigma,
        gamma=D.gamma,
        days=days,
        hosp_frac=D.hospital_fraction,
        hosp_rate=D.hosp_rate,
    )
    ours = np.array(h_daily)
    assert np.all(np.abs(ours.max(axis=0) / ref["H"].max(axis=0) - 1) < 0.01)
    assert np.array_equal(ours.argmax(axis=0), ref["H"].argmax(axis=0))


def test_seihr_native_and_numpy_agree_in_distribution() -> None:
    g = grid_graph(3, pop_scale=20_000, seed=3)
    runs, days = 300, 50
    s0 = start(g, 100)
    st = SeirState.start(*s0, runs=runs, mode="stochastic", H=np.zeros(g.n_regions))
    advance_days(g, st, days)
    beta = np.full(runs, D.beta)
    ref = NumpyEngine(
        g,
        beta=beta,
        sigma=D.sigma,
        gamma=D.gamma,
        seed=5,
        hosp_frac=D.hospital_fraction,
        hosp_rate=D.hosp_rate,
    )
    S, E, I, R = (np.repeat(a[:, None], runs, axis=1).astype(np.int64) for a in s0)  # noqa: E741
    H = np.zeros_like(S)
    ones = np.ones(g.n_regions)
    for _ in range(days):
        ref.leap(S, E, I, R, ones, ones, np.zeros(g.n_regions), H=H)
    assert np.array_equal(S + E + I + H + R, np.repeat(g.population[:, None], runs, axis=1))
    assert st.H is not None
    for ours, theirs in ((st.H, H), (st.R, R)):
        m1, m2 = ours.mean(axis=1), theirs.mean(axis=1)
        se = np.sqrt(ours.var(axis=1) / runs + theirs.var(axis=1) / runs) + 1e-9
        assert np.all(np.abs(m1 - m2) < 5 * se), np.max(np.abs(m1 - m2) / se)


def test_scenario_reports_bed_occupancy_only_with_a_hospital_fraction(grid: MobilityGraph) -> None:
    base = Scenario(graph=grid, start=start(grid), horizon=63, runs=20, seed=3, disease=Disease(r0=2.5))
    assert run(base).hospital is None
    res = run(Scenario(graph=grid, start=start(grid), horizon=63, runs=20, seed=3, disease=D))
    assert res.hospital is not None and res.hospital_total is not None
    assert res.hospital.shape == (9, grid.n_regions, len(res.levels))
    assert np.all(np.diff(res.hospital, axis=2) >= 0)  # quantiles increase with the level
    assert res.hospital_total.max() > 0
    more = run(
        Scenario(
            graph=grid,
            start=start(grid),
            horizon=63,
            runs=20,
            seed=3,
            disease=Disease(r0=2.5, hospital_fraction=0.2, hospital_days=6.0),
        )
    )
    assert more.hospital_total is not None and more.hospital_total.max() > 2 * res.hospital_total.max()


@pytest.mark.parametrize(
    ("disease", "field"),
    [
        (Disease(hospital_fraction=1.5), "disease.hospital_fraction"),
        (Disease(hospital_fraction=0.1, hospital_days=0.0), "disease.hospital_days"),
    ],
)
def test_bad_hospital_parameters_name_the_field(grid: MobilityGraph, disease: Disease, field: str) -> None:
    from healthai.scenario.errors import FieldError

    with pytest.raises(FieldError) as e:
        run(Scenario(graph=grid, start=start(grid), horizon=7, runs=2, disease=disease))
    assert e.value.field == field  # type: ignore[attr-defined]
