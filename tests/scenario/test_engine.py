"""The native engine: invariants every step, thread-count independence, argument checks."""

from __future__ import annotations

import numpy as np
import pytest

from healthai import _native
from healthai.ops.metapop import MobilityGraph, SeirState, advance
from healthai.scenario.model import Disease


def seeded_state(g: MobilityGraph, runs: int, mode: str = "stochastic", infectious: int = 20) -> SeirState:
    i = np.zeros(g.n_regions, np.int64)
    i[0] = infectious
    z = np.zeros_like(i)
    return SeirState.start(g.population - i, z, i, z, runs=runs, mode=mode)  # type: ignore[arg-type]


def step(
    g: MobilityGraph,
    st: SeirState,
    days: int = 1,
    *,
    seed: int = 7,
    threads: int | None = None,
    contact: float = 1.0,
    substeps: int = 1,
) -> np.ndarray:
    d = Disease(r0=2.5)
    ones = np.ones((days, g.n_regions))
    return advance(
        g,
        st,
        beta=np.full(st.S.shape[1], d.beta),
        sigma=d.sigma,
        gamma=d.gamma,
        contact=ones * contact,
        travel=ones,
        vacc=np.zeros_like(ones),
        seed=seed,
        num_threads=threads,
        substeps=substeps,
    )


def test_compartments_sum_to_population_every_day(grid: MobilityGraph) -> None:
    st = seeded_state(grid, runs=16)
    cum_onsets = np.zeros_like(st.S, dtype=np.int64)
    for _ in range(120):
        prev_s, prev_r = st.S.copy(), st.R.copy()
        cum_onsets += step(grid, st)
        for a in (st.S, st.E, st.I, st.R):
            assert a.dtype == np.int32 and a.min() >= 0
        total = st.S.astype(np.int64) + st.E + st.I + st.R
        assert np.array_equal(total, np.repeat(grid.population[:, None], 16, axis=1))
        assert np.all(prev_s >= st.S) and np.all(prev_r <= st.R)  # S only falls, R only grows
    assert st.day == 120
    i0 = np.zeros((grid.n_regions, 1), np.int64)
    i0[0] = 20
    assert np.array_equal(cum_onsets, st.I + st.R - i0)  # every onset is in I or R now (no vaccination)
    assert (st.R.sum(axis=0) > 0.2 * grid.population.sum()).all()  # the epidemic did take off


def test_same_seed_same_trajectories_on_1_and_2_threads(grid: MobilityGraph) -> None:
    outs = []
    for threads in (1, 2, 1):
        st = seeded_state(grid, runs=33)
        daily = [step(grid, st, 3, threads=threads, substeps=2) for _ in range(20)]
        outs.append((np.stack(daily), st.S.copy(), st.I.copy(), st.peak_step.copy()))
    for a, b in zip(outs[0], outs[1], strict=True):
        assert np.array_equal(a, b)
    other = seeded_state(grid, runs=33)
    step(grid, other, 60, seed=8)
    assert not np.array_equal(other.S, outs[0][1])  # another seed, another sample


def test_runs_are_independent_streams(grid: MobilityGraph) -> None:
    """Run k's trajectory does not depend on how many runs share the call (counter = run, region, step)."""
    big, small = seeded_state(grid, runs=8), seeded_state(grid, runs=3)
    step(grid, big, 40)
    step(grid, small, 40)
    assert np.array_equal(big.S[:, :3], small.S)
    assert len({big.S[:, k].tobytes() for k in range(8)}) == 8


def test_chunking_does_not_change_the_trajectory(grid: MobilityGraph) -> None:
    a, b = seeded_state(grid, runs=4), seeded_state(grid, runs=4)
    step(grid, a, 30)
    for _ in range(6):
        step(grid, b, 5)
    assert np.array_equal(a.S, b.S) and np.array_equal(a.peak_value, b.peak_value)


def test_binomial_sampler_matches_the_distribution() -> None:
    """One isolated region, I -> R only: recoveries ~ Binomial(I, gamma dt) (dt = 1; a stage's exit
    probability, metapop_cell.h sojourn_leap) on both sampler paths."""
    from healthai.scenario.graphs import explicit_graph

    for infectious, runs in ((40, 20000), (5000, 4000)):  # inversion (n p < 10) and BTRS
        g = explicit_graph(["a"], [10 * infectious], [], mobility=0.0)
        st = SeirState.start(
            np.array([9 * infectious]),
            np.array([0]),
            np.array([infectious]),
            np.array([0]),
            runs=runs,
            mode="stochastic",
        )
        gamma = 0.2
        ones = np.ones((1, 1))
        advance(
            g,
            st,
            beta=np.zeros(runs),
            sigma=1.0,
            gamma=gamma,
            contact=ones,
            travel=ones,
            vacc=np.zeros((1, 1)),
            seed=3,
        )
        rec = st.R[0].astype(np.float64)
        p = gamma
        mean, var = infectious * p, infectious * p * (1 - p)
        assert abs(rec.mean() - mean) < 4 * np.sqrt(var / runs)
        assert abs(rec.var() / var - 1) < 0.08


