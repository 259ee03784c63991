"""Scenario model: disease parameters, interventions, and an ensemble run on the native engine.

A scenario advances ``runs`` copies of one start state for ``horizon`` days in periods of
``period_days``; after each period it keeps only summaries (quantiles over runs of the period's
onsets per region, a few sample trajectories), so memory stays O(regions x runs) whatever the
horizon. Peaks are prevalence peaks (largest I at a day's end) and their day. With a hospitalised
fraction (``Disease.hospital_fraction`` > 0) the model is SEIHR: that fraction of those leaving I
occupy a bed (H, not infectious) for ``hospital_days`` on average, and the result adds quantiles of
bed occupancy at each period's end.

Sub-steps per day (``Scenario.substeps``, default: ``substeps_for`` the disease's rates): the
stochastic engine leaves E, I and H with probability rate x dt per sub-step (mean stays of 1/rate, so
its mean has the ODE's final size at any step); the sub-steps bound the remaining O(dt) timing error
by keeping every such rate x dt <= ``STOCHASTIC_RATE_DT``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc
import numpy as np

from healthai.errors import DeadlineExceeded, HealthAIError
from healthai.ops.metapop import MobilityGraph, Mode, SeirState, advance
from healthai.scenario.errors import FieldError

# The 23 quantile levels of CDC FluSight / the Scenario Modeling Hubs.
FLUSIGHT_LEVELS: tuple[float, ...] = (0.01, 0.025, *[round(0.05 * k, 2) for k in range(1, 20)], 0.975, 0.99)


class Cancelled(HealthAIError):
    """The caller went away: the run stopped between periods."""

    code = grpc.StatusCode.CANCELLED


@dataclass(frozen=True)
class Disease:
    r0: float = 2.0  # basic reproduction number (beta = r0 / infectious_days)
    latent_days: float = 3.0  # mean E duration (sigma = 1 / latent_days)
    infectious_days: float = 5.0  # mean I duration (gamma = 1 / infectious_days)
    # Hospital compartment: off by default (0). Both values are PLACEHOLDERS for the user to set for
    # the pathogen and season, not estimates: e.g. US influenza burden estimates put hospitalisations
    # near 1 % of symptomatic illnesses, and stays are typically several days; COVID-19 differs.
    hospital_fraction: float = 0.0  # fraction of those leaving I who are hospitalised
    hospital_days: float = 5.0  # mean stay in H (placeholder)

    @property
    def hospitalised(self) -> bool:
        return self.hospital_fraction > 0.0

    def check(self) -> None:
        if not (np.isfinite(self.r0) and 0.0 <= self.r0 <= 50.0):
            raise FieldError(f"r0 must be in [0, 50], got {self.r0}", field="disease.r0")
        for name in ("latent_days", "infectious_days"):
            v = getattr(self, name)
            if not (np.isfinite(v) and 0.1 <= v <= 365.0):
                raise FieldError(f"{name} must be in [0.1, 365], got {v}", field=f"disease.{name}")
        if not (np.isfinite(self.hospital_fraction) and 0.0 <= self.hospital_fraction <= 1.0):
            raise FieldError(
                f"hospital_fraction must be in [0, 1], got {self.hospital_fraction}",
                field="disease.hospital_fraction",
            )
        if not (np.isfinite(self.hospital_days) and 0.1 <= self.hospital_days <= 365.0):
            raise FieldError(
                f"hospital_days must be in [0.1, 365], got {self.hospital_days}",
                field="disease.hospital_days",
            )

    @property
    def beta(self) -> float:
        return self.r0 / self.infectious_days

    @property
    def sigma(self) -> float:
        return 1.0 / self.latent_days

    @property
    def gamma(self) -> float:
        return 1.0 / self.infectious_days

    @property
    def hosp_rate(self) -> float:
        return 1.0 / self.hospital_days


# Sub-steps from the rates: the tau-leap keeps sigma, gamma (and the hospital rate) x dt <= 0.1, which
# puts the mean's peak size within 0.3 % and peak day within a day of the ODE's for R0 1.5-3 (attack
# rate: exact); RK4 keeps rate x h <= 0.5 (accurate, and stable for short latent periods); at most
# MAX_SUBSTEPS (rate x dt <= 10 / 24 then, for the shortest stays Disease.check admits).
STOCHASTIC_RATE_DT = 0.1
ODE_RATE_DT = 0.5
MAX_SUBSTEPS = 24


def substeps_for(disease: Disease, mode: Mode) -> int:
    """Sub-steps per day for ``disease`` in ``mode`` (the default disease: 4 stochastic, 1 for the ODE)."""
    rates = [disease.sigma, disease.gamma] + ([disease.hosp_rate] if disease.hospitalised else [])
    bound = STOCHASTIC_RATE_DT if mode == "stochastic" else ODE_RATE_DT
    return int(min(MAX_SUBSTEPS, max(1, math.ceil(max(rates) / bound - 1e-9))))


@dataclass(frozen=True)
class Intervention:
    """From day ``start`` (inclusive) to ``end`` (exclusive) in ``regions`` (positions; empty: all)."""

    start: int
    end: int
    regions: tuple[int, ...] = ()
    contact_multiplier: float = 1.0  # scales contacts (e.g. 0.7: school closures cut 30 %)
    # scales the mobility edges of the regions both ways: their residents' contacts elsewhere and other
    # regions' residents' contacts in them (an edge takes the smaller multiplier of its two regions, or the
    # larger when both are >= 1: edge_travel); 0 cuts the regions off, one multiplier everywhere scales all
    travel_multiplier: float = 1.0
    vaccination_rate: float = 0.0  # fraction of susceptibles vaccinated per day (S -> R)


def schedules(
    graph: MobilityGraph, horizon: int, interventions: Sequence[Intervention]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-day, per-region contact and travel multipliers and vaccination rates [horizon, n]."""
    n = graph.n_regions
    contact, travel, vacc = np.ones((horizon, n)), np.ones((horizon, n)), np.zeros((horizon, n))
    for k, iv in enumerate(interventions):
        f = f"interventions[{k}]"
        if not 0 <= iv.start < iv.end:
            raise FieldError(f"start {iv.start} must be >= 0 and before end {iv.end}", field=f"{f}.start")
        bad = [r for r in iv.regions if not 0 <= r < n]
        if bad:
            raise FieldError(f"region {bad[0]} is not in the graph", field=f"{f}.regions")
        cols = np.array(iv.regions, np.int64) if iv.regions else np.arange(n)
        days = slice(min(iv.start, horizon), min(iv.end, horizon))
        if not (np.isfinite(iv.contact_multiplier) and 0.0 <= iv.contact_multiplier <= 10.0):
            raise FieldError(
                f"must be in [0, 10], got {iv.contact_multiplier}", field=f"{f}.contact_multiplier"
            )
        if not (np.isfinite(iv.travel_multiplier) and iv.travel_multiplier >= 0.0):
            raise FieldError(f"must be >= 0, got {iv.travel_multiplier}", field=f"{f}.travel_multiplier")
        if not (np.isfinite(iv.vaccination_rate) and 0.0 <= iv.vaccination_rate <= 1.0):
            raise FieldError(
                f"must be in [0, 1] per day, got {iv.vaccination_rate}", field=f"{f}.vaccination_rate"
            )
        contact[days, cols] *= iv.contact_multiplier
        travel[days, cols] *= iv.travel_multiplier
        vacc[days, cols] += iv.vaccination_rate
    check_travel(graph, travel)
    return contact, travel, vacc


