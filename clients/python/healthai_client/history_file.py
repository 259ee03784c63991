"""A forecast's explicit history from a file: the series a model was trained on works as it is.

- CSV or Parquet with a ``period`` column, *long* (``region, period, count``, or a file's own names
  given as ``columns``; hubverse target data ``location, target_end_date, observation`` is
  recognised, ``target`` picks one of its series) or *wide* (``period`` + one column per region),
  read by the trainer's own reader (:mod:`healthai.surveillance.series_file`:
  the same period formats, the same checks for missing, duplicate and non-numeric cells). The last
  period becomes the forecast's reference date, so hubverse rows and plots are dated.
- CSV whose header is only region ids (rows: steps, oldest first), or JSON ``{region: [counts]}``:
  no dates; give ``--reference-date`` for hubverse rows.
- A headerless matrix (``.csv``/``.txt``, first row all numbers: the published benchmarks' layout, as
  ``train forecast --series-start`` takes it): no dates; its columns are named as the trainer names
  them, by position (``r01``, ...) or by ``region_ids`` (a ``--region-ids`` file's ids).

Negative counts (reporting corrections) are refused, as ``train forecast`` refuses them, unless
``negatives="clip"`` (set to 0, as the model was trained with ``--negatives clip``) or ``"keep"``
(sent as they are; only a model trained with ``--negatives keep`` takes them). Missing cells or
periods of a dated file are refused too, unless ``missing="interpolate"`` (filled in time from the
region's own counts, as ``train forecast --missing interpolate`` fills them; ``HistoryFile.filled``
counts them).
"""

from __future__ import annotations

import csv
import datetime as dt
import re
import warnings
from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from healthai_client.exchange import STEP_DAYS
from healthai_client.requests import load_json
from healthai_client.results import ForecastResult

_TABLE_SUFFIXES = (".csv", ".parquet", ".pq", ".txt")


@dataclass(frozen=True)
class HistoryFile:
    """A forecast's history read by ``read_history``: pass it as ``Client.forecast(history=...)``; its
    periods (when it has them) date the result."""

    region_ids: tuple[str, ...]
    counts: np.ndarray  # float64 [steps, regions], oldest first
    last_period: dt.date | None = None  # None: the file has no periods
    step: str | None = None  # "W" or "D" when the file has periods
    filled: int = 0  # cells filled by missing="interpolate"
    filled_last: tuple[str, ...] = ()  # regions whose last period was filled (their last count carried)

    def first_forecast_period(self) -> str:
        """Horizon 1's period start (ISO date), or "" without periods."""
        if self.last_period is None:
            return ""
        return (self.last_period + dt.timedelta(days=STEP_DAYS[self.step or "W"])).isoformat()

    def date(self, result: ForecastResult) -> ForecastResult:
        """``result`` dated by these periods (horizon 1 follows the last one); unchanged without periods.
        A weekly file sent to a daily model (or the reverse) is refused."""
        if self.last_period is None:
            return result
        if result.step and self.step and result.step != self.step:
            kind = "weekly" if self.step == "W" else "daily"
            raise ValueError(f"the history is {kind} but model {result.model_name} v{result.model_version} "
                             f"forecasts step {result.step!r}")
        mismatch = self.week_mismatch(result)
        if mismatch:
            warnings.warn(mismatch, HistoryWeekWarning, stacklevel=3)
        return replace(result, first_forecast_period=self.first_forecast_period(),
                       step=result.step or self.step or "")

    def week_mismatch(self, result: ForecastResult) -> str | None:
        """Why the forecast's dates are not the model's weeks: a weekly history whose weeks start on
        another weekday than the model's (ISO weeks sent to a model of MMWR weeks); None when they agree."""
        if self.last_period is None or self.step != "W" or not result.week_start:
            return None
        from healthai.surveillance.counts import WEEK_DAYS

        mine = WEEK_DAYS[self.last_period.weekday()]
        if mine == result.week_start:
            return None
        return (f"the history's weeks start on {mine}s, model {result.model_name}'s on {result.week_start}s "
                "(its card's week_start): the forecast is dated by the history's weeks, so its periods are "
                f"not the model's (re-bin the counts into {result.week_start}-to-"
                f"{WEEK_DAYS[(WEEK_DAYS.index(result.week_start) + 6) % 7]} weeks)")


