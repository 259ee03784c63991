"""Region graphs that ship with the server, named instead of a graph file (``--graph us-states``).

Both come from the Census Bureau's 2024 County Adjacency File in ``healthai/data/graphs/us_counties``
(public domain; provenance in its README):

- ``us-counties``: counties and county equivalents (Connecticut's planning regions, Puerto Rico's
  municipios, the island areas), 5-digit FIPS ids (``25017``), named ``"Middlesex County, MA"``;
- ``us-states``: the states, DC, Puerto Rico and the island areas, 2-digit FIPS ids (``25``), USPS
  codes (``MA``) or ISO 3166-2 codes (``US-MA``, as the store counts them), named by USPS code; two
  states are neighbours when any of their counties are.

A series covers only some regions (one state's counties, a few states): the graph is cut down to the
series' regions. A series region the graph does not know (``US``, a national total) is refused. From
the store (``train forecast --from-store``) the regions are the store's own at the graph's level
(``store_level``): county FIPS codes for ``us-counties``, ISO 3166-2 codes for ``us-states``.
"""

from __future__ import annotations

import csv
import functools
from pathlib import Path

BUILTIN_GRAPHS = ("us-counties", "us-states")
ADJACENCY_FILE = Path(__file__).resolve().parents[1] / "data/graphs/us_counties/county_adjacency2024.txt"


def is_builtin(graph: Path | str) -> bool:
    """``graph`` names a built-in graph (and no file of that name exists)."""
    return str(graph) in BUILTIN_GRAPHS and not Path(graph).exists()


@functools.lru_cache(maxsize=2)
def _borders(name: str) -> tuple[dict[str, str], frozenset[tuple[str, str]]]:
    """(name by id, undirected edges (a < b)) of a built-in graph."""
    states = name == "us-states"
    names: dict[str, str] = {}
    edges: set[tuple[str, str]] = set()
    with ADJACENCY_FILE.open(encoding="utf-8", newline="") as fh:
        rows = csv.reader(fh, delimiter="|")
        next(rows)  # County Name | County GEOID | Neighbor Name | Neighbor GEOID
        for row in rows:
            if len(row) < 4:
                continue
            pair = []
            for county, geoid in ((row[0], row[1]), (row[2], row[3])):
                rid = geoid[:2] if states else geoid
                names[rid] = county.rsplit(", ", 1)[-1] if states else county
                pair.append(rid)
            a, b = pair
            if a != b:
                edges.add((min(a, b), max(a, b)))
    return names, frozenset(edges)


def store_level(name: str) -> str:
    """The level the store counts a built-in graph's regions at (``SurveillanceCounts.counts``)."""
    return "county" if name == BUILTIN_GRAPHS[0] else "region"


def _aliases(name: str, names: dict[str, str]) -> dict[str, str]:
    """State FIPS code by USPS code (``MA``) and by ISO 3166-2 code (``US-MA``); none for counties."""
    if name != BUILTIN_GRAPHS[1]:
        return {}
    return {alias: fips for fips, usps in names.items() for alias in (usps, f"US-{usps}")}


def known_regions(name: str, region_ids: tuple[str, ...]) -> list[str]:
    """Those of ``region_ids`` that built-in graph ``name`` knows, in their order."""
    names, _ = _borders(name)
    alias = _aliases(name, names)
    return [r for r in region_ids if r in names or r in alias]


def builtin_graph(name: str, region_ids: tuple[str, ...]) -> tuple[list[str], dict, list[str]]:
    """(ids, weights, names) of built-in graph ``name`` cut down to ``region_ids`` (which may use USPS
    or ISO 3166-2 codes for states); ids the graph does not know are left for the caller to report."""
    names, edges = _borders(name)
    alias = _aliases(name, names)
    known = {r: r if r in names else alias[r] for r in region_ids if r in names or r in alias}
    by_fips = {fips: r for r, fips in known.items()}
    weights = {(r, r): 1.0 for r in known}
    for a, b in edges:
        if a in by_fips and b in by_fips:
            weights[(by_fips[a], by_fips[b])] = 1.0
    ids = list(known)
    return ids, weights, [names[known[r]] for r in ids]
