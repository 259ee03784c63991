"""Region graphs for scenarios: the US county graph from Census files, or a caller's own graph.

Mobility coupling (gravity): among adjacent regions, region i spends a share of its away contacts
with j proportional to N_j / d_ij^2 (d: great-circle distance between internal points, floored at
10 km); the away contacts are a fraction ``mobility`` of all contacts. So the weights of row i sum
to ``mobility`` (0 for isolated regions), as ``healthai.ops.metapop`` requires.
"""

from __future__ import annotations

import csv
import functools
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from healthai.errors import InvalidInput, NotFound
from healthai.ops.metapop import MobilityGraph
from healthai.scenario.errors import FieldError

log = logging.getLogger(__name__)

COUNTY_GRAPH = "us_counties"
# FIPS state codes of the 50 states and DC (island areas and Puerto Rico are left out)
_STATES = {f"{c:02d}" for c in range(1, 57)} - {"03", "07", "14", "43", "52"}
STATE_USPS = {
    "01": "AL",
    "02": "AK",
    "04": "AZ",
    "05": "AR",
    "06": "CA",
    "08": "CO",
    "09": "CT",
    "10": "DE",
    "11": "DC",
    "12": "FL",
    "13": "GA",
    "15": "HI",
    "16": "ID",
    "17": "IL",
    "18": "IN",
    "19": "IA",
    "20": "KS",
    "21": "KY",
    "22": "LA",
    "23": "ME",
    "24": "MD",
    "25": "MA",
    "26": "MI",
    "27": "MN",
    "28": "MS",
    "29": "MO",
    "30": "MT",
    "31": "NE",
    "32": "NV",
    "33": "NH",
    "34": "NJ",
    "35": "NM",
    "36": "NY",
    "37": "NC",
    "38": "ND",
    "39": "OH",
    "40": "OK",
    "41": "OR",
    "42": "PA",
    "44": "RI",
    "45": "SC",
    "46": "SD",
    "47": "TN",
    "48": "TX",
    "49": "UT",
    "50": "VT",
    "51": "VA",
    "53": "WA",
    "54": "WV",
    "55": "WI",
    "56": "WY",
}


def haversine_km(lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray) -> np.ndarray:
    p1, p2 = np.radians(lat1), np.radians(lat2)
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(np.radians(lon2 - lon1) / 2) ** 2
    return 2 * 6371.0 * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def gravity_graph(
    ids: Sequence[str],
    population: np.ndarray,
    lat: np.ndarray,
    lon: np.ndarray,
    edges: np.ndarray,
    *,
    mobility: float = 0.1,
) -> MobilityGraph:
    """CSR mobility graph from undirected or directed ``edges`` [m, 2] (region positions)."""
    n = len(ids)
    if not 0.0 <= mobility <= 1.0:
        raise FieldError(f"mobility must be in [0, 1], got {mobility}", field="mobility")
    e = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    e = e[e[:, 0] != e[:, 1]]
    e = np.unique(np.concatenate([e, e[:, ::-1]]), axis=0)  # symmetric, sorted by (src, dst)
    src, dst = e[:, 0], e[:, 1]
    d = np.maximum(haversine_km(lat[src], lon[src], lat[dst], lon[dst]), 10.0)
    g = population[dst] / d**2
    row = np.bincount(src, weights=g, minlength=n)
    w = mobility * g / row[src]
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(src, minlength=n), out=indptr[1:])
    return MobilityGraph(
        indptr,
        np.ascontiguousarray(dst),
        np.ascontiguousarray(w),
        np.ascontiguousarray(population, dtype=np.int64),
        tuple(ids),
    )