def edge_travel(graph: MobilityGraph, travel: np.ndarray) -> np.ndarray:
    """Per edge [nnz], one day's multipliers [n]: the smaller of its two regions' when < 1, else the
    larger (csrc/metapop_cell.h, edge_travel)."""
    src = np.repeat(np.arange(graph.n_regions), np.diff(graph.indptr))
    a, b = travel[src], travel[graph.indices]
    lo = np.minimum(a, b)
    return np.where(lo < 1.0, lo, np.maximum(a, b))


def away_rows(graph: MobilityGraph, travel: np.ndarray) -> np.ndarray:
    """a_i = sum_j w_ij edge_travel for one day's multipliers [n]: the contacts each region makes away."""
    w = np.append(graph.weights * edge_travel(graph, travel), 0.0)
    return np.add.reduceat(w, graph.indptr[:-1])[: graph.n_regions] * (np.diff(graph.indptr) > 0)


def check_travel(graph: MobilityGraph, travel: np.ndarray) -> None:
    """Travel can only move the contacts that exist: a_i <= 1 every day (FieldError)."""
    away = graph.away_fraction()
    if np.any(travel * away[None, :] > 1.0 + 1e-9):
        raise FieldError(
            "travel multipliers give some region more away contacts than contacts "
            f"(at most {1.0 / max(away.max(), 1e-12):.3g})",
            field="interventions.travel_multiplier",
        )
    for day in np.unique(travel, axis=0):  # the distinct days: few
        total = away_rows(graph, day)
        if np.any(total > 1.0 + 1e-9):
            i = int(np.argmax(total))
            raise FieldError(
                f"travel multipliers give region {graph.ids[i]} more away contacts than contacts "
                f"({total[i]:.3g}, its neighbours' multipliers above 1 included)",
                field="interventions.travel_multiplier",
            )


