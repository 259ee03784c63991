"""A forecaster's data from the user's files or from the store: series + graph → ``EpiData``.

``load_files(series=..., graph=...)`` reads both files (``series_file``, ``graph_file``);
``load_store(uri, syndrome=...)`` reads the store's surveillance counts (``healthai.surveillance``)
instead of a series file. Both return an ``EpiData`` whose ``report`` says what loading did.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

from healthai.surveillance.graph_file import graph_region_ids, read_graph
from healthai.surveillance.series_file import SeriesTable, read_series, series_from_frame
from healthai_training.epi.data import (
    DEFAULT_SPLIT,
    EpiData,
    check_split,
    validate_adjacency,
    validate_series,
)
from healthai_training.errors import TrainingInputError
from healthai_training.stores import open_existing_store

DEFAULT_SEASON = {"W": 52, "D": 365}  # periods per season when --season-length is not given


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _combine(
    table: SeriesTable,
    graph: Path,
    *,
    name: str,
    season: int | None,
    split: tuple[float, float, float],
    allow_isolated: bool,
    id_property: str | None,
    window: int,
    horizon: int,
    source: dict,
) -> EpiData:
    split = check_split(split)
    season = DEFAULT_SEASON[table.step] if season is None else int(season)
    if season < 5:
        raise TrainingInputError(f"season length must be >= 5 periods, got {season}", field="season")
    g = read_graph(graph, region_ids=table.region_ids, allow_isolated=allow_isolated, id_property=id_property)
    kept = table.report.get("negatives") == "keep"
    x = validate_series(table.values, window=window, horizon=horizon, split=split, allow_negative=kept)
    adjacency = validate_adjacency(g.adjacency, n_regions=x.shape[1])
    report = {
        **table.report,
        "negatives_kept": kept and table.report.get("negative_counts", 0) > 0,
        "graph": {**g.report, "file": str(graph), "sha256": _sha256(graph)},
        "season_length": season,
        "split": list(split),
        **source,
    }
    return EpiData(
        name=name,
        series=x,
        adjacency=adjacency,
        region_ids=table.region_ids,
        split=split,
        step=table.step,
        season=season,
        periods=tuple(str(p.date()) for p in table.periods),
        region_names=g.region_names,
        report=report,
    )


def load_files(
    *,
    series: Path | str,
    graph: Path | str,
    step: str | None = None,
    season: int | None = None,
    split: tuple[float, float, float] = DEFAULT_SPLIT,
    negatives: str = "refuse",
    allow_isolated: bool = False,
    id_property: str | None = None,
    window: int = 0,
    horizon: int = 0,
) -> EpiData:
    """Series + graph files → ``EpiData`` (``window``/``horizon``: the model's, for the length check)."""
    table = read_series(series, step=step, negatives=negatives)
    source = {"series": {"file": str(series), "sha256": _sha256(Path(series))}}
    return _combine(
        table,
        Path(graph),
        name=Path(series).stem,
        season=season,
        split=split,
        allow_isolated=allow_isolated,
        id_property=id_property,
        window=window,
        horizon=horizon,
        source=source,
    )


def load_store(
    uri: str,
    *,
    graph: Path | str,
    syndrome: str = "ili",
    week_start: str = "monday",
    step: str | None = None,
    season: int | None = None,
    split: tuple[float, float, float] = DEFAULT_SPLIT,
    negatives: str = "refuse",
    allow_isolated: bool = False,
    id_property: str | None = None,
    window: int = 0,
    horizon: int = 0,
) -> EpiData:
    """The store's surveillance counts (distinct patients per region and period) → ``EpiData``.
    Regions of the graph with no stored case at all are refused, never zero-filled."""
    from healthai.surveillance import SurveillanceCounts, place_level

    step = step or "W"
    store = open_existing_store(uri)
    today = dt.datetime.now(dt.UTC).date()
    try:
        counts = SurveillanceCounts(store)
        level = place_level(graph_region_ids(graph, id_property))  # US county FIPS ids: county counts
        frame = counts.counts(syndrome=syndrome, freq=step, completed_by=today,  # the period under way is
                              level=level, week_start=week_start)                # partial: left out
        uncounted = counts.uncounted(syndrome, level)
    finally:
        store.close()
    if frame.empty:
        raise TrainingInputError(f"{uri}: the store holds no {syndrome!r} cases in periods that have ended "
                                 f"before today ({today})", field="from_store")
    table = series_from_frame(frame, step=step, where=f"{uri} ({syndrome})", negatives=negatives)
    source = {"store": {"uri": uri, "syndrome": syndrome, "level": level, "uncounted_conditions": uncounted,
                        "last_period": frame.index[-1].date().isoformat()}}
    return _combine(
        table,
        Path(graph),
        name=f"store-{syndrome}",
        season=season,
        split=split,
        allow_isolated=allow_isolated,
        id_property=id_property,
        window=window,
        horizon=horizon,
        source=source,
    )
