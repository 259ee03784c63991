"""Read a user's region graph and line it up with the series' regions (``train forecast --graph``) or
a population file's (``healthai-client scenario --graph FILE --population FILE``).

Formats (by content / suffix):

- edge list CSV with header ``source, target[, weight]`` and no other column (a misspelt ``weight``
  is refused, not read as unweighted): undirected (an edge given both ways must carry the same
  weight); weight defaults to 1;
- square adjacency CSV whose header row holds the region ids (optionally after a leading ``region``
  column whose cells repeat the ids in the same order), or with no header at all (``n`` rows of ``n``
  numbers, the published benchmarks' ``*-adj.txt``): its regions are then named by position or by a
  region-ids file (``matrix_file``);
- GeoJSON (``.geojson`` / ``.json``) FeatureCollection of Polygon / MultiPolygon features; the id is
  ``properties.<id_property>`` (default: ``id``, ``region``, ``code``, else the feature ``id``) and the
  optional display name ``properties.name``. Two regions are neighbours when their boundaries share a
  vertex (queen contiguity on coordinates rounded to 6 decimals — about 0.1 m in degrees — which holds
  for topologically clean boundaries such as Census or Natural Earth files; a border where one polygon
  has a vertex and the other none, a T-junction, is not found: an edge list states such borders);
- a served forecaster's ``graph.json`` (``region_ids`` and a CSR ``indptr, indices, weights``), so a
  model's graph trains the next one.

Or a built-in graph by name (``us-counties``, ``us-states``: ``builtin_graphs``), cut down to the
series' regions.

Regions present in one file but not the other, unknown ids, duplicate edges, negative or non-finite
weights and isolated regions (no neighbour; refused unless ``allow_isolated``) stop with an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from healthai.errors import InputFileError
from healthai.surveillance.builtin_graphs import BUILTIN_GRAPHS, builtin_graph, is_builtin
from healthai.surveillance.matrix_file import column_ids, read_headerless

ID_PROPERTIES = ("id", "region", "code")


@dataclass(frozen=True)
class GraphFile:
    adjacency: np.ndarray  # [N, N] float64, symmetric, in the series' region order
    region_ids: tuple[str, ...]
    region_names: tuple[str, ...]
    report: dict


def _edge_list(frame: pd.DataFrame, path: Path, cols: dict[str, str]) -> tuple[list[str], dict]:
    weights: dict[tuple[str, str], float] = {}
    seen: set[tuple[str, str]] = set()
    ids: list[str] = []
    for i, row in enumerate(frame.itertuples(index=False), start=2):
        rec = dict(zip(frame.columns, row, strict=True))
        a, b = str(rec[cols["source"]]).strip(), str(rec[cols["target"]]).strip()
        if not a or not b:
            raise InputFileError(f"{path}: row {i}: empty source or target", field="graph")
        w_text = str(rec[cols["weight"]]).strip() if "weight" in cols else "1"
        try:
            w = float(w_text)
        except ValueError:
            w = float("nan")
        if not np.isfinite(w) or w < 0:
            raise InputFileError(
                f"{path}: row {i}: weight {w_text!r} is not a finite number >= 0", field="graph"
            )
        key = (min(a, b), max(a, b))
        if (a, b) in seen or (key in weights and weights[key] != w):
            raise InputFileError(
                f"{path}: row {i}: edge {a}–{b} is given twice (weights {weights[key]:g} and {w:g}); edges "
                "are undirected",
                field="graph",
            )
        seen.add((a, b))
        weights[key] = w
        ids.extend(x for x in (a, b) if x not in ids)
    return ids, weights


def _square(frame: pd.DataFrame, path: Path, headerless: bool = False) -> tuple[list[str], dict]:
    """A square adjacency; ``headerless``: ``frame``'s columns were named by ``matrix_file``, not a
    header row, so data start on line 1."""
    cols = [str(c).strip() for c in frame.columns]
    labelled = not headerless and (cols[0].lower() in ("region", "id", "") or cols[0].startswith("Unnamed"))
    ids = cols[1:] if labelled else cols
    line = 1 if headerless else 2  # the file line of the first row of weights
    body = frame.iloc[:, 1:] if labelled else frame
    edges = "" if headerless or len(cols) > 3 else (  # 2-3 columns: maybe an edge list's header is wrong
        f"an edge list needs the header source,target[,weight] (this file's first line is "
        f"{','.join(cols)!r}); ")
    if len(body) != len(ids) or len(set(ids)) != len(ids):
        raise InputFileError(
            f"{path}: {edges}a square adjacency needs a header of its region ids and one row per header "
            f"region ({len(ids)} distinct ids), got {len(body)} rows",
            field="graph",
        )
    if labelled:
        row_ids = [str(v).strip() for v in frame.iloc[:, 0]]
        if row_ids != ids:
            i = next(k for k, (r, c) in enumerate(zip(row_ids, ids, strict=True)) if r != c)
            raise InputFileError(
                f"{path}: row {i + 2} is labelled {row_ids[i]!r} but column {i + 1} is {ids[i]!r}; rows must "
                "follow the header order",
                field="graph",
            )
    mat = pd.DataFrame(body).apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(mat) | (mat < 0)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise InputFileError(
            f"{path}: {edges + 'read as a square adjacency, ' if edges and np.isnan(mat[r, c]) else ''}"
            f"row {r + line}, column {ids[c]!r}: "
            f"{body.iloc[r, c]!r} is not a weight >= 0",
            field="graph",
        )
    if not np.allclose(mat, mat.T):
        r, c = np.argwhere(~np.isclose(mat, mat.T))[0]
        raise InputFileError(
            f"{path}: not symmetric: {ids[r]}→{ids[c]} is {mat[r, c]:g} but "
            f"{ids[c]}→{ids[r]} is {mat[c, r]:g}",
            field="graph",
        )
    weights = {(ids[r], ids[c]): float(mat[r, c]) for r, c in zip(*np.nonzero(mat), strict=True) if r <= c}
    return ids, weights


def _rings(geometry: dict[str, Any]) -> list[list]:
    kind, coords = geometry.get("type"), geometry.get("coordinates")
    if kind == "Polygon":
        return list(coords)
    if kind == "MultiPolygon":
        return [ring for poly in coords for ring in poly]
    raise ValueError(f"geometry type {kind!r} (need Polygon or MultiPolygon)")


def _json_graph(path: Path, id_property: str | None) -> tuple[list[str], dict, list[str], str]:
    """A GeoJSON FeatureCollection (neighbours computed) or a served forecaster's graph.json."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputFileError(f"{path}: not JSON ({exc})", field="graph") from exc
    if isinstance(doc, dict) and "region_ids" in doc and "indptr" in doc:
        return (*_model_graph(path, doc), "graph.json")
    features = doc.get("features") if isinstance(doc, dict) else None
    if not isinstance(features, list):
        raise InputFileError(f"{path}: neither a GeoJSON FeatureCollection (no 'features' list) nor a "
                             "served forecaster's graph.json ('region_ids', 'indptr')", field="graph")
    ids, names, vertex_owner = [], [], {}
    weights: dict[tuple[str, str], float] = {}
    for k, feat in enumerate(features):
        props = feat.get("properties") or {}
        keys = (id_property,) if id_property else ID_PROPERTIES
        rid = next((props[p] for p in keys if props.get(p) not in (None, "")), None)
        rid = feat.get("id") if rid is None and not id_property else rid
        if rid in (None, ""):
            raise InputFileError(
                f"{path}: features[{k}] has no region id (properties {list(keys)})", field="graph"
            )
        rid = str(rid)
        if rid in ids:
            raise InputFileError(f"{path}: features[{k}]: region {rid!r} appears twice", field="graph")
        try:
            rings = _rings(feat.get("geometry") or {})
        except ValueError as exc:
            raise InputFileError(f"{path}: features[{k}] ({rid}): {exc}", field="graph") from exc
        ids.append(rid)
        names.append(str(props.get("name", "")))
        weights[(rid, rid)] = 1.0
        for ring in rings:
            for x, y, *_ in ring:
                vertex = (round(float(x), VERTEX_DECIMALS), round(float(y), VERTEX_DECIMALS))
                for other in vertex_owner.setdefault(vertex, set()):
                    if other != rid:
                        weights[(min(rid, other), max(rid, other))] = 1.0
                vertex_owner[vertex].add(rid)
    return ids, weights, names, "geojson"


