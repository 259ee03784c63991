"""A forecaster's data from the user's files or from the store: series + graph → ``EpiData``.

``load_files(series=..., graph=...)`` reads both files (``series_file``, ``graph_file``);
``load_store(uri, syndrome=...)`` reads the store's surveillance counts (``healthai.surveillance``)
instead of a series file. Both return an ``EpiData`` whose ``report`` says what loading did.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import sys
from pathlib import Path

from healthai.errors import InputFileError
from healthai.surveillance.builtin_graphs import ADJACENCY_FILE, is_builtin, known_regions, store_level
from healthai.surveillance.graph_file import graph_region_ids, read_graph
from healthai.surveillance.matrix_file import read_region_ids
from healthai.surveillance.series_file import SeriesTable, read_series, series_from_frame, without_regions
from healthai_training.epi.data import (
    DEFAULT_SPLIT,
    EpiData,
    check_split,
    validate_adjacency,
    validate_series,
)
from healthai_training.errors import TrainingInputError
from healthai_training.stores import open_existing_store

DEFAULT_SEASON = {"W": 52, "D": 364}  # periods per season when --season-length is not given; 364 days
# = 52 weeks: a season back is the same weekday, so day-of-week reporting patterns line up


def _sha256(path: Path) -> str:
    """Of the file, or of the shipped file a built-in graph is read from."""
    return hashlib.sha256(Path(ADJACENCY_FILE if is_builtin(path) else path).read_bytes()).hexdigest()


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
    named: tuple[tuple[str, ...], tuple[str, ...]] | None = None,
    exclude: tuple[str, ...] = (),
) -> EpiData:
    """``named``: (ids, names) of a region-ids file (headerless matrices' columns); ``exclude``: regions
    left out of the graph too."""
    split = check_split(split)
    season = DEFAULT_SEASON[table.step] if season is None else int(season)
    _check_season(season)
    g = read_graph(graph, region_ids=table.region_ids, allow_isolated=allow_isolated, id_property=id_property,
                   matrix_ids=named[0] if named else None, exclude=exclude)
    if named and table.report.get("layout") != "matrix" and g.report["format"] != "headerless adjacency":
        raise TrainingInputError("--region-ids names the columns of a headerless matrix, but the series and "
                                 "the graph both name their regions", field="region_ids")
    region_names = g.region_names
    if named and any(named[1]) and not any(region_names):
        by_id = dict(zip(*named, strict=True))
        region_names = tuple(by_id.get(r, "") for r in table.region_ids)
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
        region_names=region_names,
        report=report,
        imputed=table.imputed if table.imputed is not None and table.imputed.any() else None,
    )


def _check_season(season: int) -> None:
    """The season must be longer than the horizon plus 2: the stack's seasonal members and the
    baselines read the periods one season before each target (± 2), which must have happened by the
    forecast origin (``max_seasonal_steps``, as the seasonal mode checks it)."""
    from healthai_training.forecast.config import ForecastConfig
    from healthai_training.forecast.model import SEASON_HALF_WIDTH, max_seasonal_steps

    steps = ForecastConfig.steps
    if max_seasonal_steps(season) < steps:
        raise TrainingInputError(
            f"season length must be >= {steps + SEASON_HALF_WIDTH} periods (the {steps}-period horizon + "
            f"{SEASON_HALF_WIDTH}: the seasonal members read the same periods a season before each target, "
            f"which must be observed by the forecast origin), got {season}. A weekly pattern in daily "
            "counts is learnt from the input window: keep the default season (364 days)", field="season")


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
    series_start: str | None = None,
    region_ids: Path | str | None = None,
    missing: str = "refuse",
    columns: tuple[str, ...] | None = None,
    target: str | None = None,
    exclude: tuple[str, ...] = (),
) -> EpiData:
    """Series + graph files → ``EpiData`` (``window``/``horizon``: the model's, for the length check).
    ``series_start``: the series is a headerless matrix whose first row is this period; ``region_ids``: a
    file naming a headerless matrix's columns (series and graph), else they are named by position."""
    named = read_region_ids(region_ids) if region_ids is not None else None
    table = read_series(series, step=step, negatives=negatives, start=series_start,
                        region_ids=named[0] if named else None, missing=missing, columns=columns,
                        target=target, exclude=exclude)
    source = {"series": {"file": str(series), "sha256": _sha256(Path(series))}}
    if named:
        source["region_ids"] = {"file": str(region_ids), "sha256": _sha256(Path(region_ids))}
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
        named=named,
        exclude=exclude,
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
    private: dict | None = None,
    region_ids: Path | str | None = None,
    exclude: tuple[str, ...] = (),
    syndromes: Path | str | None = None,
) -> EpiData:
    """The store's surveillance counts (distinct patients per region and period) → ``EpiData``.

    The model's regions are the graph file's; with a built-in graph (``us-counties``, ``us-states``),
    those of ``region_ids`` (a file, one id per line) or else every region the store counted a case
    in (at the graph's level) that the graph knows. ``exclude`` leaves some out. A model region with
    no stored case at all is refused, never zero-filled; cases stored for other regions (patients
    living elsewhere) are left out and counted in ``report["store"]["outside_regions"]``.
    ``private`` (``{"epsilon": ..., "start": ..., "max_cases_per_patient": ...}``): the counts are
    released under epsilon-DP per patient first (``healthai.surveillance.release``: every model region
    from ``start`` to the last period that has ended, recorded in the store's privacy ledger), and the
    model is trained on the noisy counts, negative ones kept (clamping them at 0 would bias every
    small count upwards); ``report["store"]["privacy"]`` is the release's card. Its regions must not
    come from the data (which regions had a case is itself what the release protects): with a built-in
    graph, ``region_ids`` is then required. ``syndromes``: a TOML file of the agency's own syndromes
    (``healthai.surveillance.syndrome_file``); the one used is recorded in the report."""
    from healthai.errors import InvalidInput
    from healthai.surveillance import SurveillanceCounts, place_level
    from healthai.surveillance.syndrome_file import load_syndromes

    step = step or "W"
    builtin = is_builtin(graph)
    named = read_region_ids(region_ids) if region_ids is not None else None
    if builtin and private is not None and named is None:
        raise TrainingInputError(f"--count-epsilon with --graph {graph} needs --region-ids FILE: the regions "
                                 "the store has cases in are what the release protects", field="region_ids")
    regions = None if builtin else graph_region_ids(graph, id_property, named[0] if named else None)
    if builtin and named is not None:
        regions = list(named[0])
    if regions is not None:
        regions = _excluding(regions, exclude, str(graph), "the graph")
    try:
        definitions = load_syndromes(syndromes)
    except InvalidInput as e:
        raise TrainingInputError(e.message, field="syndromes") from e
    if syndrome not in definitions:
        raise TrainingInputError(f"--syndrome {syndrome!r} is not one of {', '.join(sorted(definitions))}"
                                 + ("" if syndromes else " (your own: --syndromes FILE)"), field="syndrome")
    store = open_existing_store(uri)  # after every check that needs no data
    today = dt.datetime.now(dt.UTC).date()
    release = None
    try:
        counts = SurveillanceCounts(store, syndromes=definitions)
        level = store_level(str(graph)) if builtin else place_level(regions)  # county FIPS: county counts
        if private is not None:
            release = _private_release(store, counts, private, regions=regions, syndrome=syndrome, step=step,
                                       level=level, week_start=week_start, today=today)
            frame = release.frame
        else:
            frame = counts.counts(syndrome=syndrome, freq=step, completed_by=today,  # the period under way
                                  level=level, week_start=week_start)                # is partial: left out
        uncounted = counts.uncounted(syndrome, level)
    finally:
        store.close()
    if frame.empty:
        raise TrainingInputError(f"{uri}: the store holds no {syndrome!r} cases in periods that have ended "
                                 f"before today ({today})", field="from_store")
    if regions is None:  # a built-in graph: the regions the store counted that the graph knows
        known = known_regions(str(graph), tuple(frame.columns))
        if not known:
            raise TrainingInputError(f"{uri} ({syndrome}): none of the store's regions "
                                     f"{list(frame.columns[:5])} is in {graph}", field="graph")
        regions = _excluding(known, exclude, f"{uri} ({syndrome})", f"the store's regions in {graph}")
    frame, outside = _model_regions(frame, regions, where=f"{uri} ({syndrome})")
    if release is not None:
        negatives = "keep"  # the noise is unbiased only with its negative values
    table = series_from_frame(frame, step=step, where=f"{uri} ({syndrome})", negatives=negatives)
    if exclude:
        table.report["excluded_regions"] = list(exclude)
    chosen = definitions[syndrome]
    source = {"store": {"uri": uri, "syndrome": syndrome, "level": level, "uncounted_conditions": uncounted,
                        "syndrome_definition": {"description": chosen.description,
                                                "icd10": list(chosen.icd10_prefixes),
                                                "snomed": sorted(chosen.snomed_codes),
                                                "lab_loinc": sorted(chosen.lab_loincs)},
                        "outside_regions": outside, "last_period": frame.index[-1].date().isoformat(),
                        **({"privacy": release.card()} if release is not None else {})}}
    if outside["cases"]:
        n = outside["regions"]
        print(f"store: {outside['cases']} {syndrome} cases in {n} region{'s' * (n != 1)} outside the model's "
              f"{len(regions)} left out (e.g. {', '.join(outside['examples'])})", file=sys.stderr)
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
        named=None if builtin else named,
        exclude=exclude,
    )


