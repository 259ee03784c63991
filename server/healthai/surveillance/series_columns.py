"""Which columns of a long series file hold the region, the period and the count.

- ``region, period, count`` (ours): nothing else is allowed, so a misspelt extra column is not
  silently dropped.
- ``columns=(REGION, PERIOD, COUNT)`` (``--columns``): a file's own names; its other columns are
  ignored and listed in the report.
- Hubverse time-series target data (the layout forecast hubs such as FluSight publish their truth
  in): ``location``, ``target_end_date`` (or ``date``) and ``observation``, optionally ``target`` and
  ``as_of``. Detected by those names.

Either of the last two may carry a ``target`` column (several series in one file: one is chosen with
``target``, refused when there are several and none is chosen) and an ``as_of`` column (data
versions: each region × period keeps its latest version, the others are counted in the report).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

from healthai.errors import InputFileError

OURS = ("region", "period", "count")
HUBVERSE_DATES = ("target_end_date", "date")


def hubverse_date(names) -> str | None:
    """The date column of hubverse time-series target data with these (lower-case) column names, or
    None when they are not that layout."""
    if not {"location", "observation"} <= set(names):
        return None
    return next((d for d in HUBVERSE_DATES if d in names), None)


def long_columns(
    frame: pd.DataFrame, path: Path, columns: tuple[str, ...] | None, target: str | None
) -> tuple[pd.DataFrame, str, dict] | None:
    """(frame with exactly ``region, period, count``, its original row positions as index; the layout
    name; what was chosen) or None when ``frame`` is not a long file (a wide one, say)."""
    lower = {str(c).strip().lower(): c for c in frame.columns}
    if columns is not None:
        if len(columns) != 3 or len({c.lower() for c in columns}) != 3:
            raise InputFileError(
                f"columns takes three distinct names REGION,PERIOD,COUNT, got {list(columns)}",
                field="columns",
            )
        absent = [c for c in columns if c.strip().lower() not in lower]
        if absent:
            raise InputFileError(f"{path}: no column {absent[0]!r} (--columns); the file has "
                                 f"{[str(c) for c in frame.columns][:8]}", field="columns")
        pick, layout = tuple(c.strip().lower() for c in columns), "long"
    elif set(OURS) <= set(lower):
        extra = set(lower) - set(OURS)
        if extra:
            raise InputFileError(
                f"{path}: long format takes region, period, count; also got {sorted(extra)} (--columns "
                "REGION,PERIOD,COUNT names the three and ignores the rest)",
                field="series",
            )
        pick, layout = OURS, "long"
    elif date := hubverse_date(lower):
        pick, layout = ("location", date, "observation"), "hubverse time series"
    else:
        return None
    report: dict = {}
    frame = _one_target(frame, path, lower, pick, target, report)
    frame = _latest_version(frame, path, lower, pick, report)
    ignored = [str(lower[c]) for c in lower if c not in pick and c not in ("target", "as_of")]
    if ignored:
        report["ignored_columns"] = ignored
    out = pd.DataFrame({name: frame[lower[c]] for name, c in zip(OURS, pick, strict=True)}, index=frame.index)
    if layout != "long" or columns is not None:
        report["columns"] = dict(zip(OURS, (str(lower[c]) for c in pick), strict=True))
    return out, layout, report


def _one_target(frame: pd.DataFrame, path: Path, lower: dict, pick: tuple[str, ...], target: str | None,
                report: dict) -> pd.DataFrame:
    if "target" not in lower or "target" in pick:
        if target is not None:
            raise InputFileError(f"{path}: --target chooses among a 'target' column's series, but the file "
                                 "has none", field="target")
        return frame
    values = frame[lower["target"]].astype(str).str.strip()
    targets = sorted(values.unique())
    if target is None and len(targets) > 1:
        raise InputFileError(f"{path}: the file holds {len(targets)} targets {targets[:6]}: choose one with "
                             "--target NAME (healthai-client forecast: --history-target NAME)",
                             field="target")
    chosen = target if target is not None else targets[0]
    if chosen not in targets:
        raise InputFileError(f"{path}: no target {chosen!r}; the file holds {targets[:6]}", field="target")
    report["target"] = chosen
    return frame[values == chosen]


def _latest_version(frame: pd.DataFrame, path: Path, lower: dict, pick: tuple[str, ...],
                    report: dict) -> pd.DataFrame:
    if "as_of" not in lower or "as_of" in pick:
        return frame
    as_of = pd.to_datetime(frame[lower["as_of"]].astype(str).str.strip(), errors="coerce", format="ISO8601")
    if as_of.isna().any():
        i = int(as_of.isna().to_numpy().argmax())
        raise InputFileError(f"{path}: row {frame.index[i] + 2}: as_of {frame[lower['as_of']].iloc[i]!r} is "
                             "not an ISO date", field="series")
    keys = [frame[lower[c]].astype(str).str.strip() for c in pick[:2]]
    latest = as_of.groupby(keys).transform("max")
    keep = (as_of == latest).to_numpy()
    report["as_of"] = {"versions": int(as_of.nunique()), "latest": str(as_of.max().date()),
                       "rows_superseded": int((~keep).sum())}
    return frame[keep]


def check_header_once(path: Path) -> None:
    """A CSV header that names a column twice is refused: pandas would rename the repeat (``01001.1``)
    and the error would blame the graph for a region it never heard of."""
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
        header = [c.strip() for c in next(csv.reader(f), [])]
    twice = sorted({c for c in header if header.count(c) > 1})
    if twice:
        raise InputFileError(f"{path}: the header names {twice[:5]} more than once (each region or field is "
                             "one column)", field="series")
