"""Forecast history from the store: the surveillance counts the Ingest service keeps, at the model's
step and in its region order, with each region's coverage; optionally nowcast for reporting delay
(the window's latest periods are the nowcast's point: ``healthai.surveillance.nowcast``).

The forecast's interval does not carry the nowcast's own uncertainty: mixing the model's forecasts
over draws of the final counts was measured (``benchmarks/nowcast_forecast.py``) and was no better
calibrated at state-level counts and worse at small ones, so it is not done.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from healthai.errors import InvalidInput
from healthai.serving.forecast.card import ForecastCard
from healthai.surveillance.counts import end_refused, place_level
from healthai.v1 import forecast_pb2


class Surveillance(Protocol):
    def counts(self, syndrome: str = "ili", freq: str = "D", start: Any = None, end: Any = None, *,
               completed_by: dt.date | None = None, level: str = "region", week_start: str = "monday"
               ) -> pd.DataFrame: ...


@dataclass(frozen=True)
class StoredWindow:
    window: np.ndarray  # [W, N] float32, the model's region order
    first_period: str  # ISO date of the first forecast period
    coverage: list[forecast_pb2.RegionCoverage]


def stored_window(surveillance: Surveillance, stored: forecast_pb2.StoredHistory, card: ForecastCard
                  ) -> StoredWindow:
    """[W, N] counts from the store at the model's step, the first forecast period (ISO date) and each
    region's coverage. A region with no stored case up to the window's end has no data (not zero
    cases): refused unless ``stored.allow_missing_regions``, and then flagged in its coverage."""
    if stored.nowcast:
        _can_nowcast(surveillance)
    try:  # the period under way (today's, this week's) is not complete yet: never part of the window
        frame = surveillance.counts(syndrome=stored.syndrome or "ili", freq=card.step,
                                    end=stored.end_date or None, completed_by=dt.datetime.now(dt.UTC).date(),
                                    level=place_level(card.region_ids), week_start=card.week_start)
    except InvalidInput as e:
        if e.field != "end":
            raise
        raise end_refused(e, "stored.end_date") from None
    observed = frame
    if stored.nowcast:
        frame = _nowcast(surveillance, stored, card, frame)
    if len(frame) < card.window:
        raise InvalidInput(f"stored: {len(frame)} {card.step} periods of stored counts; the model needs "
                           f"at least {card.window}", field="stored")
    history = np.zeros((len(frame), card.n_regions), np.float64)
    added = np.zeros_like(history)
    matched = 0
    for code in frame.columns:
        col = card.region_aliases.get(str(code))
        if col is not None:
            history[:, col] += frame[code].to_numpy(dtype=np.float64)
            added[:, col] += (frame[code] - observed[code]).to_numpy(dtype=np.float64)
            matched += 1
    if len(frame.columns) and not matched:
        raise InvalidInput(f"stored: none of the stored regions (e.g. {list(frame.columns[:3])}) is a region "
                           f"of this model's graph (e.g. {list(card.region_ids[:3])})", field="stored")
    start = len(frame) - card.window
    coverage = _coverage(frame.index, history, added, card, start)
    missing = [c.region_id for c in coverage if not c.first_stored_period]
    if missing and not stored.allow_missing_regions:
        raise InvalidInput(f"stored: {len(missing)} of the model's {card.n_regions} regions have no stored "
                           f"counts (e.g. {missing[:5]}); their input would be invented zeros. Ingest their "
                           "data, or set stored.allow_missing_regions to forecast with them flagged",
                           field="stored")
    step = pd.Timedelta(days=7 if card.step == "W" else 1)
    return StoredWindow(history[start:].astype(np.float32), (frame.index[-1] + step).date().isoformat(),
                        coverage)


def _coverage(index: pd.DatetimeIndex, history: np.ndarray, added: np.ndarray, card: ForecastCard,
              start: int) -> list[forecast_pb2.RegionCoverage]:
    seen = history > 0
    first = np.where(seen.any(axis=0), seen.argmax(axis=0), len(index))  # first period with a case
    coverage = []
    for j, rid in enumerate(card.region_ids):
        stored_from = index[first[j]].date().isoformat() if first[j] < len(index) else ""
        coverage.append(forecast_pb2.RegionCoverage(
            region_id=rid, first_stored_period=stored_from,
            covered_periods=int(min(card.window, max(0, len(index) - max(first[j], start)))),
            window_periods=card.window, cases_in_window=float((history - added)[start:, j].sum()),
            nowcast_added=float(added[start:, j].sum())))
    return coverage


def _can_nowcast(surveillance: Surveillance) -> None:
    from healthai.surveillance import SurveillanceCounts

    if not isinstance(surveillance, SurveillanceCounts):  # ReleasedCounts: private mode
        raise InvalidInput("stored.nowcast: this server answers from DP releases, which hold no ingest dates",
                           field="stored.nowcast")


def _nowcast(surveillance: Surveillance, stored: forecast_pb2.StoredHistory, card: ForecastCard,
             frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its latest periods corrected for reporting delay (``healthai.surveillance.nowcast``)."""
    from healthai.surveillance.nowcast import nowcast

    try:
        got = nowcast(surveillance, syndrome=stored.syndrome or "ili", freq=card.step,
                      level=place_level(card.region_ids), week_start=card.week_start,
                      as_of=dt.datetime.now(dt.UTC).date())
    except InvalidInput as e:
        raise InvalidInput(f"stored.nowcast: {e.message.removeprefix('as_of: ')}",
                           field="stored.nowcast") from None
    wide = got.table.pivot(index="period", columns="region", values="nowcast")
    wide.index = pd.DatetimeIndex(pd.to_datetime(wide.index), name=frame.index.name)
    stored_counts = frame.astype(np.float64)
    # never below what is stored: records dated after the server's UTC day (a writer's clock ahead)
    # are in the counts but not in the nowcast's as-of view
    return np.maximum(wide.reindex(index=frame.index, columns=frame.columns).fillna(stored_counts),
                      stored_counts)