@dataclass
class Scenario:
    graph: MobilityGraph
    start: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # S, E, I, R per region
    horizon: int
    runs: int = 100
    seed: int = 0
    disease: Disease = field(default_factory=Disease)
    interventions: Sequence[Intervention] = ()
    period_days: int = 7
    levels: Sequence[float] = FLUSIGHT_LEVELS
    samples: int = 0  # runs kept as sample trajectories (the first ones)
    mode: Mode = "stochastic"
    substeps: int | None = None  # per day; None: substeps_for(disease, mode)
    num_threads: int | None = None
    beta_scale: float = 1.0  # calibration's transmission factor on top of disease.r0
    start_h: np.ndarray | None = None  # hospital occupancy per region at the start (default 0)

    @property
    def work(self) -> int:
        """runs x regions x days: what the work caps bound."""
        return self.runs * self.graph.n_regions * self.horizon

    @property
    def steps_per_day(self) -> int:
        return self.substeps if self.substeps is not None else substeps_for(self.disease, self.mode)


@dataclass
class Result:
    period_start: np.ndarray  # [P] day of each period's start
    quantiles: np.ndarray  # [P, n, L] onsets per period and region
    mean: np.ndarray  # [P, n]
    total_quantiles: np.ndarray  # [P, L] onsets summed over regions
    peak_size: np.ndarray  # [n, L] quantiles of the prevalence peak
    peak_day: np.ndarray  # [n, L] quantiles of its day
    samples: np.ndarray  # [S, P, n] onsets per period of the first S runs
    levels: np.ndarray
    final: SeirState
    hospital: np.ndarray | None = None  # [P, n, L] bed occupancy at each period's end (SEIHR only)
    hospital_total: np.ndarray | None = None  # [P, L] occupancy summed over regions


def check(s: Scenario) -> None:
    s.disease.check()
    if not 1 <= s.horizon <= 3650:
        raise FieldError(f"horizon must be 1..3650 days, got {s.horizon}", field="horizon_days")
    if s.runs < 1:
        raise FieldError(f"runs must be >= 1, got {s.runs}", field="runs")
    if not 1 <= s.period_days <= s.horizon:
        raise FieldError(f"period_days must be in 1..horizon, got {s.period_days}", field="period_days")
    if not 0 <= s.samples <= s.runs:
        raise FieldError(f"samples must be in 0..runs ({s.runs}), got {s.samples}", field="samples")
    if s.substeps is not None and not 1 <= s.substeps <= MAX_SUBSTEPS:
        raise FieldError(f"substeps must be in 1..{MAX_SUBSTEPS}, got {s.substeps}", field="substeps")
    rates = [s.disease.sigma, s.disease.gamma] + ([s.disease.hosp_rate] if s.disease.hospitalised else [])
    if s.mode == "stochastic" and max(rates) / s.steps_per_day > 1.0:
        raise FieldError(f"a stage's exit rate x dt exceeds 1 with {s.substeps} substeps", field="substeps")
    lv = np.asarray(s.levels, dtype=np.float64)
    if lv.ndim != 1 or len(lv) == 0 or np.any(~(lv > 0) | ~(lv < 1)) or np.any(np.diff(lv) <= 0):
        raise FieldError("levels must be increasing, strictly between 0 and 1", field="quantile_levels")
    if not 0 <= s.seed < 2**64:
        raise FieldError(f"seed must be in [0, 2^64), got {s.seed}", field="seed")
    n = s.graph.n_regions
    names = ("S", "E", "I", "R")
    for name, a in zip(names, s.start, strict=True):
        if np.shape(a) != (n,) or np.any(np.asarray(a) < 0):
            raise FieldError(f"{name} must be {n} non-negative counts", field=f"start.{name}")
    comps = list(s.start)
    if s.start_h is not None:
        h = np.asarray(s.start_h)
        if np.shape(h) != (n,) or np.any(h < 0):
            raise FieldError(f"H must be {n} non-negative counts", field="start.H")
        if np.any(h > 0) and not s.disease.hospitalised:
            raise FieldError("hospital occupancy needs disease.hospital_fraction > 0", field="start.H")
        comps.append(h)
    total = sum(np.asarray(a, dtype=np.float64) for a in comps)
    bad = np.flatnonzero(np.abs(total - s.graph.population) > (0 if s.mode == "stochastic" else 1e-6 * total))
    if len(bad):
        i = int(bad[0])
        raise FieldError(
            f"S+E+I{'+H' if s.start_h is not None else ''}+R of region {s.graph.ids[i]} is {total[i]:.0f}, "
            f"not its population {s.graph.population[i]}",
            field="start",
        )


