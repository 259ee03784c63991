"""The native metapopulation SEIR engine (``healthai._native.metapop_run``), typed.

``MobilityGraph`` holds the region graph (CSR of away-contact weights, self excluded, row sums
<= 1) and populations; ``SeirState`` the compartments of every (region, run) cell: int32 for the
stochastic engine, float64 for the deterministic one. ``advance`` moves a state ``steps`` days on
and returns the onsets (E -> I) of those days per cell. The model equations are in
``csrc/metapop.h``; a seed gives the same trajectories for any thread count (Philox streams per
(run, region, sub-step)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from healthai import _native

Mode = Literal["stochastic", "deterministic"]


@dataclass(frozen=True)
class MobilityGraph:
    indptr: npt.NDArray[np.int64]  # [n + 1]
    indices: npt.NDArray[np.int64]  # [nnz]
    weights: npt.NDArray[np.float64]  # [nnz] fraction of i's contacts made with j's residents
    population: npt.NDArray[np.int64]  # [n]
    ids: tuple[str, ...]  # region ids, e.g. FIPS codes

    @property
    def n_regions(self) -> int:
        return int(self.population.shape[0])

    def away_fraction(self) -> npt.NDArray[np.float64]:
        """s_i: the row sums of the weights."""
        return np.add.reduceat(np.append(self.weights, 0.0), self.indptr[:-1])[: self.n_regions] * (
            np.diff(self.indptr) > 0
        )


@dataclass
class SeirState:
    S: np.ndarray
    E: np.ndarray
    I: np.ndarray  # noqa: E741 - the compartment's name
    R: np.ndarray
    peak_value: np.ndarray
    peak_step: npt.NDArray[np.int32]
    day: int = 0  # global day index of this state
    H: np.ndarray | None = None  # hospital compartment (None: SEIR without one)

    @property
    def mode(self) -> Mode:
        return "stochastic" if self.S.dtype == np.int32 else "deterministic"

    @classmethod
    def start(
        cls,
        S: np.ndarray,
        E: np.ndarray,
        I: np.ndarray,  # noqa: E741
        R: np.ndarray,
        *,
        runs: int,
        mode: Mode,
        day: int = 0,
        H: np.ndarray | None = None,
    ) -> SeirState:
        """Every run starts from the same per-region counts (1-d arrays of length n); ``H`` given
        (zeros allowed) turns the hospital compartment on."""
        dtype = np.int32 if mode == "stochastic" else np.float64
        if mode == "stochastic":
            for name, a in (("S", S), ("E", E), ("I", I), ("R", R), ("H", 0 if H is None else H)):
                if np.any(np.asarray(a) != np.round(a)):
                    raise ValueError(f"{name} must hold whole numbers in stochastic mode")

        def cells(a: np.ndarray) -> np.ndarray:
            a = np.asarray(a)
            if a.ndim != 1:
                raise ValueError(f"initial compartments must be 1-d per region, got shape {a.shape}")
            return np.ascontiguousarray(np.repeat(a.astype(dtype)[:, None], runs, axis=1))

        i0 = cells(I)
        h0 = None if H is None else cells(H)
        return cls(cells(S), cells(E), i0, cells(R), i0.copy(), np.zeros(i0.shape, np.int32), day, h0)

    def copy(self) -> SeirState:
        return SeirState(
            self.S.copy(),
            self.E.copy(),
            self.I.copy(),
            self.R.copy(),
            self.peak_value.copy(),
            self.peak_step.copy(),
            self.day,
            None if self.H is None else self.H.copy(),
        )


def simd_available() -> bool:
    """Whether the CPU engine runs its AVX-512 transitions here (this CPU has AVX-512 F and DQ)."""
    return bool(_native.metapop_simd_available())


def advance(
    graph: MobilityGraph,
    state: SeirState,
    *,
    beta: npt.ArrayLike,
    sigma: float,
    gamma: float,
    contact: npt.ArrayLike,
    travel: npt.ArrayLike,
    vacc: npt.ArrayLike,
    seed: int = 0,
    substeps: int = 1,
    num_threads: int | None = None,
    device: str = "cpu",
    hosp_frac: float = 0.0,
    hosp_rate: float = 0.0,
    lookup_tables: bool = True,
    simd: bool = True,
) -> np.ndarray:
    """Advance ``state`` in place by ``contact.shape[0]`` days; returns onsets per cell [n, runs].

    ``beta`` [runs] transmission rate per day; ``contact``, ``travel``, ``vacc`` [steps, n] per-day
    multipliers and vaccination rates. With ``state.H``: a fraction ``hosp_frac`` of those leaving I
    enter H, which empties into R at ``hosp_rate`` per day. ``lookup_tables=False`` makes the CPU
    compute the values it otherwise looks up and visit the quiet regions it otherwise skips, as the
    CUDA kernels do (the same bits; for tests). ``simd=False`` keeps the CPU on its scalar transitions
    where it would run the AVX-512 ones (``simd_available()``; the same bits; for tests and benchmarks).
    Raises ValueError / IndexError naming the argument.
    """
    if num_threads is not None and num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in [0, 2^64), got {seed}")
    f64 = np.float64
    sched = [np.ascontiguousarray(a, dtype=f64) for a in (contact, travel, vacc)]
    incidence = np.empty_like(state.S)
    _native.metapop_run(
        state.mode,
        graph.indptr,
        graph.indices,
        graph.weights,
        graph.population,
        np.ascontiguousarray(beta, dtype=f64),
        float(sigma),
        float(gamma),
        *sched,
        state.S,
        state.E,
        state.I,
        state.R,
        incidence,
        state.peak_value,
        state.peak_step,
        seed=seed,
        step0=state.day,
        substeps=substeps,
        num_threads=num_threads or 0,
        device=device,
        H=state.H,
        hosp_frac=float(hosp_frac),
        hosp_rate=float(hosp_rate),
        lookup_tables=lookup_tables,
        simd=simd,
    )
    state.day += sched[0].shape[0]
    return incidence
