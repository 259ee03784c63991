"""Deterministic mode against MEmilio's metapopulation ODE (PyPI memilio-simulation, a dev/test
dependency) on county populations. MEmilio couples regions by commuting, not by our force of
infection, so the models match only without mobility: the comparison runs uncoupled regions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from healthai.ops.metapop import SeirState, advance
from healthai.scenario.graphs import county_graph, explicit_graph
from healthai.scenario.model import Disease
from healthai.scenario.reference import memilio_ode

pytest.importorskip("memilio.simulation.oseir_metapop", reason="memilio-simulation is not installed")


def test_deterministic_mode_matches_memilio_peaks_within_1pct(counties_dir: Path) -> None:
    g = county_graph(counties_dir, mobility=0.0)
    pick = np.arange(0, g.n_regions, 60)  # 53 counties of all sizes
    pop = g.population[pick]
    i0 = np.maximum(1, pop // 10_000)
    z = np.zeros_like(i0)
    start = (pop - i0, z, i0, z)
    d = Disease(r0=2.0, latent_days=3.0, infectious_days=5.0)
    days = 200
    ref = memilio_ode(
        pop, start, beta=d.beta, latent_days=d.latent_days, infectious_days=d.infectious_days, days=days
    )
    iso = explicit_graph([g.ids[k] for k in pick], pop.tolist(), [], mobility=0.0)
    st = SeirState.start(*start, runs=1, mode="deterministic")
    ones = np.ones((1, len(pick)))
    daily = [st.I[:, 0].copy()]
    for _ in range(days):
        advance(
            iso,
            st,
            beta=[d.beta],
            sigma=d.sigma,
            gamma=d.gamma,
            contact=ones,
            travel=ones,
            vacc=np.zeros_like(ones),
            substeps=4,
        )
        daily.append(st.I[:, 0].copy())
    ours = np.array(daily)
    size_ours, size_ref = ours.max(axis=0), ref["I"].max(axis=0)
    assert np.all(np.abs(size_ours / size_ref - 1) < 0.01), np.abs(size_ours / size_ref - 1).max()
    t_ours, t_ref = peak_time(ours), peak_time(ref["I"])
    assert np.all(np.abs(t_ours / t_ref - 1) < 0.01), np.abs(t_ours / t_ref - 1).max()


def peak_time(series: np.ndarray) -> np.ndarray:
    """Peak time per column of a daily series: the vertex of the parabola through the top 3 days."""
    d = np.clip(series.argmax(axis=0), 1, len(series) - 2)
    cols = np.arange(series.shape[1])
    a, b, c = series[d - 1, cols], series[d, cols], series[d + 1, cols]
    return d + 0.5 * (a - c) / (a - 2 * b + c)
