"""Surveillance counts read back from the store's private releases, never from its exact counts.

A server set to ``stored_counts = "private"`` hands this source to Forecast (``--stored``) and Scenario
(stored calibration) instead of :class:`~healthai.surveillance.SurveillanceCounts`. What a caller
then sees (the forecast, the ``stored_history`` window, the coverage, a calibration) is computed from
counts released under epsilon-DP per patient (``healthai counts --epsilon ... --store``, or a
``train forecast --count-epsilon`` release): post-processing, which spends no further privacy. The
server never releases anything itself, so the store's ledger stays the whole account of what was
spent.

For each request the newest release of the same syndrome, step, level and week start (a complete
release: its periods had all ended) whose table is kept is read (a stream's releases together:
``healthai.surveillance.stream``); its negative noisy counts are set to
0 (the models take counts), which biases small counts upwards (``release.Release.card``). A request
for a region the release does not hold finds no column, as if nothing were stored for it.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Sequence

import pandas as pd
import pyarrow.parquet as pq

from healthai.errors import InvalidInput
from healthai.store import ParquetStore
from healthai.surveillance.counts import period_start
from healthai.surveillance.release import LEDGER_DIR, entries


class ReleasedCounts:
    """``counts()`` as :class:`~healthai.surveillance.SurveillanceCounts` answers it, from releases."""

    def __init__(self, store: ParquetStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._entries: dict[str, dict] = {}  # ledger files never change once written: read each once
        self._tables: dict[str, pd.DataFrame] = {}

    def counts(self, syndrome: str = "ili", freq: str = "D", start: dt.date | str | None = None,
               end: dt.date | str | None = None, regions: Sequence[str] | None = None, *,
               completed_by: dt.date | None = None, level: str = "region", week_start: str = "monday"
               ) -> pd.DataFrame:
        """The newest matching release's counts (period x place), from ``start`` to ``end`` (periods
        holding them); ``completed_by`` is met already (only complete releases are read)."""
        source = self.newest(syndrome=syndrome, step=freq, level=level, week_start=week_start)
        frame = pd.concat([self._table(t) for t in source["tables"]]).sort_index()
        frame = frame.clip(lower=0)  # post-processing: costs no privacy
        if start is not None:
            frame = frame[frame.index >= period_start(start, freq, week_start, "start")]
        if end is not None:
            last = period_start(end, freq, week_start, "end")
            if last > frame.index[-1]:
                raise InvalidInput(f"end: the newest private release of {syndrome!r} counts ends with the "
                                   f"period of {frame.index[-1].date()}; release later periods first "
                                   "(healthai counts --epsilon ... --store)", field="end")
            frame = frame[frame.index <= last]
        if regions is not None:
            frame = frame[[r for r in regions if r in frame.columns]]
        return frame

    def newest(self, *, syndrome: str, step: str, level: str, week_start: str) -> dict:
        """What ``counts`` reads: ``{"tables", "last_period", "entry"}`` of the newest matching release,
        a stream's releases (``stream``) taken together; InvalidInput naming ``stored`` if none."""
        sources: dict[tuple[str, str], dict] = {}
        for name, entry in self._ledger():
            same = (entry.get("syndrome"), entry.get("step"), entry.get("level")) == (syndrome, step, level)
            weeks_agree = step == "D" or entry.get("week_start") == week_start
            if same and weeks_agree and entry.get("table") and entry.get("complete_periods") is True \
                    and not entry.get("by_age"):
                key = ("stream", entry["stream"]) if entry.get("stream") else ("release", name)
                src = sources.setdefault(key, {"tables": [], "last_period": "", "entry": name})
                src["tables"].append(entry["table"])
                src["last_period"] = max(src["last_period"], entry.get("last_period") or "")
                src["entry"] = max(src["entry"], name)
        if not sources:
            weeks = f", weeks starting {week_start}" if step == "W" else ""
            unit = "week" if step == "W" else "day"
            raise InvalidInput(
                f"stored: this server answers from private releases only (stored_counts = private), and the "
                f"store holds none of {syndrome!r} counts by {level} and {unit}{weeks}: release them first "
                "(healthai counts --epsilon E --store ... --start ... --end ...)", field="stored")
        return max(sources.values(), key=lambda s: (s["last_period"], s["entry"]))

    def _ledger(self) -> list[tuple[str, dict]]:
        with self._lock:
            return entries(self.store, cache=self._entries)

    def _table(self, name: str) -> pd.DataFrame:
        with self._lock:
            if name not in self._tables:
                path = f"{self.store.root}/{LEDGER_DIR}/{name}"
                long = pq.read_table(path, filesystem=self.store.filesystem).to_pandas()
                wide = long.pivot(index="period", columns="place", values="count")
                wide.index = pd.DatetimeIndex(wide.index, name="period")
                wide.columns.name = None
                self._tables[name] = wide.astype("int64")
            return self._tables[name]

