"""Nowcasts of the latest periods' counts, corrected for reporting delay (``healthai counts --nowcast``).

Records reach the store days or weeks after the diagnosis, so the last periods' counts are low: not
fewer cases, cases not stored yet. A case is *reported* on the ingest date of the part file it was
first stored in (the UTC day of the commit; a record sent again is not stored again). Its *delay* is
that day minus the last day of its period (0 or less: stored by the time the period ended).

Method (the multiplicative chain ladder of reporting-triangle nowcasts): the target is each period's
count of cases reported within ``max_delay`` days of its end. From the *mature* periods (ended at
least ``max_delay`` days before ``as_of``), the latest ``window_days`` of them, F(d) = the share of
those cases reported within d days. A period that ended d < ``max_delay`` days before ``as_of`` has
its observed count (cases reported up to ``as_of``) divided by F(d). Older periods are mature: their
nowcast is what was observed. Cases reported later than ``max_delay`` (backfill, a bulk load of
history) are kept in the observed count but tell nothing about F.

Places report at their own pace (one hospital sends daily, another in a weekly batch), so each place
has its own F, partially pooled (``pooling="partial"``, the default): its delay counts plus
``PRIOR_CASES`` cases spread as the pooled delays are (a Dirichlet prior centred on the pooled F),
so a place with few cases keeps close to the pooled F and one with many follows its own.
``PRIOR_CASES`` is ``MIN_CASES``, the fewest cases F is learned from at all: set before any
benchmark, not tuned. ``pooling="pooled"``: one F for every place.

The 90 % interval (``nowcast_q05``, ``nowcast_q95``) treats the observed count O as a binomial thinning
of the final count N with probability F, under a flat prior on N: the cases still to come are then
negative binomial, N − O ~ NB(O + 1, F). It takes F as known, so it ignores F's own error and any
change in the delays: ``benchmarks/nowcast.py`` measures how often it covers.

Assumptions, said in the output: the delay distribution has not changed over the estimation window
(and, pooled, is the same in every place). Refused, naming the field, when the window holds fewer than
``MIN_CASES`` cases or a completeness below ``MIN_COMPLETENESS`` would be divided by. The cases and
their report days come from :meth:`SurveillanceCounts.cases <healthai.surveillance.SurveillanceCounts.cases>`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
from scipy.stats import nbinom

from healthai.errors import InvalidInput
from healthai.store import ParquetStore
from healthai.surveillance import counts as sc

MAX_DELAY_DAYS = 28
WINDOW_DAYS = 84
MIN_CASES = 20
MIN_COMPLETENESS = 0.05
PRIOR_CASES = MIN_CASES  # weight of the pooled delays in each place's F (partial pooling)
POOLINGS = ("partial", "pooled")


@dataclass(frozen=True)
class Nowcast:
    table: pd.DataFrame  # region, period, count (observed), days_since_end, completeness, nowcast
    completeness: pd.Series  # pooled F(d), d = 0..max_delay days after a period's end
    cases_in_window: int  # mature cases (delay <= max_delay) F was estimated from
    window: tuple[str, str]  # first and last period start of the estimation window
    backfilled: int  # cases reported more than max_delay days after their period ended
    pooling: str = "partial"

    def card(self) -> dict:
        places = ("each place's own delays plus the pooled delays with the weight of "
                  f"{PRIOR_CASES} cases" if self.pooling == "partial" else "pooled over places")
        return {"method": f"multiplicative chain ladder on the store's ingest dates, F per place: {places}",
                "max_delay_days": int(len(self.completeness) - 1), "estimated_on_periods": list(self.window),
                "cases_in_window": self.cases_in_window, "backfilled_cases": self.backfilled,
                "pooling": self.pooling,
                "completeness_by_days_since_end": [round(float(v), 4) for v in self.completeness],
                "interval": "90 %: cases still to come ~ NegBin(observed + 1, F), F taken as known (its own "
                "error and changing delays are not modelled)"}


def nowcast(source: ParquetStore | sc.SurveillanceCounts, *, syndrome: str = "ili", freq: str = "W",
            level: str = "region", week_start: str = "monday", as_of: date | str | None = None,
            start: date | str | None = None, max_delay: int = MAX_DELAY_DAYS,
            window_days: int = WINDOW_DAYS, pooling: str = "partial") -> Nowcast:
    """Every period that ended before ``as_of`` (default today, UTC), from ``start``: observed counts of
    the cases reported up to ``as_of`` and their nowcast (see the module docstring). ``source``: a
    store, or its :class:`~healthai.surveillance.SurveillanceCounts` (which reads each file once, so a
    server asking often reads only what was committed since)."""
    if not 1 <= max_delay <= 365:
        raise InvalidInput(f"max_delay must be 1 to 365 days, got {max_delay}", field="max_delay")
    if pooling not in POOLINGS:
        raise InvalidInput(f"pooling {pooling!r} is not one of {', '.join(POOLINGS)}", field="pooling")
    utc_today = dt.datetime.now(dt.UTC).date()
    today = sc._to_timestamp(as_of, "as_of") if as_of is not None else pd.Timestamp(utc_today)
    counts = source if isinstance(source, sc.SurveillanceCounts) else sc.SurveillanceCounts(source)
    cases = counts.cases(syndrome, level)  # each case with the day the store first held it
    cases = cases.assign(day=pd.to_datetime(cases["day"]), reported=pd.to_datetime(cases["reported"]))
    cases = cases.sort_values("reported", kind="stable")
    cases = cases.drop_duplicates(["patient_id", "place", "day"])  # a patient-day: its first report
    cases = cases[cases["reported"] <= today]  # what was known on as_of
    length = 7 if freq == "W" else 1
    back = (cases["day"].dt.day_of_week - sc.week_day(week_start)) % 7 if freq == "W" else 0
    cases = cases.assign(period=cases["day"] - pd.to_timedelta(back, unit="D"))
    ends = cases["period"] + pd.Timedelta(days=length - 1)
    cases = cases.assign(delay=(cases["reported"] - ends).dt.days.clip(lower=0), end=ends)
    cases = cases[cases["end"] < today]  # periods that have ended
    mature_end = today - pd.Timedelta(days=max_delay)
    oldest = mature_end - pd.Timedelta(days=window_days)
    window = cases[(cases["end"] <= mature_end) & (cases["end"] > oldest)]
    timely = window[window["delay"] <= max_delay]
    if len(timely) < MIN_CASES:
        raise InvalidInput(
            f"as_of: the {window_days} days of periods that ended {max_delay} or more days before "
            f"{today.date()} hold {len(timely)} cases stored within {max_delay} days; a nowcast needs "
            f"{MIN_CASES} (a store loaded in bulk has no delays to learn from)", field="as_of")
    histogram = np.bincount(timely["delay"].to_numpy(int), minlength=max_delay + 1)
    completeness = pd.Series(histogram.cumsum() / len(timely),
                             index=pd.RangeIndex(max_delay + 1, name="days_since_end"))
    observed = sc.period_table(sc.daily_counts(cases[["patient_id", "place", "day"]]), freq, start, None,
                               None, today.date(), week_start)
    by_place = _by_place(timely, histogram / len(timely), observed.columns, pooling)
    return Nowcast(_table(observed, by_place, today, length, max_delay), completeness, len(timely),
                   (str(window["period"].min().date()), str(window["period"].max().date())),
                   int((cases["delay"] > max_delay).sum()), pooling)


def _by_place(timely: pd.DataFrame, pooled: np.ndarray, places: pd.Index, pooling: str) -> pd.DataFrame:
    """F(d) per place [max_delay + 1, places]: its delay counts plus ``PRIOR_CASES`` cases spread as the
    pooled shares ``pooled`` are, normalised (``pooling="pooled"``: the pooled F for every place)."""
    prior = pooled * (PRIOR_CASES if pooling == "partial" else 1.0)
    columns = {}
    for place in places:
        own = timely.loc[timely["place"] == place, "delay"].to_numpy(int) if pooling == "partial" else []
        counts = np.bincount(own, minlength=len(pooled)) + prior
        columns[place] = np.append(counts.cumsum()[:-1] / counts.sum(), 1.0)  # all by max_delay
    return pd.DataFrame(columns, index=pd.RangeIndex(len(pooled)), columns=places)


def _table(observed: pd.DataFrame, by_place: pd.DataFrame, today: pd.Timestamp, length: int,
           max_delay: int) -> pd.DataFrame:
    long = observed.reset_index().melt(id_vars="period", var_name="region", value_name="count")
    long = long.sort_values(["region", "period"], kind="stable").reset_index(drop=True)
    since = (today - (long["period"] + pd.Timedelta(days=length - 1))).dt.days
    rows = since.clip(lower=0, upper=max_delay).to_numpy()
    cols = by_place.columns.get_indexer(long["region"])
    f = by_place.to_numpy()[rows, cols].copy()
    f[since.to_numpy() >= max_delay] = 1.0
    if (f < MIN_COMPLETENESS).any():
        raise InvalidInput(f"as_of: by the delays in the store, the latest period is {float(f.min()):.1%} "
                           "complete: too little to scale up (in a store loaded in bulk the delays are the "
                           "load's, not reporting's)", field="as_of")
    count = long["count"].to_numpy(np.int64)
    lo, hi = (count + np.where(f < 1.0, nbinom.ppf(q, count + 1, np.minimum(f, 1.0)), 0.0)
              for q in (0.05, 0.95))  # the cases still to come: NB(count + 1, F)
    return pd.DataFrame({"region": long["region"], "period": long["period"].dt.date.astype(str),
                         "count": count, "days_since_end": since.astype("int64"), "completeness": f.round(4),
                         "nowcast": (count / f).round(2), "nowcast_q05": lo, "nowcast_q95": hi})
