"""Proto <-> domain conversions of the Scenario service (every bad field -> InvalidInput naming it)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from healthai.errors import NotFound
from healthai.ops.metapop import MobilityGraph
from healthai.scenario.calibrate import Fit
from healthai.scenario.errors import FieldError
from healthai.scenario.graphs import COUNTY_GRAPH, county_graph, explicit_graph
from healthai.scenario.model import FLUSIGHT_LEVELS, Disease, Intervention, Result
from healthai.serving.wire import extend_float32
from healthai.v1 import scenario_pb2

DEFAULT_MOBILITY = 0.1


def graph_from(msg: scenario_pb2.ScenarioGraph, graphs_dir: Path) -> MobilityGraph:
    mobility = msg.mobility if msg.HasField("mobility") else DEFAULT_MOBILITY
    if not 0.0 <= mobility <= 1.0:
        raise FieldError(f"mobility must be in [0, 1], got {mobility}", field="graph.mobility")
    if msg.name:
        if msg.region_ids or msg.population or msg.edges:
            raise FieldError("give a graph name or regions/population/edges, not both", field="graph.name")
        if msg.name != COUNTY_GRAPH:
            raise NotFound(
                f"graph.name: {msg.name!r} is not served (have ['{COUNTY_GRAPH}'])", field="graph.name"
            )
        return county_graph(graphs_dir / msg.name, mobility)
    if not msg.region_ids:
        raise FieldError("a name or region_ids + population is required", field="graph")
    if len(msg.population) != len(msg.region_ids):
        raise FieldError(
            f"{len(msg.population)} populations for {len(msg.region_ids)} regions", field="graph.population"
        )
    return explicit_graph(
        list(msg.region_ids),
        list(msg.population),
        [(e.src, e.dst, e.weight) for e in msg.edges],
        mobility=mobility,
    )


def disease_from(msg: scenario_pb2.Disease) -> Disease:
    d = Disease()
    kw = {
        f: getattr(msg, f) if msg.HasField(f) else getattr(d, f)
        for f in ("r0", "latent_days", "infectious_days", "hospital_fraction", "hospital_days")
    }
    disease = Disease(**kw)
    disease.check()
    return disease


def positions(graph: MobilityGraph, ids: Sequence[str], field: str) -> list[int]:
    pos = {g: k for k, g in enumerate(graph.ids)}
    out = []
    for k, rid in enumerate(ids):
        if rid not in pos:
            raise FieldError(f"region {rid!r} is not in the graph", field=f"{field}[{k}]")
        out.append(pos[rid])
    return out


def interventions_from(msgs: Sequence[scenario_pb2.Intervention], graph: MobilityGraph) -> list[Intervention]:
    out = []
    for k, m in enumerate(msgs):
        out.append(
            Intervention(
                start=m.start_day,
                end=m.end_day,
                regions=tuple(positions(graph, m.regions, f"interventions[{k}].regions")),
                contact_multiplier=m.contact_multiplier if m.HasField("contact_multiplier") else 1.0,
                travel_multiplier=m.travel_multiplier if m.HasField("travel_multiplier") else 1.0,
                vaccination_rate=m.vaccination_rate if m.HasField("vaccination_rate") else 0.0,
            )
        )
    return out


def state_from(msg: scenario_pb2.State, graph: MobilityGraph) -> tuple[np.ndarray, ...]:
    """S, E, I, R and, when the message has ``h``, the hospital occupancy H as a fifth array."""
    n = graph.n_regions
    out = []
    for name in ("s", "e", "i", "r", "h"):
        values = getattr(msg, name)
        if name == "h" and not values:
            break
        if len(values) != n:
            raise FieldError(f"{len(values)} values for {n} regions", field=f"state.{name}")
        a = np.array(values, dtype=np.int64)
        if np.any(a < 0):
            raise FieldError(
                f"negative count at region {graph.ids[int(np.argmax(a < 0))]}", field=f"state.{name}"
            )
        out.append(a)
    total = sum(out)
    bad = np.flatnonzero(total != graph.population)
    if len(bad):
        i = int(bad[0])
        raise FieldError(
            f"s+e+i+r{'+h' if len(out) == 5 else ''} of region {graph.ids[i]} is {total[i]}, "
            f"not its population {graph.population[i]}",
            field="state",
        )
    return tuple(out)


def seeded(msg: scenario_pb2.Seed, graph: MobilityGraph) -> tuple[np.ndarray, ...]:
    if len(msg.infectious) != len(msg.region_ids) or not msg.region_ids:
        raise FieldError("seed_infections needs one infectious count per region id", field="seed_infections")
    i = np.zeros(graph.n_regions, np.int64)
    for k, p in enumerate(positions(graph, msg.region_ids, "seed_infections.region_ids")):
        v = msg.infectious[k]
        if not 0 < v <= graph.population[p]:
            raise FieldError(
                f"{v} infectious in a region of {graph.population[p]}",
                field=f"seed_infections.infectious[{k}]",
            )
        i[p] += v
    if np.any(i > graph.population):
        raise FieldError("more infectious than people in a region", field="seed_infections.infectious")
    z = np.zeros_like(i)
    return graph.population - i, z, i, z.copy()


def levels_from(values: Sequence[float]) -> tuple[float, ...]:
    return tuple(values) if values else FLUSIGHT_LEVELS


def state_to(start: tuple[np.ndarray, ...]) -> scenario_pb2.State:
    s, e, i, r = (np.asarray(a, np.int64).tolist() for a in start)
    return scenario_pb2.State(s=s, e=e, i=i, r=r)


def fit_to(fit: Fit, last_date: str) -> scenario_pb2.CalibrateResult:
    return scenario_pb2.CalibrateResult(
        r0=fit.r0,
        reporting_rate=fit.reporting_rate,
        rmse=fit.rmse,
        mae=fit.mae,
        r2=fit.r2,
        deviance_explained=fit.deviance_explained,
        window_days=fit.window_days,
        last_date=last_date,
        state=state_to(fit.start),
        reporting_rate_low=fit.rate_interval[0],
        reporting_rate_high=fit.rate_interval[1],
        reporting_rate_identifiable=fit.rate_identifiable,
        r0_low=fit.r0_interval[0],
        r0_high=fit.r0_interval[1],
    )


def result_to(
    res: Result, graph: MobilityGraph, cols: list[int], runs: int, work: int, elapsed: float
) -> scenario_pb2.ScenarioResult:
    out = scenario_pb2.ScenarioResult(
        region_ids=[graph.ids[c] for c in cols],
        quantile_levels=res.levels.tolist(),
        period_start_day=res.period_start.tolist(),
        runs=runs,
        work=work,
        elapsed_s=elapsed,
    )
    arrays = {
        "quantiles": res.quantiles[:, cols],
        "mean": res.mean[:, cols],
        "total_quantiles": res.total_quantiles,
        "peak_size": res.peak_size[cols],
        "peak_day": res.peak_day[cols],
        "samples": res.samples[:, :, cols],
        "hospital_quantiles": None if res.hospital is None else res.hospital[:, cols],
        "hospital_total_quantiles": res.hospital_total,
    }
    for field, values in arrays.items():  # packed float32 bytes, not one Python float per value
        if values is not None:
            extend_float32(out, field, values)
    return out