def explicit_graph(
    ids: Sequence[str], population: Sequence[int], edges: Sequence[tuple[int, int, float]], *, mobility: float
) -> MobilityGraph:
    """A caller's graph: ``edges`` (src, dst, weight) with weights scaled so each row sums to ``mobility``."""
    n = len(ids)
    if n == 0:
        raise FieldError("graph has no regions", field="graph.regions")
    if len(set(ids)) != n:
        raise FieldError("graph region ids must be unique", field="graph.regions")
    pop = np.asarray(population, dtype=np.int64)
    if pop.shape != (n,):
        raise FieldError(f"{pop.size} populations for {n} regions", field="graph.population")
    bad = np.flatnonzero((pop <= 0) | (pop > 2_000_000_000))
    if len(bad):
        i, f = int(bad[0]), f"graph.population[{bad[0]}]"
        raise InvalidInput(f"{f} (region {ids[i]}): {pop[i]} is not in [1, 2e9]", field=f)
    if not 0.0 <= mobility <= 1.0:
        raise FieldError(f"mobility must be in [0, 1], got {mobility}", field="graph.mobility")
    arr = np.asarray(edges, dtype=np.float64).reshape(-1, 3)
    for k, (s, t, w) in enumerate(arr):
        if not (0 <= s < n and 0 <= t < n and s == int(s) and t == int(t)):
            raise FieldError(
                f"edge {k} ({s}, {t}) names a region outside 0..{n - 1}", field=f"graph.edges[{k}]"
            )
        if not (np.isfinite(w) and w > 0) or s == t:
            raise FieldError(
                f"edge {k} needs a weight > 0 between two different regions", field=f"graph.edges[{k}]"
            )
    src, dst = arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64)
    order = np.lexsort((dst, src))
    src, dst, w = src[order], dst[order], arr[order, 2]
    row = np.bincount(src, weights=w, minlength=n)
    w = mobility * w / row[src] if len(w) else w
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(src, minlength=n), out=indptr[1:])
    return MobilityGraph(indptr, np.ascontiguousarray(dst), np.ascontiguousarray(w), pop, tuple(ids))


@functools.lru_cache(maxsize=4)
def county_graph(folder: Path, mobility: float = 0.1) -> MobilityGraph:
    """The 3,144 counties of the 50 states + DC (Census 2024 adjacency, 2020 population).

    Connecticut's 9 planning regions (2024 geography) have no 2020 population row; they get the
    state's 2020 total split in proportion to land area.
    """
    adj, gaz, pop_file = (
        folder / "county_adjacency2024.txt",
        folder / "2024_Gaz_counties_national.txt",
        folder / "CenPop2020_Mean_CO.txt",
    )
    for f in (adj, gaz, pop_file):
        if not f.is_file():
            raise NotFound(f"graph.name: county graph file {f.name} is missing under {folder}", field="graph")
    points: dict[str, tuple[float, float, float]] = {}
    with gaz.open(encoding="utf-8", newline="") as fh:
        rows = csv.reader(fh, delimiter="\t")
        header = [h.strip() for h in next(rows)]
        c = {h: k for k, h in enumerate(header)}
        for r in rows:
            if r[c["GEOID"]][:2] in _STATES:
                points[r[c["GEOID"]]] = (
                    float(r[c["INTPTLAT"]]),
                    float(r[c["INTPTLONG"]].strip()),
                    float(r[c["ALAND"]]),
                )
    pops: dict[str, int] = {}
    with pop_file.open(encoding="utf-8-sig", newline="") as fh:
        for r in csv.DictReader(fh):
            pops[r["STATEFP"] + r["COUNTYFP"]] = int(r["POPULATION"])
    ct_total = sum(v for k, v in pops.items() if k.startswith("09"))
    ct = [g for g in points if g.startswith("09") and g not in pops]
    ct_land = sum(points[g][2] for g in ct)
    for g in ct:
        pops[g] = max(1, round(ct_total * points[g][2] / ct_land))
    ids = sorted(g for g in points if g in pops)
    pos = {g: k for k, g in enumerate(ids)}
    edges = []
    with adj.open(encoding="utf-8", newline="") as fh:
        rows = csv.reader(fh, delimiter="|")
        next(rows)
        for r in rows:
            a, b = r[1], r[3]
            if a in pos and b in pos and a != b:
                edges.append((pos[a], pos[b]))
    lat = np.array([points[g][0] for g in ids])
    lon = np.array([points[g][1] for g in ids])
    population = np.array([pops[g] for g in ids], dtype=np.int64)
    log.info(
        "county graph: %d counties, %d directed edges, population %d", len(ids), len(edges), population.sum()
    )
    return gravity_graph(ids, population, lat, lon, np.array(edges, np.int64), mobility=mobility)


def state_of(region_id: str) -> str:
    """ISO 3166-2 code of a county FIPS id (the surveillance store's region codes), e.g. US-MA."""
    return "US-" + STATE_USPS.get(region_id[:2], "??")