VERTEX_DECIMALS = 6  # GeoJSON vertices that round alike are one (about 0.1 m in degrees)


def _model_graph(path: Path, doc: dict) -> tuple[list[str], dict, list[str]]:
    """A served forecaster's ``graph.json`` (CSR: ``indptr``, ``indices``, ``weights``), so a model's
    graph trains the next one."""
    try:
        ids = [str(r) for r in doc["region_ids"]]
        indptr, indices = np.asarray(doc["indptr"], np.int64), np.asarray(doc["indices"], np.int64)
        values = np.asarray(doc.get("weights") or np.ones(len(indices)), np.float64)
        ok = (len(indptr) == len(ids) + 1 and indptr[0] == 0 and indptr[-1] == len(indices) == len(values)
              and np.all(np.diff(indptr) >= 0) and (len(indices) == 0 or 0 <= indices.min() <= indices.max()
                                                    < len(ids)))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputFileError(f"{path}: a graph.json needs region_ids, indptr, indices ({exc})",
                             field="graph") from exc
    if not ok:
        raise InputFileError(f"{path}: graph.json's indptr / indices do not describe {len(ids)} regions",
                             field="graph")
    weights = {}
    for i in range(len(ids)):
        for k in range(indptr[i], indptr[i + 1]):
            a, b = ids[i], ids[indices[k]]
            weights[(min(a, b), max(a, b))] = float(values[k])
    names = doc.get("region_names") if isinstance(doc.get("region_names"), list) else []
    return ids, weights, [str(n) for n in names] if len(names) == len(ids) else [""] * len(ids)