class HistoryWeekWarning(UserWarning):
    """A dated weekly history whose weeks are not the model's (``HistoryFile.week_mismatch``)."""



def read_history(
    path: Path | str | Any,
    *,
    negatives: str = "refuse",
    region_ids: tuple[str, ...] | None = None,
    missing: str = "refuse",
    columns: tuple[str, ...] | None = None,
    target: str | None = None,
    exclude: tuple[str, ...] = (),
    known_regions: Collection[str] | None = None,
) -> HistoryFile:
    """The history in ``path`` (format by suffix and header; see the module docstring). ``exclude``:
    a dated file's regions left out (a national total such as ``US`` beside its states), as
    ``train forecast --exclude-regions`` leaves them out. ``known_regions`` (the model's ids and
    aliases): a CSV whose first row is all numbers is a header when it names them (FIPS codes), not a
    headerless matrix; a leading zero (``01001``) names a region anyway.

    ``path`` may also be a pandas DataFrame laid out like such a file: wide (one column per region,
    rows oldest first, periods in a ``period`` column or the index) or long; it is read as its CSV."""
    if hasattr(path, "to_csv") and hasattr(path, "columns"):
        return _read_frame(path, negatives=negatives, region_ids=region_ids, missing=missing,
                           columns=columns, target=target, exclude=exclude, known_regions=known_regions)
    if not isinstance(path, str | Path):
        raise ValueError(f"history: give a file path or a pandas DataFrame, got {type(path).__name__}")
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"history file {str(path)!r}: no such file")
    suffix = path.suffix.lower()
    import pandas as pd

    from healthai.surveillance.series_file import apply_negatives, read_series

    header = _csv_header(path) if suffix in (".csv", ".txt") else []
    matrix = bool(header) and all(_is_number(c) for c in header) and not names_regions(header, known_regions)
    if region_ids is not None and not matrix:
        raise ValueError(f"{path}: region ids name the columns of a headerless matrix, but this history "
                         "names its regions")
    if suffix == ".json":
        undated = _from_json(path)
    elif suffix not in _TABLE_SUFFIXES:
        raise ValueError(f"history file {str(path)!r}: expected .csv, .txt, .parquet or .json")
    elif matrix:
        undated = _from_matrix(path, region_ids)
    elif suffix in (".csv", ".txt") and not _dated(header, columns):
        undated = _from_header_csv(path)
    else:
        table = read_series(path, negatives=negatives, missing=missing, columns=columns, target=target,
                            exclude=tuple(exclude))
        return HistoryFile(table.region_ids, table.values, table.periods[-1].date(), table.step,
                           filled=int(table.report.get("missing_cells", 0)),
                           filled_last=tuple(table.report.get("missing_in_last_period", ())))
    if missing != "refuse":
        raise ValueError(f"{path}: missing={missing!r} needs a dated history (a 'period' column): without "
                         "dates the gaps between steps are unknown")
    if columns is not None or target is not None:
        raise ValueError(f"{path}: columns and target name a long file's columns; this history has none")
    if exclude:
        raise ValueError(f"{path}: exclude leaves regions out of a dated history (a 'period' column); this "
                         "one names the regions to send itself")
    steps = pd.Index([f"step {t + 1}" for t in range(len(undated.counts))])  # no dates: name the step
    counts, _ = apply_negatives(undated.counts, steps, undated.region_ids, str(path), negatives)
    return replace(undated, counts=counts)


def _dated(header: list[str], columns: tuple[str, ...] | None) -> bool:
    """A CSV header of a series with periods: ours, named by ``columns``, or hubverse target data."""
    from healthai.surveillance.series_columns import hubverse_date

    return "period" in header or columns is not None or hubverse_date(header) is not None