BAD = [
    ("indices", lambda a: a["indices"].__setitem__(0, 999), IndexError, "indices[0]=999"),
    ("indptr", lambda a: a["indptr"].__setitem__(3, 10**6), ValueError, "indptr"),
    ("weights", lambda a: a["weights"].__setitem__(1, np.nan), ValueError, "weights[1]"),
    ("population", lambda a: a["population"].__setitem__(2, 0), ValueError, "population[2]"),
    ("beta", lambda a: a["beta"].__setitem__(0, -1.0), ValueError, "beta[0]"),
    ("contact", lambda a: a["contact"].__setitem__((0, 4), np.inf), ValueError, "contact[0, 4]"),
    ("travel", lambda a: a["travel"].__setitem__((0, 4), 50.0), ValueError, "travel[0, 4]"),
    ("S sum", lambda a: a["S"].__setitem__((1, 0), a["S"][1, 0] + 1), ValueError, "S+E+I+R of region 1"),
    ("E negative", lambda a: a["E"].__setitem__((1, 0), -1), ValueError, "E[1, 0]"),
    ("S dtype", lambda a: a.__setitem__("S", a["S"].astype(np.int64)), ValueError, "S must have dtype int32"),
    ("I shape", lambda a: a.__setitem__("I", a["I"][:, :1].copy()), ValueError, "I must have shape"),
    ("sigma", lambda a: a.__setitem__("sigma", 0.0), ValueError, "sigma"),
    ("substeps", lambda a: a.__setitem__("substeps", 0), ValueError, "substeps"),
    ("mode", lambda a: a.__setitem__("mode", "sde"), ValueError, "mode"),
    (
        "non-contiguous",
        lambda a: a.__setitem__("weights", np.repeat(a["weights"], 2)[::2]),
        ValueError,
        "C-contiguous",
    ),
]


