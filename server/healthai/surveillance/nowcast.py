"""Nowcasts of the latest periods' counts, corrected for reporting delay (``healthai counts --nowcast``).

Records reach the store days or weeks after the diagnosis, so the last periods' counts are low: not
fewer cases, cases not stored yet. A case is *reported* on the ingest date of the part file it was
first stored in (the UTC day of the commit; a record sent again is not stored again). Its *delay* is
that day minus the last day of its period (0 or less: stored by the time the period ended).

Method (the multiplicative chain ladder of reporting-triangle nowcasts): the target is each period's
count of cases reported within ``max_delay`` days of its end. F(d), the share of those cases reported
within d days, is a product of development factors, F(d) = prod_{k >= d} S_k / T_k: S_k and T_k count
the cases reported within k and k + 1 days of their period's end, over every period of the window
(the ``window_days`` before the mature ones, which ended at least ``max_delay`` days before
``as_of``, and every period since) that is at least k + 1 days past its end. So the first days'
factors learn from the latest periods too, and a change in the delays shows sooner than in the
mature periods' shares alone (``development="mature"``, the earlier estimator). A period that ended
d < ``max_delay`` days before ``as_of`` has its observed count (cases reported up to ``as_of``)
divided by F(d). Older periods are mature: their nowcast is what was observed. Cases reported later
than ``max_delay`` (backfill) are kept in the observed count but tell nothing about F, and neither
does a day that stored more such late records than timely ones: a load of history (a bulk load, a
migration), whose delays are the load's.

Places report at their own pace (one hospital sends daily, another in a weekly batch), so each place
has its own F, partially pooled (``pooling="partial"``, the default): its delay counts plus
``PRIOR_CASES`` cases developed as the pooled F (a virtual mature period added to its triangle),
so a place with few cases keeps close to the pooled F and one with many follows its own.
``PRIOR_CASES`` is ``MIN_CASES``, the fewest cases F is learned from at all: set before any
benchmark, not tuned. ``pooling="pooled"``: one F for every place.

The 90 % interval (``nowcast_q05``, ``nowcast_q95``) treats the observed count O as a binomial thinning
of the final count N with probability F, under a flat prior on N: given F, the cases still to come
are negative binomial, N − O ~ NB(O + 1, F). F is as uncertain as the cases behind it
(``interval="beta"``, the default): F ~ Beta(n F, n (1 − F)), n = the place's timely cases in the
mature periods (+ ``PRIOR_CASES`` when partially pooled), so N − O is beta-negative-binomial
(``interval="known"``: F taken as known). A change in the delays is not modelled:
``benchmarks/nowcast.py`` measures how often it covers.

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
from scipy.stats import betanbinom, nbinom

from healthai.errors import InvalidInput
from healthai.store import ParquetStore
from healthai.surveillance import counts as sc

MAX_DELAY_DAYS = 28
WINDOW_DAYS = 84
MIN_CASES = 20
MIN_COMPLETENESS = 0.05
PRIOR_CASES = MIN_CASES  # weight of the pooled delays in each place's F (partial pooling)
POOLINGS = ("partial", "pooled")
DEVELOPMENTS = ("triangle", "mature")
INTERVALS = ("beta", "known")  # F's own estimation error in the interval, or F taken as known


@dataclass(frozen=True)
class Nowcast:
    table: pd.DataFrame  # region, period, count (observed), days_since_end, completeness, nowcast
    completeness: pd.Series  # pooled F(d), d = 0..max_delay days after a period's end
    cases_in_window: int  # mature cases (delay <= max_delay) F was estimated from
    window: tuple[str, str]  # first and last period start of the estimation window
    backfilled: int  # cases reported more than max_delay days after their period ended
    pooling: str = "partial"
    development: str = "triangle"
    load_days: int = 0  # report days left out of learning: they stored more late records than timely ones
    interval: str = "beta"
    evidence: pd.Series | None = None  # per place: the cases behind its F (interval "beta")

    def card(self) -> dict:
        places = ("each place's own delays plus the pooled delays with the weight of "
                  f"{PRIOR_CASES} cases" if self.pooling == "partial" else "pooled over places")
        developed = ("development factors over every period of the window, the latest ones as far as they "
                     "have developed" if self.development == "triangle" else "the mature periods' shares")
        return {"method": f"multiplicative chain ladder on the store's ingest dates ({developed}), F per "
                f"place: {places}",
                "max_delay_days": int(len(self.completeness) - 1), "estimated_on_periods": list(self.window),
                "cases_in_window": self.cases_in_window, "backfilled_cases": self.backfilled,
                "load_days": self.load_days,
                "pooling": self.pooling, "development": self.development,
                "completeness_by_days_since_end": [round(float(v), 4) for v in self.completeness],
                "interval": "90 %: cases still to come ~ NegBin(observed + 1, F), " + (
                    "F ~ Beta(n F, n (1 - F)) with n the cases behind the place's F (its estimation error; "
                    "changing delays are not modelled)" if self.interval == "beta" else
                    "F taken as known (its own error and changing delays are not modelled)")}


def nowcast(source: ParquetStore | sc.SurveillanceCounts, *, syndrome: str = "ili", freq: str = "W",
            level: str = "region", week_start: str = "monday", as_of: date | str | None = None,
            start: date | str | None = None, max_delay: int = MAX_DELAY_DAYS,
            window_days: int = WINDOW_DAYS, pooling: str = "partial", development: str = "triangle",
            interval: str = "beta") -> Nowcast:
    """Every period that ended before ``as_of`` (default today, UTC), from ``start``: observed counts of
    the cases reported up to ``as_of`` and their nowcast (see the module docstring). ``source``: a
    store, or its :class:`~healthai.surveillance.SurveillanceCounts` (which reads each file once, so a
    server asking often reads only what was committed since)."""
    if not 1 <= max_delay <= 365:
        raise InvalidInput(f"max_delay must be 1 to 365 days, got {max_delay}", field="max_delay")
    if pooling not in POOLINGS:
        raise InvalidInput(f"pooling {pooling!r} is not one of {', '.join(POOLINGS)}", field="pooling")
    if interval not in INTERVALS:
        raise InvalidInput(f"interval {interval!r} is not one of {', '.join(INTERVALS)}", field="interval")
    if development not in DEVELOPMENTS:
        raise InvalidInput(f"development {development!r} is not one of {', '.join(DEVELOPMENTS)}",
                           field="development")
    utc_today = dt.datetime.now(dt.UTC).date()
    today = sc._to_timestamp(as_of, "as_of") if as_of is not None else pd.Timestamp(utc_today)
    counts = source if isinstance(source, sc.SurveillanceCounts) else sc.SurveillanceCounts(source)
    return nowcast_cases(counts.cases(syndrome, level), today=today, freq=freq, week_start=week_start,
                         start=start, max_delay=max_delay, window_days=window_days, pooling=pooling,
                         development=development, interval=interval,
                         unplaced=(level, counts.uncounted(syndrome, level)))


def nowcast_cases(cases: pd.DataFrame, *, today: pd.Timestamp, freq: str = "W", week_start: str = "monday",
                  start: date | str | None = None, max_delay: int = MAX_DELAY_DAYS,
                  window_days: int = WINDOW_DAYS, pooling: str = "partial", development: str = "triangle",
                  interval: str = "beta", unplaced: tuple[str, int] = ("region", 0)) -> Nowcast:
    """:func:`nowcast` of ``cases`` (``patient_id, place, day, reported``: each case with the day the
    store first held it) as known on ``today``; the options are checked by :func:`nowcast`.
    ``unplaced``: the level counted and how many matching records were left out of ``cases`` for want
    of a place of that level or a date (named when too few cases are left)."""
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
    loads = _load_days(cases, max_delay)
    live = cases[~cases["reported"].isin(loads)]  # what reporting's delays can be learned from
    mature_end = today - pd.Timedelta(days=max_delay)
    oldest = mature_end - pd.Timedelta(days=window_days)
    window = live[(live["end"] <= mature_end) & (live["end"] > oldest)]
    timely = window[window["delay"] <= max_delay]
    observed = sc.period_table(sc.daily_counts(cases[["patient_id", "place", "day"]]), freq, start, None,
                               None, today.date(), week_start)
    immature = observed.empty or observed.index[-1] + pd.Timedelta(days=length - 1) > mature_end
    if len(timely) < MIN_CASES and immature:
        level, waiting = unplaced
        why = []
        if waiting:  # e.g. at county level, records placed by their state only
            why.append(f"{waiting} matching record{'s' if waiting != 1 else ''} of the store have no {level} "
                       "or no date and are not counted at this level")
        if loads.size or not waiting:
            why.append(f"a store loaded in bulk has no delays to learn from: {len(loads)} days stored more "
                       "records late than in time and count as loads")
        raise InvalidInput(
            f"as_of: the {window_days} days of periods that ended {max_delay} or more days before "
            f"{today.date()} hold {len(timely)} case{'s' if len(timely) != 1 else ''} stored within "
            f"{max_delay} days; a nowcast needs {MIN_CASES} ({'; '.join(why)})", field="as_of")
    developing = live[(live["end"] > oldest) & (live["delay"] <= max_delay)]
    if development == "mature":
        developing = developing[developing["end"] <= mature_end]
    age = (today - developing["end"]).dt.days.to_numpy(int)
    delay = developing["delay"].to_numpy(int)
    immature = immature and len(timely) >= MIN_CASES  # else every period is mature: nothing to correct
    pooled = _completeness(delay, age, max_delay) if immature else np.ones(max_delay + 1)
    completeness = pd.Series(pooled, index=pd.RangeIndex(max_delay + 1, name="days_since_end"))
    rows = developing.groupby("place").indices if pooling == "partial" and immature else {}
    none = np.zeros(0, int)
    by_place = {place: _completeness(delay[rows.get(place, none)], age[rows.get(place, none)], max_delay,
                                     prior=pooled) if rows else pooled for place in observed.columns}
    evidence = None
    if interval == "beta":  # the cases behind each place's F: its timely mature ones (+ the prior's)
        own = timely.groupby("place").size().reindex(observed.columns, fill_value=0).astype(np.float64)
        evidence = own + PRIOR_CASES if pooling == "partial" else pd.Series(float(len(timely)), own.index)
    table = _table(observed, pd.DataFrame(by_place, columns=observed.columns), today, length, max_delay,
                   evidence)
    span = developing["period"]
    return Nowcast(table, completeness, len(timely),
                   (str(span.min().date()), str(span.max().date())) if len(span) else ("", ""),
                   int((cases["delay"] > max_delay).sum()), pooling, development, len(loads), interval,
                   evidence)


def _load_days(cases: pd.DataFrame, max_delay: int) -> pd.Index:
    """Report days that stored more records late (more than ``max_delay`` days after their period) than
    in time: loads of history (a bulk load, a migration), whose delays are the load's, not reporting's.
    A live feed's odd late correction is a minority of its day."""
    late = (cases["delay"] > max_delay).groupby(cases["reported"]).mean()
    return late.index[late > 0.5]