def _excluding(regions: list[str], exclude: tuple[str, ...], where: str, of: str) -> list[str]:
    """``series_file.without_regions``, refusing as the trainer refuses (``TrainingInputError``)."""
    try:
        return without_regions(regions, exclude, where, of)
    except InputFileError as e:
        raise TrainingInputError(e.message, field=e.field) from None


def _model_regions(frame, regions: list[str], *, where: str):
    """The store's counts cut to the model's ``regions`` (in that order), and what was left out:
    ``{"regions", "cases", "examples"}``. A model region without a stored case is refused."""
    absent = [r for r in regions if r not in frame.columns]
    if absent:
        raise TrainingInputError(
            f"{where}: {len(absent)} of the model's {len(regions)} regions have no stored case at all "
            f"{absent[:5]}; a region is never filled with zeros: ingest its records, or leave it out with "
            "--exclude-regions", field="graph")
    others = [c for c in frame.columns if c not in set(regions)]
    outside = {"regions": len(others), "cases": int(frame[others].to_numpy().sum()) if others else 0,
               "examples": [str(c) for c in others[:3]]}
    return frame[regions], outside


def _private_release(store, counts, private: dict, *, regions: list[str], syndrome: str, step: str,
                     level: str, week_start: str, today: dt.date):
    """The counts of every graph region from ``private["start"]`` to ``private["end"]`` (default: the last
    period that ended before ``today``: fixed by the date, not the data) under epsilon-DP per patient,
    recorded in the store's ledger."""
    from healthai.errors import InvalidInput
    from healthai.surveillance.counts import week_day
    from healthai.surveillance.release import DEFAULT_MAX_CASES_PER_PATIENT, private_counts, record

    if private.get("start") is None:
        raise TrainingInputError("--count-start DATE is required with --count-epsilon: a first period taken "
                                 "from the data would show when the first case was", field="count_start")
    days_into_week = (today.weekday() - week_day(week_start)) % 7 if step == "W" else 0
    end = private.get("end") or today - dt.timedelta(days=days_into_week + 1)  # default: the last ended
    bound = private.get("max_cases_per_patient")
    bound = DEFAULT_MAX_CASES_PER_PATIENT if bound is None else bound
    try:
        release = private_counts(counts, epsilon=private["epsilon"], start=private["start"], end=end,
                                 regions=regions, syndrome=syndrome, freq=step, level=level,
                                 week_start=week_start, completed_by=today, max_cases_per_patient=bound,
                                 nonnegative=False)  # unbiased: clamping would lift every small count
    except InvalidInput as e:
        flags = {"epsilon": "count_epsilon", "start": "count_start", "end": "count_end"}
        field = flags.get(e.field or "", e.field)
        raise TrainingInputError(e.message, field=field or "count_epsilon") from e
    record(store, release, {"syndrome": syndrome, "step": step, "level": level, "week_start": week_start,
                            "by_age": False, "complete_periods": True,
                            "use": "healthai train forecast --from-store"})
    return release