def run(
    s: Scenario,
    *,
    progress: Callable[[int, int], None] | None = None,
    stop: threading.Event | None = None,
    deadline: float | None = None,
    clock: Callable[[], float] | None = None,
) -> Result:
    """Run the ensemble. ``progress(done_days, horizon)`` after each period; ``stop`` set → Cancelled;
    ``deadline`` (a ``clock()`` time) passed → DeadlineExceeded. Both are checked between periods."""
    import time

    check(s)
    clock = clock or time.monotonic
    contact, travel, vacc = schedules(s.graph, s.horizon, s.interventions)
    hosp = s.disease.hospitalised
    h0 = None if not hosp else (np.zeros(s.graph.n_regions) if s.start_h is None else s.start_h)
    state = SeirState.start(*s.start, runs=s.runs, mode=s.mode, H=h0)
    beta = np.full(s.runs, s.disease.beta * s.beta_scale)
    lv = np.asarray(s.levels, dtype=np.float64)
    starts = np.arange(0, s.horizon, s.period_days)
    n, P, L = s.graph.n_regions, len(starts), len(lv)
    q = np.empty((P, n, L), np.float32)
    mean = np.empty((P, n), np.float32)
    tq = np.empty((P, L), np.float64)
    samples = np.empty((s.samples, P, n), np.float32 if s.mode == "deterministic" else np.int32)
    hq = np.empty((P, n, L), np.float32) if hosp else None
    htq = np.empty((P, L), np.float64) if hosp else None
    for p, day in enumerate(starts):
        if stop is not None and stop.is_set():
            raise Cancelled("scenario cancelled")
        if deadline is not None and clock() > deadline:
            raise DeadlineExceeded(f"deadline passed after {day} of {s.horizon} days")
        end = min(day + s.period_days, s.horizon)
        onsets = advance(
            s.graph,
            state,
            beta=beta,
            sigma=s.disease.sigma,
            gamma=s.disease.gamma,
            contact=contact[day:end],
            travel=travel[day:end],
            vacc=vacc[day:end],
            seed=s.seed,
            substeps=s.steps_per_day,
            num_threads=s.num_threads,
            hosp_frac=s.disease.hospital_fraction,
            hosp_rate=s.disease.hosp_rate,
        )
        q[p] = np.quantile(onsets, lv, axis=1).T
        mean[p] = onsets.mean(axis=1)
        tq[p] = np.quantile(onsets.sum(axis=0, dtype=np.float64), lv)
        samples[:, p, :] = onsets[:, : s.samples].T
        if hq is not None and htq is not None and state.H is not None:
            hq[p] = np.quantile(state.H, lv, axis=1).T
            htq[p] = np.quantile(state.H.sum(axis=0, dtype=np.float64), lv)
        if progress is not None:
            progress(int(end), s.horizon)
    return Result(
        starts,
        q,
        mean,
        tq,
        np.quantile(state.peak_value, lv, axis=1).T,
        np.quantile(state.peak_step, lv, axis=1).T,
        samples,
        lv,
        state,
        hq,
        htq,
    )