def _completeness(delay: np.ndarray, age: np.ndarray, max_delay: int, prior: np.ndarray | None = None
                  ) -> np.ndarray:
    """F(d), d = 0..max_delay, by development factors: ``F(d) = prod_{k >= d} S_k / T_k`` where S_k and
    T_k count the cases reported within k and k + 1 days of their period's end, over the periods at
    least k + 1 days past their end (``age``; ``delay`` <= max_delay: timely cases only). ``prior``:
    a virtual period of ``PRIOR_CASES`` cases developed as ``prior`` (F) is added (partial pooling)."""
    d = max_delay
    last = np.minimum(age - 1, d - 1)  # the latest factor each case's period has reached
    s = _ranges(delay, last, d)  # k in [delay, last]: within k days, period past k + 1
    t = _ranges(np.maximum(delay - 1, 0), last, d)  # k in [delay - 1, last]: within k + 1 days
    if prior is not None:
        s, t = s + PRIOR_CASES * prior[:-1], t + PRIOR_CASES * prior[1:]
    ratio = np.divide(s, t, out=np.ones(d), where=t > 0)
    return np.append(np.cumprod(ratio[::-1])[::-1], 1.0)


def _ranges(lo: np.ndarray, hi: np.ndarray, n: int) -> np.ndarray:
    """How many of the integer ranges [lo, hi] (inclusive; empty where lo > hi) hold each of 0..n-1."""
    keep = lo <= hi
    starts = np.bincount(lo[keep], minlength=n + 1)[: n + 1]
    return np.cumsum(starts - np.bincount(hi[keep] + 1, minlength=n + 1)[: n + 1])[:n].astype(np.float64)


