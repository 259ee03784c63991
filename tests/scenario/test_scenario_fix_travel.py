"""Travel multipliers scale a region's mobility edges both ways (its residents' contacts elsewhere and
visitors' contacts in it): restricting the seeded region protects the others, in the served model and
in every engine (native stochastic and RK4, the NumPy engine, scipy's ODE)."""

from __future__ import annotations

import numpy as np
import pytest

from healthai.ops.metapop import MobilityGraph, SeirState, advance
from healthai.scenario.errors import FieldError
from healthai.scenario.graphs import explicit_graph
from healthai.scenario.model import Disease, Intervention, Scenario, away_rows, run, schedules
from healthai.scenario.reference import NumpyEngine, solve_ode
from tests.scenario.conftest import grid_graph

DISEASE = Disease(r0=2.0)
PAIR = explicit_graph(["A", "B"], [100_000, 100_000], [(0, 1, 1.0), (1, 0, 1.0)], mobility=0.1)


def _start(g: MobilityGraph, seeded: int = 0, count: int = 20) -> tuple[np.ndarray, ...]:
    i = np.zeros(g.n_regions, np.int64)
    i[seeded] = count
    z = np.zeros_like(i)
    return g.population - i, z, i, z.copy()


def _b(ivs: list[Intervention], mode: str = "stochastic") -> tuple[float, float]:
    """Attack rate and median peak day of region B, A seeded."""
    runs = 64 if mode == "stochastic" else 1
    s = Scenario(graph=PAIR, start=_start(PAIR), horizon=200, runs=runs, seed=2, disease=DISEASE,
                 interventions=ivs, mode=mode)  # type: ignore[arg-type]
    res = run(s)
    return float(res.mean[:, 1].sum() / PAIR.population[1]), float(np.median(res.final.peak_step[1]))


@pytest.mark.parametrize("mode", ["stochastic", "deterministic"])
def test_restricting_the_seeded_region_protects_the_other(mode: str) -> None:
    base_attack, base_day = _b([], mode)
    assert base_attack > 0.7
    cut_attack, _ = _b([Intervention(0, 200, (0,), travel_multiplier=0.0)], mode)
    assert cut_attack == 0.0  # A cut off: B never sees an infection
    fewer = Intervention(0, 200, (0,), travel_multiplier=0.2)
    for iv in (fewer, Intervention(0, 60, (0,), travel_multiplier=0.0)):
        attack, day = _b([iv], mode)
        assert day > base_day + 5, (iv, day, base_day)  # delayed
        assert attack <= base_attack + 0.01


def test_travel_semantics_are_the_same_in_every_engine() -> None:
    """Native RK4 against scipy's LSODA, native tau-leaping against the NumPy engine, with multipliers
    below and above 1 on a grid."""
    g = grid_graph(3, pop_scale=20_000, seed=3)
    days, runs = 60, 300
    ivs = [Intervention(0, days, (0,), travel_multiplier=0.3)]
    ivs.append(Intervention(0, days, (4,), travel_multiplier=2.0))
    contact, travel, vacc = schedules(g, days, ivs)
    start = _start(g, 0, 100)
    st = SeirState.start(*start, runs=1, mode="deterministic")
    kw = dict(sigma=DISEASE.sigma, gamma=DISEASE.gamma, contact=contact, travel=travel, vacc=vacc)
    advance(g, st, beta=[DISEASE.beta], substeps=4, **kw)  # type: ignore[arg-type]
    ref = solve_ode(g, start, beta=DISEASE.beta, days=days, **kw)  # type: ignore[arg-type]
    np.testing.assert_allclose(st.R[:, 0], ref["R"][-1], rtol=1e-4)

    beta = np.full(runs, DISEASE.beta)
    sto = SeirState.start(*start, runs=runs, mode="stochastic")
    advance(g, sto, beta=beta, seed=9, substeps=2, **kw)  # type: ignore[arg-type]
    eng = NumpyEngine(g, beta=beta, sigma=DISEASE.sigma, gamma=DISEASE.gamma, seed=9)
    S, E, I, R = (np.repeat(a[:, None], runs, axis=1).astype(np.int64) for a in start)  # noqa: E741
    for t in range(days):
        for _ in range(2):
            eng.leap(S, E, I, R, contact[t], travel[t], vacc[t], dt=0.5)
    m1, m2 = sto.R.mean(axis=1), R.mean(axis=1)
    se = np.sqrt(sto.R.var(axis=1) / runs + R.var(axis=1) / runs) + 1e-9
    assert np.all(np.abs(m1 - m2) < 5 * se), np.max(np.abs(m1 - m2) / se)
    # and the multipliers matter: without them the far corner's epidemic differs
    plain = SeirState.start(*start, runs=1, mode="deterministic")
    ones = np.ones_like(travel)
    advance(g, plain, beta=[DISEASE.beta], substeps=4, **{**kw, "travel": ones})  # type: ignore[arg-type]
    assert abs(plain.R[8, 0] / st.R[8, 0] - 1) > 0.05


def test_neighbours_travel_counts_in_the_away_contacts_check() -> None:
    """C has no edges of its own (its multiplier passes the own check) but B's edge to C takes it."""
    g = explicit_graph(["A", "B", "C"], [1000] * 3, [(0, 1, 1.0), (1, 0, 1.0), (1, 2, 1.0)], mobility=0.6)
    schedules(g, 5, [Intervention(0, 5, (1,), travel_multiplier=1.6)])  # B: 1.6 x 0.6 <= 1
    with pytest.raises(FieldError, match=r"region B .*\(1\.8"):  # B: 0.3 + 0.3 x 5
        schedules(g, 5, [Intervention(0, 5, (2,), travel_multiplier=5.0)])
    with pytest.raises(FieldError, match=r"interventions\.travel_multiplier"):
        schedules(g, 5, [Intervention(0, 5, (1,), travel_multiplier=1.7)])
    st = SeirState.start(*_start(g), runs=1, mode="stochastic")
    travel = np.ones((1, 3))
    travel[0, 2] = 5.0
    with pytest.raises(ValueError, match=r"travel\[0, 1\].*smaller multiplier"):
        advance(g, st, beta=[0.4], sigma=0.3, gamma=0.2, contact=np.ones((1, 3)), travel=travel,
                vacc=np.zeros((1, 3)))


def test_one_multiplier_everywhere_scales_every_edge_once() -> None:
    """travel=m in every region is the old meaning (each edge x m, not m^2); m in one region scales its
    edges both ways."""
    g = grid_graph(3, seed=2)
    every, one = np.full(9, 0.3), np.ones(9)
    one[4] = 0.3
    np.testing.assert_allclose(away_rows(g, every), 0.3 * g.away_fraction(), rtol=1e-12)
    touched = away_rows(g, one)
    for i in range(9):
        edges = range(g.indptr[i], g.indptr[i + 1])
        expect = sum(g.weights[e] * (0.3 if i == 4 or g.indices[e] == 4 else 1.0) for e in edges)
        assert touched[i] == pytest.approx(expect, rel=1e-12)


def test_a_graph_with_neither_name_nor_regions_names_the_field_once(tmp_path) -> None:
    from healthai.errors import InvalidInput
    from healthai.scenario.convert import graph_from
    from healthai.v1 import scenario_pb2

    with pytest.raises(InvalidInput) as err:
        graph_from(scenario_pb2.ScenarioGraph(), tmp_path)
    assert str(err.value) == "graph: a name or region_ids + population is required"