def graph_region_ids(
    path: Path | str, id_property: str | None = None, matrix_ids: tuple[str, ...] | None = None
) -> list[str]:
    """The region ids of a graph file, in file order (the file fully checked)."""
    if is_builtin(path):
        raise InputFileError(f"{path}: a built-in graph spans the country and names no regions of its own; "
                             "here the graph must list your regions: give a graph file", field="graph")
    return _parse(Path(path), id_property, matrix_ids)[0]


def _parse(
    path: Path, id_property: str | None, matrix_ids: tuple[str, ...] | None = None
) -> tuple[list[str], dict, list[str], str]:
    """(ids, weights, names, format) of a graph file; ``matrix_ids`` name a headerless square's rows."""
    if not path.is_file():
        raise InputFileError(f"{path}: no such file", field="graph")
    if path.suffix.lower() in (".geojson", ".json"):
        return _json_graph(path, id_property)
    cells = read_headerless(path, "graph")
    if cells is not None and cells.shape[0] == cells.shape[1]:  # n × n numbers: no id header
        cells.columns = list(column_ids(cells.shape[1], matrix_ids, path, "graph"))
        return *_square(cells, path, headerless=True), [], "headerless adjacency"
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, OSError) as exc:
        raise InputFileError(f"{path}: cannot read as CSV ({exc})", field="graph") from exc
    lower = {str(c).strip().lower(): c for c in frame.columns}
    if {"source", "target"} <= set(lower):
        _edge_columns(frame, path, lower)
        return *_edge_list(frame, path, lower), [], "edge_list"
    return *_square(frame, path), [], "adjacency"


EDGE_COLUMNS = ("source", "target", "weight")


def _edge_columns(frame: pd.DataFrame, path: Path, lower: dict[str, str]) -> None:
    """An edge list has no column but source, target, weight (a misspelt weight column would otherwise
    leave the graph silently unweighted); an unnamed empty one (a trailing comma) is no column."""
    extra = [c for c in lower if c not in EDGE_COLUMNS
             and not (str(lower[c]).startswith("Unnamed:") and (frame[lower[c]].str.strip() == "").all())]
    if not extra:
        return
    hint = ""
    if "weight" not in lower and (like := [c for c in extra if get_close_matches(c, ["weight"], cutoff=0.6)]):
        hint = f" (is {str(lower[like[0]]).strip()!r} the weight? name it 'weight')"
    raise InputFileError(
        f"{path}: an edge list takes the columns source, target[, weight]; also got "
        f"{[str(lower[c]).strip() for c in extra]}{hint}",
        field="graph",
    )


