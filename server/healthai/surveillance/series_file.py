"""Read a user's count series: CSV or Parquet, long (``region, period, count``) or wide (``period`` +
one column per region); periods as ISO dates (``2019-01-07``), ISO weeks (``2019-W02``) or MMWR
epiweeks (``201902``); weekly or daily.

Nothing is changed silently: missing or duplicate periods, missing region × period cells, non-numeric
or non-finite counts stop with an error naming the file, row and column; negative counts (reporting
corrections) are refused unless ``negatives="clip"`` (set to 0) or ``"keep"``, and either way counted
in the report. Missing cells and periods are refused unless ``missing="interpolate"``
(:mod:`healthai.surveillance.series_gaps`: filled in time from the region's own counts, counted in the
report and kept as a mask so that scores leave them out).

Shared by ``healthai train forecast --series`` and ``healthai-client forecast --history`` (the same
file a model was trained on can be sent to it).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from healthai.errors import InputFileError
from healthai.surveillance.matrix_file import column_ids, read_headerless
from healthai.surveillance.series_columns import check_header_once, long_columns
from healthai.surveillance.series_gaps import check_missing, fill_missing, is_missing_text

STEPS = {"W": 7, "D": 1}
NEGATIVES = ("refuse", "clip", "keep")
_ISO_WEEK = re.compile(r"^(\d{4})-?W(\d{2})$")
_EPIWEEK = re.compile(r"^(\d{4})(\d{2})$")


@dataclass(frozen=True)
class SeriesTable:
    periods: pd.DatetimeIndex  # period starts, regular, ascending
    region_ids: tuple[str, ...]
    values: np.ndarray  # float64 [T, N]
    step: str  # "W" or "D"
    report: dict = field(default_factory=dict)
    imputed: np.ndarray | None = None  # bool [T, N]: cells filled by --missing interpolate


def mmwr_week_start(year: int, week: int) -> dt.date:
    """Sunday starting MMWR (CDC epi) week ``week`` of ``year``: week 1 is the first Sun–Sat week with
    at least four days in the year."""
    jan1 = dt.date(year, 1, 1)
    since_sunday = (jan1.weekday() + 1) % 7
    first = (
        jan1 - dt.timedelta(days=since_sunday)
        if since_sunday <= 3
        else jan1 + dt.timedelta(days=7 - since_sunday)
    )
    return first + dt.timedelta(weeks=week - 1)


def parse_period(value: object, *, where: str) -> pd.Timestamp:
    text = str(value).strip()
    if text.endswith(".0"):  # epiweeks read as floats from a column with gaps
        text = text[:-2]
    try:
        if m := _ISO_WEEK.match(text):
            if int(m[2]) == 53 and dt.date(int(m[1]), 12, 28).isocalendar()[1] != 53:
                raise _NoWeek53(f"{where}: period {text!r}: ISO year {m[1]} has 52 weeks")
            return pd.Timestamp(dt.date.fromisocalendar(int(m[1]), int(m[2]), 1))
        if m := _EPIWEEK.match(text):
            year, week = int(m[1]), int(m[2])
            if week == 53 and mmwr_week_start(year, 53) >= mmwr_week_start(year + 1, 1):
                raise _NoWeek53(f"{where}: period {text!r}: MMWR year {year} has 52 weeks")
            if not 1 <= week <= 53:
                raise ValueError(f"week {week}")
            return pd.Timestamp(mmwr_week_start(year, week))
        ts = pd.Timestamp(dt.date.fromisoformat(text[:10]))
        if len(text) > 10 and text[10] not in "T ":
            raise ValueError(text)
        return ts
    except _NoWeek53 as e:
        raise InputFileError(str(e), field="series") from None
    except ValueError:
        raise InputFileError(
            f"{where}: period {text!r} is not an ISO date (2019-01-07), ISO week (2019-W02) or "
            "MMWR epiweek (201902)",
            field="series",
        ) from None


class _NoWeek53(ValueError):
    """A week 53 in a year that has 52: a week the calendar does not have."""


def _periods(column: pd.Series, path: Path, rows: np.ndarray) -> pd.DatetimeIndex:
    """Each distinct period label parsed once (a long county file repeats each one per region); errors
    name the first row holding the bad label."""
    codes, labels = pd.factorize(column.to_numpy(dtype=object), use_na_sentinel=False)
    _, first = np.unique(codes, return_index=True)  # the first row of each label (codes are 0..k-1)
    parsed = [parse_period(v, where=f"{path}: row {rows[i]}") for v, i in zip(labels, first, strict=True)]
    return pd.DatetimeIndex(np.asarray(parsed, dtype="datetime64[ns]")[codes])


def _read_frame(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise InputFileError(f"{path}: no such file", field="series")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, OSError) as exc:
        raise InputFileError(f"{path}: cannot read as CSV or Parquet ({exc})", field="series") from exc
    check_header_once(path)
    return frame


def _numbers(
    column: pd.Series, *, path: Path, label: str, rows: np.ndarray, allow_missing: bool = False
) -> np.ndarray:
    """Column → float64; error naming the first row (1-based data row) that is not a finite number.
    ``allow_missing``: empty cells and missing marks (``NA``, ``X``, ...) become NaN."""
    absent = np.zeros(len(column), dtype=bool)
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        values = column.to_numpy(np.float64, na_value=np.nan)  # Parquet: already numbers
        absent = np.isnan(values) & column.isna().to_numpy()
    else:
        text = column.astype(str).str.strip()
        if allow_missing:
            absent = (is_missing_text(text) | column.isna()).to_numpy()
        values = pd.to_numeric(text.where(text != "", "nan"), errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(values) & ~(absent & allow_missing)
    if bad.any():
        i = int(np.argmax(bad))
        cell = str(column.iloc[i]).strip()
        missing_mark = cell == "" or bool(is_missing_text(pd.Series([cell])).iloc[0]) or column.isna().iloc[i]
        hint = (
            "not a number nor a missing mark" if allow_missing or not missing_mark
            else "missing values are refused: --missing interpolate fills them in time, counted in the report"
        )
        raise InputFileError(
            f"{path}: row {rows[i]}, {label}: count {str(column.iloc[i])!r} is not a finite number ({hint})",
            field="series",
        )
    values = np.where(absent, np.nan, values)
    return values


def _long_to_wide(frame: pd.DataFrame, path: Path, allow_missing: bool, count_column: str = "count"
                  ) -> pd.DataFrame:
    """``frame``: columns region, period, count (``count_column`` in the file); its index the rows'
    positions in the file."""
    rows = frame.index.to_numpy() + 2  # header is line 1
    region = frame["region"].astype(str).str.strip()
    period = _periods(frame["period"], path, rows)
    count = _numbers(frame["count"], path=path, label=f"column {count_column}", rows=rows,
                     allow_missing=allow_missing)
    if (region == "").any():
        raise InputFileError(
            f"{path}: row {rows[int(np.argmax(region == ''))]}: empty region id", field="series"
        )
    long = pd.DataFrame({"region": region.to_numpy(), "period": period, "count": count, "row": rows})
    dup = long.duplicated(["region", "period"], keep=False)
    if dup.any():
        first = long[dup].iloc[:2]
        raise InputFileError(
            f"{path}: rows {first['row'].tolist()} repeat region {first['region'].iloc[0]!r} at period "
            f"{first['period'].iloc[0].date()} (duplicate periods are not summed or dropped)",
            field="series",
        )
    wide = long.pivot(index="period", columns="region", values="count").sort_index()
    missing = wide.isna()
    if missing.to_numpy().any() and not allow_missing:
        t, j = np.argwhere(missing.to_numpy())[0]
        raise InputFileError(
            f"{path}: region {wide.columns[j]!r} has no row for period {wide.index[t].date()} "
            f"({int(missing.to_numpy().sum())} region × period cells missing; nothing is zero-filled: "
            "--missing interpolate fills them in time, counted in the report)",
            field="series",
        )
    return wide


def _wide(frame: pd.DataFrame, path: Path, period_col: str, allow_missing: bool) -> pd.DataFrame:
    rows = np.arange(len(frame)) + 2
    period = _periods(frame[period_col], path, rows)
    regions = [c for c in frame.columns if c != period_col]
    if not regions:
        raise InputFileError(
            f"{path}: a wide series needs one column per region after 'period'", field="series"
        )
    names = [str(c).strip() for c in regions]
    if len(set(names)) != len(names) or "" in names:
        raise InputFileError(
            f"{path}: region columns must be distinct and named, got {names}", field="series"
        )
    values = {
        n: _numbers(frame[c], path=path, label=f"column {n!r}", rows=rows, allow_missing=allow_missing)
        for n, c in zip(names, regions, strict=True)
    }
    wide = pd.DataFrame(values, index=period)
    dup = wide.index.duplicated(keep=False)
    if dup.any():
        raise InputFileError(
            f"{path}: rows {rows[dup][:2].tolist()} repeat period {wide.index[dup][0].date()}", field="series"
        )
    return wide.sort_index()


def infer_step(periods: pd.DatetimeIndex, path: Path | str, step: str | None, *, allow_gaps: bool = False
               ) -> str:
    """``step`` or the smallest gap's; periods must be whole steps apart and, unless ``allow_gaps``,
    consecutive."""
    if len(periods) < 2:
        raise InputFileError(f"{path}: need at least two periods, got {len(periods)}", field="series")
    gaps = np.diff(periods.to_numpy()).astype("timedelta64[D]").astype(int)
    smallest = int(gaps.min())
    guessed = {7: "W", 1: "D"}.get(smallest)
    if step is None:
        if guessed is None:
            raise InputFileError(
                f"{path}: periods are {smallest} days apart; only weekly (7) or daily (1) series are "
                "supported",
                field="series",
            )
        step = guessed
    if step not in STEPS:
        raise InputFileError(f"step must be W or D, got {step!r}", field="step")
    if step == "D" and smallest >= 7 and not np.any(gaps % 7):  # weekly totals are not daily counts
        raise InputFileError(
            f"{path}: --step D, but every period is a whole number of weeks after the one before "
            f"(the closest {smallest} days apart): this is a weekly series; train it with --step W",
            field="step",
        )
    if smallest < STEPS[step] or np.any(gaps % STEPS[step]):
        i = int(np.argmax((gaps < STEPS[step]) | (gaps % STEPS[step] != 0)))
        raise InputFileError(
            f"{path}: periods {periods[i].date()} and {periods[i + 1].date()} are {gaps[i]} day(s) apart, "
            f"not a whole number of {'weeks' if step == 'W' else 'days'}",
            field="series",
        )
    if np.any(gaps > STEPS[step]) and not allow_gaps:
        i = int(np.argmax(gaps > STEPS[step]))
        missing = int((gaps // STEPS[step] - 1).sum())
        raise InputFileError(
            f"{path}: missing periods: nothing between {periods[i].date()} and {periods[i + 1].date()} "
            f"({missing} {step} periods missing in all; gaps are not filled in: --missing interpolate "
            "fills them in time, counted in the report)",
            field="series",
        )
    return step


def apply_negatives(
    values: np.ndarray, periods: pd.Index, ids: tuple[str, ...], where: str, negatives: str
) -> tuple[np.ndarray, dict]:
    """Refuse, clip or keep negative counts; ``periods`` label the rows (dates, or names of steps)."""
    if negatives not in NEGATIVES:
        raise InputFileError(
            f"negatives must be one of {NEGATIVES}, got {negatives!r}", field="negatives"
        )
    neg = values < 0
    report = {"negatives": negatives, "negative_counts": int(neg.sum())}
    if neg.any():
        t, j = np.argwhere(neg)[0]
        if negatives == "refuse":
            raise InputFileError(
                f"{where}: {int(neg.sum())} negative counts, first {values[t, j]:g} for region {ids[j]!r} "
                f"at {_label(periods[t])}; pass --negatives clip (set to 0) or keep",
                field="series",
            )
        report["first_negative"] = {
            "region": ids[j],
            "period": _label(periods[t]),
            "value": float(values[t, j]),
        }
        if negatives == "clip":
            values = np.maximum(values, 0.0)
    return values, report


def _label(period: object) -> str:
    return str(period.date()) if isinstance(period, pd.Timestamp) else str(period)


def read_series(
    path: Path | str,
    *,
    step: str | None = None,
    negatives: str = "refuse",
    start: str | None = None,
    region_ids: tuple[str, ...] | None = None,
    missing: str = "refuse",
    columns: tuple[str, ...] | None = None,
    target: str | None = None,
    exclude: tuple[str, ...] = (),
) -> SeriesTable:
    """``start`` (the first period, in any period format): ``path`` is a headerless matrix (rows =
    periods, columns = regions; ``matrix_file``), its columns named by ``region_ids`` or by position.
    ``missing``: "refuse" (default) or "interpolate" (``series_gaps``). ``columns`` / ``target``: a
    long file's region, period and count columns and which of its targets (``series_columns``).
    ``exclude``: region ids left out (a national total beside its states, say)."""
    path = Path(path)
    allow = check_missing(missing) == "interpolate"
    if start is not None:
        if columns is not None or target is not None:
            raise InputFileError("--columns and --target name a long file's columns; a headerless matrix has "
                                 "none", field="columns" if columns is not None else "target")
        return _matrix(path, start=start, step=step, negatives=negatives, region_ids=region_ids,
                       missing=missing, exclude=exclude)
    frame = _read_frame(path).reset_index(drop=True)
    lower = {str(c).strip().lower(): c for c in frame.columns}
    picked: dict = {}
    if found := long_columns(frame, path, columns, target):
        long, layout, picked = found
        wide = _long_to_wide(long, path, allow, picked.get("columns", {}).get("count", "count"))
    elif target is not None:
        raise InputFileError(f"{path}: --target chooses a series of a long file with a 'target' column",
                             field="target")
    elif "period" in lower:
        wide, layout = _wide(frame, path, lower["period"], allow), "wide"
    else:
        raise InputFileError(
            f"{path}: need columns region, period, count (long; --columns REGION,PERIOD,COUNT names "
            "your own) or period + one column per region (wide); got "
            f"{[str(c) for c in frame.columns][:6]}. A headerless matrix (rows = periods, columns = "
            "regions, as the published benchmarks ship) needs --series-start DATE and --step",
            field="series",
        )
    table = series_from_frame(wide, step=step, where=str(path), negatives=negatives, layout=layout,
                              missing=missing, exclude=exclude)
    table.report.update(picked)
    if layout == "hubverse time series" and table.step == "W":  # dated by the week's end (Saturday)
        starts = table.periods - pd.Timedelta(days=6)
        table.report.update(first_period=str(starts[0].date()), last_period=str(starts[-1].date()),
                            period_labels="week ends (hubverse target data): each week starts 6 days earlier")
        table = replace(table, periods=starts)
    return table


def series_from_frame(
    frame: pd.DataFrame,
    *,
    step: str | None,
    where: str,
    negatives: str = "refuse",
    layout: str = "store",
    missing: str = "refuse",
    exclude: tuple[str, ...] = (),
) -> SeriesTable:
    """A wide frame indexed by period start (a file's, or the store's surveillance counts)."""
    if exclude:
        frame = _without(frame, exclude, where)
    periods = pd.DatetimeIndex(frame.index)
    interpolate = check_missing(missing) == "interpolate"
    step = infer_step(periods, where, step, allow_gaps=interpolate)
    if interpolate:  # absent periods become rows of missing cells
        periods = pd.date_range(periods[0], periods[-1], freq=f"{STEPS[step]}D")
        frame = frame.reindex(periods)
    ids = tuple(str(c) for c in frame.columns)
    values, report = apply_negatives(frame.to_numpy(np.float64), periods, ids, where, negatives)
    if exclude:
        report["excluded_regions"] = list(exclude)
    imputed = None
    if interpolate:
        values, imputed, gaps = fill_missing(values, periods, ids, where)
        report.update(gaps)
    report.update(
        layout=layout,
        step=step,
        periods=len(periods),
        regions=len(ids),
        first_period=str(periods[0].date()),
        last_period=str(periods[-1].date()),
    )
    return SeriesTable(periods=periods, region_ids=ids, values=values, step=step, report=report,
                       imputed=imputed)


def without_regions(names: list[str], exclude: tuple[str, ...], where: str, of: str = "the series"
                    ) -> list[str]:
    """``names`` less ``exclude`` (``--exclude-regions``): each excluded id must be one of them, and one
    region at least must be left."""
    unknown = [r for r in exclude if r not in names]
    if unknown:
        raise InputFileError(f"{where}: --exclude-regions names {unknown[:5]}, not regions of {of} "
                             f"({names[:6]} ...)", field="exclude_regions")
    kept = [n for n in names if n not in set(exclude)]
    if not kept:
        raise InputFileError(f"{where}: --exclude-regions leaves no region", field="exclude_regions")
    return kept


def _without(frame: pd.DataFrame, exclude: tuple[str, ...], where: str) -> pd.DataFrame:
    names = [str(c) for c in frame.columns]
    kept = set(without_regions(names, exclude, where))
    return frame.loc[:, [n in kept for n in names]]


def _matrix(
    path: Path, *, start: str, step: str | None, negatives: str, region_ids: tuple[str, ...] | None,
    missing: str, exclude: tuple[str, ...],
) -> SeriesTable:
    if not path.is_file():
        raise InputFileError(f"{path}: no such file", field="series")
    if step not in STEPS:
        raise InputFileError(
            "a headerless matrix has no dates: --step W or D is required with --series-start", field="step"
        )
    cells = read_headerless(path, "series") if path.suffix.lower() not in (".parquet", ".pq") else None
    if cells is None:
        raise InputFileError(
            f"{path}: --series-start is for a headerless matrix of counts, but the first row is not all "
            "numbers (a file with a header names its periods: drop --series-start)",
            field="series_start",
        )
    try:
        first = parse_period(start, where="--series-start")
    except InputFileError as e:
        raise InputFileError(e.message, field="series_start") from None
    periods = pd.date_range(first, periods=len(cells), freq=f"{STEPS[step]}D")
    ids = column_ids(cells.shape[1], region_ids, path, "series")
    rows = np.arange(len(cells)) + 1  # no header: data start on line 1
    values = {
        rid: _numbers(cells[c], path=path, label=f"column {j + 1} ({rid})", rows=rows,
                      allow_missing=missing == "interpolate")
        for j, (rid, c) in enumerate(zip(ids, cells.columns, strict=True))
    }
    table = series_from_frame(
        pd.DataFrame(values, index=periods), step=step, where=str(path), negatives=negatives, layout="matrix",
        missing=missing, exclude=exclude,
    )
    table.report["ids"] = "region-ids file" if region_ids is not None else "by position"
    return table