@pytest.mark.parametrize(("name", "spoil", "error", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_arguments_raise_before_any_work(
    grid: MobilityGraph, name: str, spoil, error, message: str
) -> None:
    st = seeded_state(grid, runs=2)
    n = grid.n_regions
    args = dict(
        mode="stochastic",
        indptr=grid.indptr.copy(),
        indices=grid.indices.copy(),
        weights=grid.weights.copy(),
        population=grid.population.copy(),
        beta=np.full(2, 0.5),
        sigma=0.3,
        gamma=0.2,
        contact=np.ones((3, n)),
        travel=np.ones((3, n)),
        vacc=np.zeros((3, n)),
        S=st.S,
        E=st.E,
        I=st.I,
        R=st.R,
        incidence=np.zeros_like(st.S),
        peak_value=st.peak_value,
        peak_step=st.peak_step,
        seed=1,
        substeps=1,
    )
    spoil(args)
    before = {k: args[k].copy() for k in ("S", "E", "I", "R")}
    with pytest.raises(error, match=message.replace("[", r"\[").replace("+", r"\+")):
        _native.metapop_run(**args)
    for k, v in before.items():
        assert np.array_equal(args[k], v), f"{k} was written before the checks failed"


def test_cuda_device_on_a_cpu_build_says_so(grid: MobilityGraph) -> None:
    if _native.build_info()["cuda"]:
        pytest.skip("built with CUDA: the CUDA engine needs a GPU, which test_cuda_matches_cpu covers")
    st = seeded_state(grid, runs=2)
    with pytest.raises(ValueError, match="built without CUDA"):
        step_args = dict(
            beta=np.full(2, 0.5),
            sigma=0.3,
            gamma=0.2,
            contact=np.ones((1, 25)),
            travel=np.ones((1, 25)),
            vacc=np.zeros((1, 25)),
        )
        advance(grid, st, device="cuda", **step_args)


@pytest.mark.skipif(not _native.build_info()["cuda"], reason="a CPU-only build: see the test above")
def test_cuda_build_without_a_usable_gpu_raises_runtime_error(grid: MobilityGraph) -> None:
    if _gpu_present():
        pytest.skip("a GPU is present: test_cuda_matches_cpu runs instead")
    st = seeded_state(grid, runs=2)
    before = st.S.copy()
    with pytest.raises(RuntimeError, match="metapop CUDA"):
        advance(
            grid,
            st,
            beta=np.full(2, 0.5),
            sigma=0.3,
            gamma=0.2,
            contact=np.ones((1, 25)),
            travel=np.ones((1, 25)),
            vacc=np.zeros((1, 25)),
            device="cuda",
        )
    assert np.array_equal(st.S, before) and st.day == 0


def _gpu_present() -> bool:
    import shutil
    import subprocess

    if not _native.build_info()["cuda"] or shutil.which("nvidia-smi") is None:
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _gpu_present(), reason="needs a CUDA build and a GPU")
def test_cuda_matches_cpu(grid: MobilityGraph) -> None:
    """Same Philox streams: the CUDA engine reproduces the CPU trajectories (stochastic and ODE)."""
    for mode in ("stochastic", "deterministic"):
        cpu, gpu = seeded_state(grid, 64, mode), seeded_state(grid, 64, mode)
        d = Disease(r0=2.5)
        ones = np.ones((90, grid.n_regions))
        kw = dict(
            beta=np.full(64, d.beta),
            sigma=d.sigma,
            gamma=d.gamma,
            contact=ones,
            travel=ones,
            vacc=np.zeros_like(ones),
            seed=11,
            substeps=2,
        )
        a = advance(grid, cpu, **kw)
        b = advance(grid, gpu, device="cuda", **kw)
        if mode == "stochastic":
            assert np.array_equal(a, b) and np.array_equal(cpu.S, gpu.S)
        else:
            np.testing.assert_allclose(gpu.I, cpu.I, rtol=1e-12, atol=1e-9)


def test_lookup_tables_hold_the_bits_the_device_computes() -> None:
    """The CPU looks up q^n, log(k!) and log(p/q); the CUDA kernels compute them. Computing them on
    the CPU too (what the device does) must give the very same trajectories: every sampler path
    (zero-draw squeeze, inversion, BTRS, the complementary leap of p > 1/2, vaccination, hospital)."""
    from tests.scenario.conftest import grid_graph

    g = grid_graph(4, pop_scale=300_000, seed=5)
    runs, days = 24, 60
    outs = []
    for tables in (True, False):
        i = np.zeros(g.n_regions, np.int64)
        i[[0, 7]] = 500
        z = np.zeros_like(i)
        st = SeirState.start(g.population - i, z, i, z, runs=runs, mode="stochastic", H=np.zeros(g.n_regions))
        vacc = np.zeros((days, g.n_regions))
        vacc[30:, :8] = 0.9  # p = 1 - exp(-0.45) per half day: inversion and BTRS on S
        advance(
            g,
            st,
            beta=np.linspace(0.3, 1.2, runs),
            sigma=1.6,  # p = 1 - exp(-0.8) > 1/2: the complementary leap
            gamma=0.25,
            contact=np.ones((days, g.n_regions)),
            travel=np.ones((days, g.n_regions)),
            vacc=vacc,
            seed=17,
            substeps=2,
            hosp_frac=0.3,
            hosp_rate=0.2,
            lookup_tables=tables,
        )
        assert st.H is not None and st.H.sum() > 0
        outs.append(np.stack([st.S, st.E, st.I, st.R, st.H, st.peak_step]))
    assert np.array_equal(outs[0], outs[1])


def test_skipping_quiet_regions_gives_the_bits_of_visiting_every_region() -> None:
    """The CPU skips regions with no E, I or H in any run, no infectious neighbour and no vaccination
    (their draws all have n = 0 or probability 0), and I = 0 neighbours in the pressure sum; visiting
    every region (lookup_tables=False, what the device does) must give the same trajectories while
    the infection front crosses a lattice, with a vaccinated region ahead of it and beds."""
    from tests.scenario.conftest import grid_graph

    g = grid_graph(8, pop_scale=50_000, seed=3)
    runs, days = 6, 70
    vacc = np.zeros((days, g.n_regions))
    vacc[5:15, g.n_regions - 1] = 0.05  # the far corner: quiet but vaccinating
    outs = []
    for tables, threads in ((True, 1), (True, 2), (False, 1)):
        i = np.zeros(g.n_regions, np.int64)
        i[0] = 50
        z = np.zeros_like(i)
        st = SeirState.start(g.population - i, z, i, z, runs=runs, mode="stochastic", H=np.zeros(g.n_regions))
        onsets, untouched = [], []
        for chunk in (slice(0, 12), slice(12, days)):
            n = chunk.stop - chunk.start
            onsets.append(
                advance(
                    g,
                    st,
                    beta=np.linspace(0.4, 0.6, runs),
                    sigma=1 / 3,
                    gamma=1 / 5,
                    contact=np.ones((n, g.n_regions)),
                    travel=np.ones((n, g.n_regions)),
                    vacc=vacc[chunk],
                    seed=23,
                    num_threads=threads,
                    hosp_frac=0.1,
                    hosp_rate=0.2,
                    lookup_tables=tables,
                )
            )
            untouched.append(int(((st.E + st.I) == 0).all(axis=1).sum()))
        assert untouched[0] >= 10 and untouched[1] < untouched[0]  # quiet regions, then the front
        assert st.R[-1].min() > 0  # the vaccinated corner moved people to R
        outs.append(np.stack([st.S, st.E, st.I, st.R, st.H, st.peak_value, st.peak_step, *onsets]))
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])
