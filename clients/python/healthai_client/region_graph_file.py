"""A what-if scenario on the caller's own regions: the graph file `train forecast --graph` takes (edge
list CSV, square adjacency CSV or GeoJSON; :mod:`healthai.surveillance.graph_file`) plus a population
file (CSV ``region, population``), as the ``ScenarioGraph`` the server simulates.

Every undirected neighbour pair becomes two directed edges with the file's weight (1 by default); the
server scales each region's outgoing weights to the mobility fraction. Regions of one file missing
from the other stop with an error naming them; a region without neighbours only mixes with itself.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np


def read_populations(path: Path | str) -> dict[str, int]:
    """``region, population`` rows (header required) → {region: population}, in file order."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"population file {str(path)!r}: no such file")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        fields = {(c or "").strip().lower(): c for c in reader.fieldnames or []}
        if not {"region", "population"} <= set(fields):
            raise ValueError(f"{path}: needs a header with columns region, population; "
                             f"got {reader.fieldnames}")
        out: dict[str, int] = {}
        for line, row in enumerate(reader, start=2):
            region = (row[fields["region"]] or "").strip()
            text = (row[fields["population"]] or "").strip()
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"{path}: row {line}, region {region!r}: population {text!r} is not a "
                                 "number") from None
            if not region or region in out:
                raise ValueError(f"{path}: row {line}: region {region!r} is empty or repeated")
            if not (value >= 1 and value == int(value)):
                raise ValueError(f"{path}: row {line}, region {region!r}: population must be a whole number "
                                 f">= 1, got {text!r}")
            out[region] = int(value)
    if not out:
        raise ValueError(f"{path}: no regions")
    return out


def read_scenario_graph(graph: Path | str, population: Path | str, *, id_property: str | None = None,
                        region_ids: Path | str | None = None) -> dict[str, Any]:
    """{"region_ids", "population", "edges": [(src, dst, weight)]} for ``Client.scenario/calibrate``;
    ``region_ids``: a file naming a headerless adjacency's rows (else they are ``r01`` ...)."""
    from healthai.surveillance.graph_file import read_graph
    from healthai.surveillance.matrix_file import read_region_ids

    people = read_populations(population)
    ids = tuple(people)
    named = read_region_ids(region_ids)[0] if region_ids is not None else None
    adjacency = read_graph(graph, region_ids=ids, allow_isolated=True, id_property=id_property,
                           regions_from=f"population file {Path(population).name}",
                           matrix_ids=named).adjacency
    off = adjacency - np.diag(np.diag(adjacency))
    src, dst = np.nonzero(off)  # both directions of every neighbour pair
    return {"region_ids": list(ids), "population": [people[r] for r in ids],
            "edges": [(int(s), int(d), float(off[s, d])) for s, d in zip(src, dst, strict=True)]}


def scenario_graph_arg(graph: str, population: Path | None,
                       region_ids: Path | None = None) -> str | dict[str, Any]:
    """``--graph``: a named graph, or with ``--population`` a graph file."""
    if population is None:
        if Path(graph).is_file():
            raise ValueError(f"--graph {graph}: a graph file needs --population FILE (region, population)")
        if region_ids is not None:
            raise ValueError("--region-ids names a headerless --graph file's rows: it needs --population")
        return graph
    return read_scenario_graph(graph, population, region_ids=region_ids)
