"""Fit transmission (r0) and a reporting rate to the latest observed daily counts.

Observed columns are graph regions or groups of them (for the county graph, a state code such as
US-MA stands for the state's counties, which is how the store's surveillance counts are keyed). The
simulation covers the observed regions and two rings of neighbours (infections farther away within
the window are neglected). The window's first day is seeded from the first week's counts: true
onsets = reported / rate, with E and I at the levels those onsets imply in an epidemic growing at
the rate that r0 gives, spread within a group by population. The deterministic engine runs every
(r0, rate) pair of a grid at once (the runs dimension holds the grid), the Poisson deviance picks
the best pair, r0 and then the rate are refined, and the state at the window's end (rounded to
whole people) starts the scenarios.

Identifiability: while susceptibles are plentiful the counts are linear in the true onsets, so a
rate and the r0 of the same growth fit equally well: only the depletion of susceptibles (a peak or
a bend in the window) separates them. The fit therefore reports 95 % profile-likelihood intervals
(deviance within chi2_1(0.95) = 3.84 of the best, scaled by the quasi-Poisson dispersion when the
counts are overdispersed; grid intervals rounded outward by one grid step) for the rate and r0, and
calls the rate identifiable only when its interval is closed on the low side and spans at most a
factor of 2 (a reporting choice, not fitted to data). The best point of that joint grid is the fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from healthai.ops.metapop import MobilityGraph, SeirState, advance
from healthai.scenario.errors import FieldError
from healthai.scenario.graphs import state_of
from healthai.scenario.model import Disease, substeps_for

RATES = np.geomspace(0.02, 1.0, 8)
R0_COARSE = np.linspace(0.4, 4.0, 19)
RATE_PROFILE = np.geomspace(0.005, 1.0, 41)  # the rates of the profile likelihood (steps of 14 %)
R0_PROFILE_HALF_WIDTH, R0_PROFILE_POINTS = 0.4, 21  # r0 grid around the coarse best
CHI2_1_95 = 3.841458820694124  # chi-square(1 d.f.) 95 % quantile
IDENTIFIABLE_SPAN = 2.0  # the rate counts as identified when its interval spans at most this factor


@dataclass(frozen=True)
class Fit:
    r0: float
    reporting_rate: float
    rmse: float
    mae: float
    r2: float
    deviance_explained: float
    window_days: int
    start: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # S, E, I, R at the window's end
    fitted: np.ndarray  # [window, groups] reported counts the fit predicts
    observed: np.ndarray  # [window, groups]
    # 95 % profile-likelihood intervals; an interval reaching an end of the searched range
    # (rates 0.005..1) means the data do not bound it on that side
    rate_interval: tuple[float, float] = (0.0, 1.0)
    r0_interval: tuple[float, float] = (0.0, 0.0)
    rate_identifiable: bool = False


def groups_of(
    graph: MobilityGraph, ids: Sequence[str], field: str = "observed.region_ids"
) -> list[np.ndarray]:
    """Graph positions summed by each observed column."""
    pos = {g: k for k, g in enumerate(graph.ids)}
    states: dict[str, list[int]] = {}
    out = []
    for k, rid in enumerate(ids):
        if rid in pos:
            out.append(np.array([pos[rid]]))
            continue
        if not states:
            for g, p in pos.items():
                states.setdefault(state_of(g), []).append(p)
        if rid not in states:
            raise FieldError(
                f"region {rid!r} is neither a graph region nor a state of it", field=f"{field}[{k}]"
            )
        out.append(np.array(states[rid]))
    seen = np.concatenate(out)
    if len(np.unique(seen)) != len(seen):
        raise FieldError("observed columns overlap (a region counted twice)", field=field)
    return out


def neighbourhood(graph: MobilityGraph, regions: np.ndarray, *, hops: int) -> np.ndarray:
    """Sorted positions of ``regions`` and of every region within ``hops`` edges of them."""
    mask = np.zeros(graph.n_regions, bool)
    mask[regions] = True
    for _ in range(hops):
        rows = np.flatnonzero(mask)
        starts, ends = graph.indptr[rows], graph.indptr[rows + 1]
        reached = np.concatenate([graph.indices[a:b] for a, b in zip(starts, ends, strict=True)] or [[]])
        mask[reached.astype(np.int64)] = True
    return np.flatnonzero(mask)


def subgraph(graph: MobilityGraph, keep: np.ndarray) -> MobilityGraph:
    """The regions ``keep`` (sorted) with the edges among them (weights unchanged)."""
    pos = np.full(graph.n_regions, -1, np.int64)
    pos[keep] = np.arange(len(keep))
    src = np.repeat(np.arange(graph.n_regions), np.diff(graph.indptr))
    inside = (pos[src] >= 0) & (pos[graph.indices] >= 0)
    s, d = pos[src[inside]], pos[graph.indices[inside]]
    indptr = np.zeros(len(keep) + 1, np.int64)
    np.cumsum(np.bincount(s, minlength=len(keep)), out=indptr[1:])
    return MobilityGraph(indptr, np.ascontiguousarray(d), np.ascontiguousarray(graph.weights[inside]),
                         np.ascontiguousarray(graph.population[keep]), tuple(graph.ids[k] for k in keep))


def _deviance(y: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """Poisson deviance summed over all but the last axis (mu broadcast)."""
    mu = np.maximum(mu, 1e-9)
    term = np.where(y > 0, y * np.log(np.maximum(y, 1e-300) / mu), 0.0) - (y - mu)
    return 2.0 * term.reshape(-1, term.shape[-1]).sum(axis=0)


def _simulate(
    graph: MobilityGraph,
    disease: Disease,
    groups: list[np.ndarray],
    first: np.ndarray,
    r0: np.ndarray,
    rate: np.ndarray,
    days: int,
) -> tuple[np.ndarray, SeirState]:
    """Deterministic runs (one per (r0, rate) pair): group onsets [days, groups, runs] and the end state."""
    n, runs = graph.n_regions, len(r0)
    pop = graph.population.astype(np.float64)
    # SEIR growth rate of each r0: (g + sigma)(g + gamma) = sigma * beta; the first week's mean is the
    # onset rate at its middle (day 3), so day 0 had exp(-3 g) of it; E = onsets / sigma and
    # I = onsets / (g + gamma) are the compartments of an exponentially growing epidemic.
    sg, gm = disease.sigma, disease.gamma
    growth = (-(sg + gm) + np.sqrt((sg - gm) ** 2 + 4 * sg * r0 * gm)) / 2
    onset = np.zeros((n, runs))
    for g, cols in enumerate(groups):
        share = pop[cols] / pop[cols].sum()
        onset[cols] = first[g] * share[:, None] * (np.exp(-3 * growth) / rate)[None, :]
    e = np.minimum(onset / sg, 0.25 * pop[:, None])
    i = np.minimum(onset / np.maximum(growth + gm, 0.1 * gm)[None, :], 0.25 * pop[:, None])
    s = pop[:, None] - e - i
    zeros = np.zeros_like(s)
    st = SeirState(
        np.ascontiguousarray(s),
        np.ascontiguousarray(e),
        np.ascontiguousarray(i),
        zeros.copy(),
        i.copy(),
        np.zeros((n, runs), np.int32),
    )
    ones, none = np.ones((1, n)), np.zeros((1, n))
    out = np.empty((days, len(groups), runs))
    for t in range(days):
        daily = advance(
            graph,
            st,
            beta=r0 / disease.infectious_days,
            sigma=disease.sigma,
            gamma=disease.gamma,
            contact=ones,
            travel=ones,
            vacc=none,
            substeps=substeps_for(disease, "deterministic"),
        )
        for g, cols in enumerate(groups):
            out[t, g] = daily[cols].sum(axis=0)
    return out, st


def calibrate(
    graph: MobilityGraph, disease: Disease, ids: Sequence[str], counts: np.ndarray, *, window_days: int = 28,
    fields: tuple[str, str] = ("observed.region_ids", "observed.counts"),
) -> Fit:
    """``counts`` [days, len(ids)] reported daily counts, oldest first; the last ``window_days`` are
    fitted. ``fields``: the request fields of ``ids`` and ``counts``, which errors name (for the store's
    counts, already cut to the graph by ``observed.within_graph``: ``stored`` twice)."""
    disease.check()
    counts = np.asarray(counts, dtype=np.float64)
    ids_field, counts_field = fields
    if counts.ndim != 2 or counts.shape[1] != len(ids):
        raise FieldError(f"counts must be [days x {len(ids)}] values", field=counts_field)
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise FieldError("counts must be finite and >= 0", field=counts_field)
    if not 7 <= window_days <= 365:
        raise FieldError(f"window_days must be in 7..365, got {window_days}", field="window_days")
    if counts.shape[0] < window_days:
        raise FieldError(
            f"{counts.shape[0]} days of counts, fewer than window_days={window_days}", field="window_days"
        )
    full_groups = groups_of(graph, ids, ids_field)
    keep = neighbourhood(graph, np.concatenate(full_groups), hops=2)
    sub, groups = subgraph(graph, keep), [np.searchsorted(keep, cols) for cols in full_groups]
    y = counts[-window_days:]
    if y.sum() <= 0:
        raise FieldError("no cases in the fitting window: nothing to calibrate to", field=counts_field)
    first = y[:7].mean(axis=0)
    days = window_days - 1  # the first day seeds the state; the fit covers the days after it
    target = y[1:]

    def search(r0s: np.ndarray, rates: np.ndarray) -> tuple[float, float]:
        r0_grid, rate_grid = (a.ravel() for a in np.meshgrid(r0s, rates, indexing="ij"))
        onsets, _ = _simulate(sub, disease, groups, first, r0_grid, rate_grid, days)
        dev = _deviance(target[..., None], onsets * rate_grid)
        best = int(np.argmin(dev))
        return float(r0_grid[best]), float(rate_grid[best])

    r0, rate = search(R0_COARSE, RATES)  # coarse grid, then r0 and the rate refined in turn
    step = R0_COARSE[1] - R0_COARSE[0]
    r0, rate = search(np.linspace(max(r0 - step, 0.0), r0 + step, 11), np.array([rate]))
    ratio = RATES[1] / RATES[0]
    r0, rate = search(np.array([r0]), np.clip(rate * ratio ** np.linspace(-1, 1, 9), 1e-3, 1.0))
    r0, rate, rate_ci, r0_ci, identifiable = _profile(sub, disease, groups, first, target, days, r0, rate)
    onsets, st = _simulate(sub, disease, groups, first, np.array([r0]), np.array([rate]), days)
    fitted = onsets[..., 0] * rate
    err = fitted - target
    sst = float(((target - target.mean()) ** 2).sum())
    null = _deviance(target[..., None], np.broadcast_to(target.mean(axis=0), target.shape)[..., None])[0]
    model = _deviance(target[..., None], fitted[..., None])[0]
    e, i, r = (np.zeros(graph.n_regions, np.int64) for _ in range(3))
    for full, part in ((e, st.E), (i, st.I), (r, st.R)):
        full[keep] = np.rint(part[:, 0]).astype(np.int64)
    s = graph.population - e - i - r
    r = r + np.minimum(s, 0)  # rounding may overdraw S by a person
    s = np.maximum(s, 0)
    return Fit(
        r0=r0,
        reporting_rate=rate,
        rmse=float(np.sqrt((err**2).mean())),
        mae=float(np.abs(err).mean()),
        r2=1.0 - float((err**2).sum()) / sst if sst > 0 else 0.0,
        deviance_explained=1.0 - model / null if null > 0 else 0.0,
        window_days=window_days,
        start=(s, e, i, r),
        fitted=fitted,
        observed=target,
        rate_interval=rate_ci,
        r0_interval=r0_ci,
        rate_identifiable=identifiable,
    )


def _profile(
    graph: MobilityGraph,
    disease: Disease,
    groups: list[np.ndarray],
    first: np.ndarray,
    target: np.ndarray,
    days: int,
    r0: float,
    rate: float,
) -> tuple[float, float, tuple[float, float], tuple[float, float], bool]:
    """The best (r0, rate) of a joint grid around the search's fit (which the grid contains) and the
    95 % profile-likelihood intervals of the rate and r0, from one grid run at once."""
    r0s = np.linspace(max(r0 - R0_PROFILE_HALF_WIDTH, 0.05), r0 + R0_PROFILE_HALF_WIDTH, R0_PROFILE_POINTS)
    r0s = np.unique(np.append(r0s, r0))
    rates = np.unique(np.append(RATE_PROFILE, rate))
    r0_grid, rate_grid = (a.ravel() for a in np.meshgrid(r0s, rates, indexing="ij"))
    onsets, _ = _simulate(graph, disease, groups, first, r0_grid, rate_grid, days)
    dev = _deviance(target[..., None], onsets * rate_grid).reshape(len(r0s), len(rates))
    best = float(dev.min())
    dispersion = max(1.0, best / max(target.size - 2, 1))  # quasi-Poisson: overdispersed counts
    inside = dev <= best + CHI2_1_95 * dispersion
    rate_ci, rate_closed = _outward(rates, inside.any(axis=0))
    r0_ci, _ = _outward(r0s, inside.any(axis=1))
    identifiable = rate_closed and rate_ci[1] <= IDENTIFIABLE_SPAN * rate_ci[0]
    k, j = np.unravel_index(int(np.argmin(dev)), dev.shape)
    return float(r0s[k]), float(rates[j]), rate_ci, r0_ci, identifiable


def _outward(grid: np.ndarray, inside: np.ndarray) -> tuple[tuple[float, float], bool]:
    """The interval of the grid points inside, widened to the next point out on each side (the true
    bound lies between); and whether the low side is closed (the lowest grid point is outside)."""
    idx = np.flatnonzero(inside)
    lo, hi = max(int(idx[0]) - 1, 0), min(int(idx[-1]) + 1, len(grid) - 1)
    return (float(grid[lo]), float(grid[hi])), bool(idx[0] > 0)