def _still_to_come(q: float, count: np.ndarray, f: np.ndarray, evidence: np.ndarray | None) -> np.ndarray:
    """Quantile ``q`` of the cases not stored yet: NB(count + 1, F) given F (the count a binomial
    thinning of the final one, a flat prior on it); with ``evidence`` n, F ~ Beta(n F, n (1 - F)), so
    beta-negative-binomial. Zero where F = 1 (mature)."""
    out = np.zeros(len(count))
    open_ = f < 1.0
    if evidence is None:
        out[open_] = nbinom.ppf(q, count[open_] + 1, f[open_])
    else:
        n = evidence[open_]
        out[open_] = betanbinom.ppf(q, count[open_] + 1, n * f[open_], n * (1.0 - f[open_]))
    return out


def _table(observed: pd.DataFrame, by_place: pd.DataFrame, today: pd.Timestamp, length: int,
           max_delay: int, evidence: pd.Series | None) -> pd.DataFrame:
    """The long table; ``evidence``: cases behind each place's F (None: F taken as known)."""
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
    lo, hi = (count + _still_to_come(q, count, f, None if evidence is None else
                                     evidence.reindex(long["region"]).to_numpy(np.float64))
              for q in (0.05, 0.95))
    return pd.DataFrame({"region": long["region"], "period": long["period"].dt.date.astype(str),
                         "count": count, "days_since_end": since.astype("int64"), "completeness": f.round(4),
                         "nowcast": (count / f).round(2), "nowcast_q05": lo, "nowcast_q95": hi})