def read_graph(
    path: Path | str,
    *,
    region_ids: tuple[str, ...],
    allow_isolated: bool = False,
    id_property: str | None = None,
    regions_from: str = "series",
    matrix_ids: tuple[str, ...] | None = None,
    exclude: tuple[str, ...] = (),
) -> GraphFile:
    """The graph of ``path`` as an adjacency in the order of ``region_ids`` (the regions of
    ``regions_from``: the series, or a scenario's population file). A headerless square's rows are
    named ``matrix_ids`` (a region-ids file), else by position (``matrix_file.positional_ids``).
    ``exclude``: regions of the file left out with their edges (``--exclude-regions``)."""
    path = Path(path)
    builtin = is_builtin(path)
    if builtin:  # cut down to the series' regions
        ids, weights, names = builtin_graph(str(path), tuple(region_ids))
        kind = f"built-in {path} (Census 2024 county adjacency)"
    else:
        ids, weights, names, kind = _parse(path, id_property, matrix_ids)
        if exclude:
            dropped = set(exclude)
            names = [n for r, n in zip(ids, names, strict=True) if r not in dropped] if names else names
            ids = [r for r in ids if r not in dropped]
            weights = {pair: w for pair, w in weights.items() if not dropped & set(pair)}
    only_graph = [] if builtin else [r for r in ids if r not in set(region_ids)]
    only_series = [r for r in region_ids if r not in set(ids)]
    if only_graph or only_series:
        hint = (" (the graph has no id header: its rows are named by position, r01 ...; name them with "
                "--region-ids FILE)" if kind == "headerless adjacency" and matrix_ids is None else "")
        if builtin:
            codes = ("2-digit state FIPS codes (25), USPS codes (MA) or ISO 3166-2 codes (US-MA)"
                     if str(path) == BUILTIN_GRAPHS[1] else "5-digit county FIPS codes (25017)")
            hint = (f" ({path} knows {codes}; a national total is no region: drop it, e.g. "
                    "--exclude-regions US)")
        elif kind == "edge_list" and only_series and not only_graph:
            hint = (f" (an edge list names a region without neighbours by a row to itself, e.g. "
                    f"{only_series[0]},{only_series[0]}, with --allow-isolated; or --exclude-regions)")
        raise InputFileError(
            f"{path}: regions differ: {len(only_series)} in the {regions_from} but not the graph "
            f"{only_series[:5]}, {len(only_graph)} in the graph but not the {regions_from} {only_graph[:5]}"
            + hint,
            field="graph",
        )
    col = {r: i for i, r in enumerate(region_ids)}
    adj = np.zeros((len(region_ids), len(region_ids)))
    for (a, b), w in weights.items():
        adj[col[a], col[b]] = adj[col[b], col[a]] = w
    off = adj - np.diag(np.diag(adj))
    isolated = [region_ids[i] for i in np.flatnonzero(off.sum(axis=1) == 0)]
    if isolated and not allow_isolated:
        raise InputFileError(
            f"{path}: {len(isolated)} isolated regions (no neighbour): {isolated[:5]}; they would learn from "
            "their own history only. Pass --allow-isolated to train anyway"
            + (" (GeoJSON neighbours share a boundary vertex, to 6 decimals: simplified or reprojected "
               "borders may share none; an edge list CSV states the borders)" if kind == "geojson" else ""),
            field="graph",
        )
    by_id = dict(zip(ids, names, strict=False)) if names else {}
    report = {"format": kind, "edges": int((np.count_nonzero(off)) // 2), "isolated": isolated}
    return GraphFile(
        adj, tuple(region_ids), tuple(by_id.get(r, "") for r in region_ids) if names else (), report
    )
