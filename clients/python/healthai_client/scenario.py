"""Scenario requests and results for the SDK (only the generated stubs; no server imports).

with Client(address) as c:
    base = c.scenario(graph="us_counties", seed_infections={"06037": 50}, horizon_days=180, runs=200)
    what_if = c.scenario(..., interventions=[{"regions": ["06037"], "start_day": 21, "end_day": 90,
                                               "contact_multiplier": 0.7}])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from healthai.v1 import scenario_pb2


def graph_message(
    graph: str | Mapping[str, Any], mobility: float | None = None
) -> scenario_pb2.ScenarioGraph:
    """A named graph, or {"region_ids": [...], "population": [...], "edges": [(src, dst, weight), ...]}."""
    if isinstance(graph, str):
        msg = scenario_pb2.ScenarioGraph(name=graph)
    else:
        msg = scenario_pb2.ScenarioGraph(
            region_ids=list(graph["region_ids"]),
            population=[int(p) for p in graph["population"]],
            edges=[
                scenario_pb2.Edge(src=int(s), dst=int(d), weight=float(w))
                for s, d, w in graph.get("edges", ())
            ],
        )
    if mobility is not None:
        msg.mobility = mobility
    return msg


def disease_message(disease: Mapping[str, float] | None) -> scenario_pb2.Disease:
    return scenario_pb2.Disease(**dict(disease or {}))


def counts_request(
    graph: scenario_pb2.ScenarioGraph,
    disease: scenario_pb2.Disease,
    *,
    observed: tuple[Sequence[str], Any] | None = None,
    stored: str | bool | None = None,
    end_date: str | None = None,
    window_days: int = 0,
) -> scenario_pb2.CalibrateRequest:
    """Calibration input: ``observed`` = (region_ids, [days x regions] counts), or the stored counts."""
    req = scenario_pb2.CalibrateRequest(graph=graph, disease=disease, window_days=window_days)
    if observed is not None:
        ids, counts = observed
        req.observed.region_ids.extend(ids)
        req.observed.counts.extend(np.asarray(counts, dtype=np.float64).ravel().tolist())
    elif stored:
        req.stored.syndrome = stored if isinstance(stored, str) else "ili"
        req.stored.end_date = end_date or ""
    return req


def scenario_request(
    graph: str | Mapping[str, Any],
    *,
    horizon_days: int,
    runs: int | None = None,
    seed: int = 0,
    disease: Mapping[str, float] | None = None,
    mobility: float | None = None,
    seed_infections: Mapping[str, int] | None = None,
    state: Mapping[str, Sequence[int]] | None = None,
    calibrate: Mapping[str, Any] | None = None,
    interventions: Sequence[Mapping[str, Any]] = (),
    period_days: int = 0,
    quantile_levels: Sequence[float] = (),
    sample_trajectories: int = 0,
    report_regions: Sequence[str] = (),
    deterministic: bool = False,
) -> scenario_pb2.ScenarioRequest:
    g, d = graph_message(graph, mobility), disease_message(disease)
    req = scenario_pb2.ScenarioRequest(
        graph=g,
        disease=d,
        horizon_days=horizon_days,
        runs=runs or 0,  # 0: the server's default, 100 runs (1 with deterministic)
        seed=seed,
        period_days=period_days,
        quantile_levels=list(quantile_levels),
        sample_trajectories=sample_trajectories,
        report_regions=list(report_regions),
        deterministic=deterministic,
        interventions=[_intervention(i, iv) for i, iv in enumerate(interventions)],
    )
    if seed_infections is not None:
        bad = [k for k in seed_infections if not isinstance(k, str)]
        if bad:
            raise ValueError(f"seed_infections: region ids must be strings (e.g. '01073'), got "
                             f"{type(bad[0]).__name__} {bad[0]!r} (a number loses a FIPS code's "
                             "leading zero)")
        req.seed_infections.region_ids.extend(seed_infections)
        req.seed_infections.infectious.extend(int(v) for v in seed_infections.values())
    elif state is not None:
        req.state.CopyFrom(scenario_pb2.State(**{k: list(v) for k, v in state.items()}))
    elif calibrate is not None:
        req.calibrate.CopyFrom(counts_request(g, d, **calibrate))
    return req


INTERVENTION_KEYS = tuple(f.name for f in scenario_pb2.Intervention.DESCRIPTOR.fields)


def _intervention(i: int, iv: Any) -> scenario_pb2.Intervention:
    """interventions[i] as a message; ValueError naming the key and the accepted ones otherwise."""
    if not isinstance(iv, Mapping):
        raise ValueError(f"interventions[{i}]: a {type(iv).__name__} is not an intervention; give a dict "
                         f"with keys from {list(INTERVENTION_KEYS)}")
    unknown = [k for k in iv if k not in INTERVENTION_KEYS]
    if unknown:
        raise ValueError(f"interventions[{i}]: unknown key {unknown[0]!r}; the keys are "
                         f"{list(INTERVENTION_KEYS)}")
    try:
        return scenario_pb2.Intervention(**dict(iv))
    except (TypeError, ValueError) as e:
        raise ValueError(f"interventions[{i}]: {e}") from None


def scenario_options() -> tuple[str, ...]:
    """The keyword options ``Client.scenario`` takes besides graph, horizon_days, timeout and progress."""
    code = scenario_request.__code__
    names = code.co_varnames[code.co_argcount:code.co_argcount + code.co_kwonlyargcount]
    return tuple(n for n in names if n != "horizon_days")


def check_scenario_options(options: Mapping[str, Any]) -> None:
    """TypeError naming an unknown scenario option and listing the accepted ones."""
    accepted = scenario_options()
    unknown = [k for k in options if k not in accepted]
    if unknown:
        raise TypeError(f"scenario: unknown argument {unknown[0]!r}; the options are "
                        f"{['horizon_days', *accepted, 'timeout', 'progress']}")


@dataclass(frozen=True)
class Calibration:
    r0: float
    reporting_rate: float
    rmse: float
    mae: float
    r2: float
    deviance_explained: float
    window_days: int
    last_date: str
    # 95 % profile-likelihood intervals; the rate is often not identifiable early in an epidemic
    reporting_rate_interval: tuple[float, float] = (0.0, 1.0)
    reporting_rate_identifiable: bool = False
    r0_interval: tuple[float, float] = (0.0, 0.0)

    @classmethod
    def from_proto(cls, m: scenario_pb2.CalibrateResult) -> Calibration:
        return cls(
            m.r0,
            m.reporting_rate,
            m.rmse,
            m.mae,
            m.r2,
            m.deviance_explained,
            m.window_days,
            m.last_date,
            (m.reporting_rate_low, m.reporting_rate_high),
            m.reporting_rate_identifiable,
            (m.r0_low, m.r0_high),
        )

    def describe_rate(self) -> str:
        lo, hi = self.reporting_rate_interval
        if self.reporting_rate_identifiable:
            return f"reporting rate {self.reporting_rate:.3f} (95% {lo:.3f}-{hi:.3f})"
        return (
            f"reporting rate not identifiable from this window (95% {lo:.3f}-{hi:.3f}; "
            f"best point {self.reporting_rate:.3f})"
        )


@dataclass(frozen=True)
class ScenarioResult:
    region_ids: list[str]
    levels: np.ndarray  # [L]
    period_start_day: np.ndarray  # [P]
    quantiles: np.ndarray  # [P, R, L] onsets per period
    mean: np.ndarray  # [P, R]
    total_quantiles: np.ndarray  # [P, L] all graph regions
    peak_size: np.ndarray  # [R, L]
    peak_day: np.ndarray  # [R, L]
    samples: np.ndarray  # [S, P, R]
    runs: int
    work: int
    elapsed_s: float
    calibration: Calibration | None
    horizon_days: int = 0
    # with disease hospital_fraction > 0: bed occupancy at each period's end
    hospital_quantiles: np.ndarray | None = None  # [P, R, L]
    hospital_total_quantiles: np.ndarray | None = None  # [P, L]

    @classmethod
    def from_proto(cls, m: scenario_pb2.ScenarioResult) -> ScenarioResult:
        r, lv, p = len(m.region_ids), np.array(m.quantile_levels), np.array(m.period_start_day)
        f = np.float32
        n_samples = len(m.samples) // max(len(p) * r, 1)
        return cls(
            list(m.region_ids),
            lv,
            p,
            np.array(m.quantiles, f).reshape(len(p), r, len(lv)),
            np.array(m.mean, f).reshape(len(p), r),
            np.array(m.total_quantiles, f).reshape(len(p), len(lv)),
            np.array(m.peak_size, f).reshape(r, len(lv)),
            np.array(m.peak_day, f).reshape(r, len(lv)),
            np.array(m.samples, f).reshape(n_samples, len(p), r),
            m.runs,
            m.work,
            m.elapsed_s,
            Calibration.from_proto(m.calibration) if m.HasField("calibration") else None,
            m.horizon_days,
            np.array(m.hospital_quantiles, f).reshape(len(p), r, len(lv)) if m.hospital_quantiles else None,
            np.array(m.hospital_total_quantiles, f).reshape(len(p), len(lv))
            if m.hospital_total_quantiles
            else None,
        )

    def quantile(self, level: float) -> np.ndarray:
        """[P, R] onsets at one of the result's levels."""
        k = int(np.argmin(np.abs(self.levels - level)))
        if abs(self.levels[k] - level) > 1e-9:
            raise KeyError(f"level {level} is not among {self.levels.tolist()}")
        return self.quantiles[..., k]