def numeric_first_row(path: Path | str) -> bool:
    """Whether a CSV's first row is all numbers: a headerless matrix, or a header of numeric region ids
    (FIPS codes), which only the model's regions can tell apart (``read_history(known_regions=...)``)."""
    path = Path(path)
    if path.suffix.lower() not in (".csv", ".txt") or not path.is_file():
        return False
    header = _csv_header(path)
    return bool(header) and all(_is_number(c) for c in header)


def names_regions(header: list[str], known: Collection[str] | None) -> bool:
    """An all-number first row that names regions, not counts: a cell with a leading zero (FIPS
    ``01001``; a count is never written so), or every cell a distinct region of the model."""
    if any(re.fullmatch(r"0\d+", c) for c in header):
        return True
    known_lower = {k.lower() for k in known} if known is not None else set()
    return bool(known_lower) and len(set(header)) == len(header) and set(header) <= known_lower


def _csv_header(path: Path) -> list[str]:
    with path.open(newline="") as f:
        return [c.strip().lower() for c in next(csv.reader(f), [])]


def _from_header_csv(path: Path) -> HistoryFile:
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = [c.strip() for c in next(reader, [])]
        if not header or "" in header or len(set(header)) != len(header):
            raise ValueError(f"{path}: the header must name each region once, got {header[:6]}")
        rows = []
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise ValueError(f"{path}: row {line} has {len(row)} values for {len(header)} regions")
            try:
                rows.append([float(x) for x in row])
            except ValueError:
                bad = next(j for j, x in enumerate(row) if not _is_number(x))
                raise ValueError(f"{path}: row {line}, region {header[bad]!r}: count {row[bad]!r} is not "
                                 "a number (a file with dates needs a 'period' column: long region, "
                                 "period, count or wide period + one column per region)") from None
    if not rows:
        raise ValueError(f"{path}: no history rows after the header")
    return HistoryFile(tuple(header), np.asarray(rows, dtype=np.float64))


def _from_matrix(path: Path, region_ids: tuple[str, ...] | None) -> HistoryFile:
    from healthai.surveillance.matrix_file import column_ids  # InputFileError is a ValueError

    try:
        counts = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"{path}: a headerless matrix must hold numbers only ({exc})") from None
    return HistoryFile(column_ids(counts.shape[1], region_ids, path, "history"), counts)


def _from_json(path: Path) -> HistoryFile:
    raw = load_json(path)
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{path}: must be a JSON object {{region: [counts, ...]}}")
    lengths = {len(v) if isinstance(v, list) else -1 for v in raw.values()}
    if len(lengths) != 1 or -1 in lengths:
        raise ValueError(f"{path}: every region needs a list of counts of the same length")
    try:
        counts = np.asarray([[float(x) for x in v] for v in raw.values()], dtype=np.float64).T
    except (TypeError, ValueError):
        raise ValueError(f"{path}: counts must be numbers") from None
    return HistoryFile(tuple(str(k) for k in raw), counts)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_frame(frame: Any, **options: Any) -> HistoryFile:
    """A DataFrame read as the CSV it would write: a meaningful index (dates, a named one) is the
    ``period`` column unless the frame has one."""
    import tempfile

    import pandas as pd

    if not isinstance(frame.index, pd.RangeIndex) or frame.index.name:
        frame = frame.reset_index()
        if "period" not in frame.columns:
            frame = frame.rename(columns={frame.columns[0]: "period"})
    with tempfile.TemporaryDirectory(prefix="healthai-history-") as folder:
        path = Path(folder) / "history.csv"
        frame.to_csv(path, index=False)
        try:
            return read_history(path, **options)
        except ValueError as e:
            raise ValueError(str(e).replace(f"history file {str(path)!r}", "history DataFrame")
                             .replace(str(path), "the DataFrame")) from None
