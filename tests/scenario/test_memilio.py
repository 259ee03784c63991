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
    ref = memilio_ode(pop, start, beta=d.beta, latent_days=d.latent_days, infectious_days=d.infectious_days,
                      days=days)
    iso = explicit_graph([g.ids[k] for k in pick], pop.tolist(), [], mobility=0.0)
    st = SeirState.start(*start, runs=1, mode="deterministic")
    ones = np.ones((days, len(pick)))
    advance(iso, st, beta=[d.beta], sigma=d.sigma, gamma=d.gamma, contact=ones, travel=ones,
            vacc=np.zeros_like(ones), substeps=4)
    size_ref, day_ref = ref["I"].max(axis=0), ref["I"].argmax(axis=0)
    assert np.all(np.abs(st.peak_value[:, 0] / size_ref - 1) < 0.01)
    assert np.all(np.abs(st.peak_step[:, 0] - day_ref) <= 0.01 * day_ref), (st.peak_step[:, 0], day_ref)
