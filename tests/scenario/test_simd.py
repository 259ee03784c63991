"""The CPU engine's AVX-512 transitions (runs as vector lanes) give the scalar sampler's bits: every
sampler path, partial vectors and short run tails, thread counts, and the device-like path.

Path coverage of the two cases, counted once with an instrumented build (flips / large): lanes past
the vector BTRS round cap (redone by the scalar code) 310 / 82, flipped leaps 186 k / 4 k, Stirling
log-factorials 43 k / 46 k, scalar tail cells 0 / 2,496."""

from __future__ import annotations

import numpy as np
import pytest

from healthai.ops.metapop import SeirState, advance, simd_available
from tests.scenario.conftest import grid_graph

pytestmark = pytest.mark.skipif(
    not simd_available(), reason="this CPU has no AVX-512 F/DQ: no vector path to compare"
)


def run(case: str, *, simd: bool, threads: int = 1, tables: bool = True) -> np.ndarray:
    if case == "flips":
        # E -> I with p = sigma dt = 0.8 > 1/2 (the complementary leap), admissions with p = 0.7 (flipped
        # too), contact spikes that push S -> E past p = 1/2, vaccination drawing on S (inversion and
        # BTRS), two sub-steps, 37 runs: two full vectors of 16 and a partial one of 5.
        g, runs, days, i0 = grid_graph(4, pop_scale=300_000, seed=5), 37, 50, 400
        sigma, hosp_frac, substeps = 1.6, 0.7, 2
    else:
        # ~5 million people per region: BTRS on n in the millions, log-factorials past the table
        # (Stirling's series); 34 runs: two vectors and a tail of two runs done cell by cell.
        g, runs, days, i0 = grid_graph(3, pop_scale=5_000_000, seed=9), 34, 70, 5_000
        sigma, hosp_frac, substeps = 1 / 3, 0.05, 1
    n = g.n_regions
    i = np.zeros(n, np.int64)
    i[[0, n - 1]] = i0
    z = np.zeros_like(i)
    st = SeirState.start(g.population - i, z, i, z, runs=runs, mode="stochastic", H=np.zeros(n))
    contact = np.ones((days, n))
    contact[20:23, ::2] = 25.0
    vacc = np.zeros((days, n))
    vacc[30:, : n // 2] = 0.9
    travel = np.ones((days, n))  # travel restricted in one region, raised in another: per-edge multipliers
    travel[10:40, 5] = 0.2
    travel[25:, n - 2] = 2.0
    onsets = advance(
        g,
        st,
        beta=np.linspace(0.3, 1.5, runs),
        sigma=sigma,
        gamma=0.25,
        contact=contact,
        travel=travel,
        vacc=vacc,
        seed=31,
        substeps=substeps,
        num_threads=threads,
        hosp_frac=hosp_frac,
        hosp_rate=0.2,
        lookup_tables=tables,
        simd=simd,
    )
    assert st.H is not None and st.H.sum() > 0 and st.E.sum() > 0
    return np.stack([st.S, st.E, st.I, st.R, st.H, st.peak_value, st.peak_step, onsets])


@pytest.mark.parametrize("case", ["flips", "large"])
def test_vector_transitions_give_the_scalar_bits(case: str) -> None:
    scalar = run(case, simd=False)
    assert np.array_equal(run(case, simd=True), scalar)
    assert np.array_equal(run(case, simd=True, threads=2), scalar)
    assert np.array_equal(run(case, simd=False, tables=False), scalar)  # what the CUDA kernels compute


def test_vector_exp_log_and_log_factorial_are_the_scalar_bits() -> None:
    """Bit for bit, lane by lane: det_exp / det_expm1 over the whole range (tiny, the expm1 series,
    underflow to subnormals and 0, overflow), det_log down to subnormals, log k! from the table and
    from Stirling's series (k up to 2e9)."""
    from healthai import _native

    rng = np.random.default_rng(3)
    x = np.concatenate(
        [
            rng.uniform(-0.05, 0.05, 3000),
            rng.uniform(-40, 40, 3000),
            rng.uniform(-760, 720, 3000),
            np.exp(rng.uniform(np.log(1e-320), np.log(1e300), 3000)) * rng.choice([-1.0, 1.0], 3000),
            rng.integers(0, 2_000_000_000, 3000).astype(np.float64),
            np.arange(0.0, 2100.0),
            [0.05, -0.05, 709.7, -745.2, 710.0, -746.0, 5e-324, 1.4142135623730951, 1e-310],
        ]
    )
    x = x[x != 0.0]  # det_log is used on positive arguments only
    out = _native.metapop_simd_math(x)
    assert out.shape == (2, 4, len(x))
    scalar, vector = out.view(np.uint64)
    for name, s, v in zip(("det_exp", "det_expm1", "det_log", "log_factorial"), scalar, vector, strict=True):
        bad = np.flatnonzero(s != v)
        assert bad.size == 0, f"{name}: {bad.size} lanes differ, e.g. x={x[bad[:3]]}"
