"""``healthai counts``: a store's surveillance counts as CSV, for analysts and for ``train forecast
--series`` / ``train backtest --series`` / ``healthai-client forecast --history`` (the long format
``region,period,count`` they read; ``--wide``: ``period`` + one column per region; ``--by-age``:
``region,age_group,period,count`` in ILINet's age groups).

    healthai counts --store var/store --syndrome ili --step W --level county --out counts.csv

The period under way (today's, this week's) is left out unless ``--include-unfinished``: its counts
are partial. ``--nowcast`` corrects the latest periods for reporting delay (``nowcast``); ``--alerts
C1|C2|C3`` flags counts that stand out from their region's recent past (``cli_alerts``,
``aberration``). Exit 2 on bad input (an unknown syndrome, a store folder that does not exist, ...).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import pandas as pd

from healthai.errors import InvalidInput
from healthai.surveillance import cli_alerts
from healthai.surveillance.counts import WEEK_DAYS
from healthai.surveillance.links import LEVELS
from healthai.surveillance.release import DEFAULT_MAX_CASES_PER_PATIENT
from healthai.surveillance.syndromes import SYNDROMES

EPSILON_RANGE = (1e-3, 20.0)  # what a per-patient count release can meaningfully claim (the CLI's bounds)

def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("counts", help="a store's surveillance counts (region or county x day or week), CSV")
    p.add_argument("--store", required=True, help="store URI: a folder (as `serve --store-uri`) or s3://...")
    p.add_argument("--syndrome", default="ili",
                   help=f"one of {', '.join(sorted(SYNDROMES))} or of --syndromes (default ili)")
    p.add_argument("--syndromes", type=Path, metavar="FILE",
                   help="TOML file of your own syndromes ([syndromes.NAME]: icd10, snomed, lab_loinc)")
    p.add_argument("--step", choices=("W", "D"), default="W", help="weeks or days")
    p.add_argument("--week-start", choices=WEEK_DAYS, default="monday",
                   help="the day weeks begin on: monday (ISO weeks) or sunday (MMWR weeks)")
    p.add_argument("--level", choices=LEVELS, default="region",
                   help="region: ISO 3166-2 (US-MA); county: US county FIPS (25017)")
    p.add_argument("--start", help="first period: an ISO date in it")
    p.add_argument("--end", help="last period: an ISO date in it (default: the period of the last case, "
                   "or the last that has ended when the case is in the period under way; later periods "
                   "with no case are not listed: give --end to list them as zeros)")
    p.add_argument("--include-unfinished", action="store_true",
                   help="keep the day or week under way (its counts are partial)")
    p.add_argument("--by-age", action="store_true",
                   help="one row per region, age group (ILINet: 0-4, 5-24, 25-49, 50-64, 65+, unknown) and "
                        "period: region,age_group,period,count")
    p.add_argument("--wide", action="store_true",
                   help="period + one column per region (default: long region,period,count)")
    p.add_argument("--suppress-below", type=int, default=0, metavar="N",
                   help="for publication: write counts from 1 to N-1 as empty cells (small-cell suppression; "
                        "no complementary suppression). Such a file is not a training series")
    p.add_argument("--out", type=Path, help="CSV file to write (default: standard output)")
    nc = p.add_argument_group("nowcast (reporting delays; healthai.surveillance.nowcast)")
    nc.add_argument("--nowcast", action="store_true",
                    help="add the latest periods' counts corrected for reporting delay, learnt from the "
                         "store's ingest dates: region,period,count,days_since_end,completeness,nowcast and "
                         "its 90 %% interval nowcast_q05,nowcast_q95")
    nc.add_argument("--as-of", metavar="DATE",
                    help="with --nowcast: what the store held on this day (default today, UTC)")
    nc.add_argument("--max-delay", type=int, default=28, metavar="DAYS",
                    help="with --nowcast: a period is complete this many days after it ended (default 28)")
    cli_alerts.add_arguments(p)
    dp = p.add_argument_group("differential privacy (per patient; healthai.surveillance.release)")
    dp.add_argument("--epsilon", type=float, default=None,
                    help="release the counts under epsilon-DP per patient (discrete Laplace noise, OpenDP); "
                         "needs --start, --end and the places (--regions or --graph; county level: all US "
                         "counties by default). Recorded in the store's privacy ledger")
    dp.add_argument("--max-cases-per-patient", type=int, default=DEFAULT_MAX_CASES_PER_PATIENT, metavar="C",
                    help=f"with --epsilon: place-days one patient may add (default "
                         f"{DEFAULT_MAX_CASES_PER_PATIENT}); the noise scale is C / epsilon")
    dp.add_argument("--regions", help="with --epsilon: the places to release, comma-separated")
    dp.add_argument("--graph", type=Path,
                    help="with --epsilon: the places to release are this graph file's region ids")
    dp.add_argument("--region-ids", type=Path, metavar="FILE",
                    help="with a headerless adjacency --graph: its rows' region ids, one per line")
    dp.add_argument("--keep-negative", action="store_true",
                    help="with --epsilon: keep negative noisy counts (unbiased sums; default: clamp to 0)")
    dp.add_argument("--stream", metavar="NAME",
                    help="with --epsilon: a continual release: each call releases only the periods that "
                         "ended since the stream's last one, each patient bounded to C place-days per "
                         "calendar year over all of them, so a year costs epsilon once (its first "
                         "call defines the stream: places, step, epsilon, C, --start)")
    dp.add_argument("--budget", type=float, default=None,
                    help="with --epsilon: refuse when this store's recorded releases and this one would "
                         "spend more than this epsilon in all")
    p.set_defaults(func=_counts)


def surveillance_counts(store, args: argparse.Namespace):
    """The store's counts with the built-in syndromes and those of ``--syndromes FILE``."""
    from healthai.surveillance.counts import SurveillanceCounts
    from healthai.surveillance.syndrome_file import load_syndromes

    return SurveillanceCounts(store, syndromes=load_syndromes(getattr(args, "syndromes", None)))


def _nowcast(args: argparse.Namespace) -> int:
    from healthai.store import ParquetStore
    from healthai.surveillance.nowcast import nowcast

    clash = [flag for flag, on in (("--wide", args.wide), ("--by-age", args.by_age),
                                   ("--epsilon", args.epsilon is not None), ("--end", args.end is not None),
                                   ("--include-unfinished", args.include_unfinished),
                                   ("--suppress-below", args.suppress_below > 0)) if on]
    if not args.nowcast or clash:
        print("healthai counts: --as-of and --max-delay go with --nowcast" if not args.nowcast else
              f"healthai counts: --nowcast writes long rows of every period that has ended by --as-of, "
              f"exact counts only: not with {', '.join(clash)}", file=sys.stderr)
        return 2
    store = ParquetStore(args.store).open()
    try:
        got = nowcast(surveillance_counts(store, args), syndrome=args.syndrome, freq=args.step,
                      level=args.level,
                      week_start=args.week_start, as_of=args.as_of, start=args.start,
                      max_delay=args.max_delay)
    except InvalidInput as e:
        print(f"healthai counts: {e.message}", file=sys.stderr)
        return 2
    finally:
        store.close()
    got.table.to_csv(args.out if args.out is not None else sys.stdout, index=False)
    if not (got.table["days_since_end"] < args.max_delay).any():  # nothing estimated: no dates to name
        print(f"healthai counts: nowcast: no period listed ended less than {args.max_delay} days before "
              f"{args.as_of or 'today'}: every count is final (nowcast = count), nothing to correct",
              file=sys.stderr)
        return 0
    f = got.completeness
    shown = ", ".join(f"{d} d {f[d]:.0%}" for d in sorted({0, 7, 14, len(f) - 1}) if d < len(f))
    print(f"healthai counts: nowcast: chain ladder on the reporting triangle of the periods {got.window[0]} "
          f"to {got.window[1]} ({got.cases_in_window} cases in the mature ones), each place's own delays "
          f"shrunk toward the pooled ones (the completeness column); pooled, complete by days after a "
          f"period's end: {shown}; {got.backfilled} cases stored later than {args.max_delay} days "
          f"(backfill) count as observed only; {got.load_days} days that stored more late records than "
          "timely ones (loads of history) teach no delays. The 90 % interval counts the completeness's "
          "estimation error, not a change in the delays: too narrow when they change", file=sys.stderr)
    return 0


def _say_last_case(last: pd.Timestamp, today: dt.date, step: str, week_start: str) -> None:
    """The table ends with the last case's period; say so when later periods have ended too (a store
    of history, a quiet feed): their zeros are listed only when --end names them."""
    from healthai.surveillance.counts import period_start

    ended = period_start(today, step, week_start) - pd.Timedelta(days=1)  # the last ended period's last day
    if ended > last + pd.Timedelta(days=6 if step == "W" else 0):
        print(f"healthai counts: no case after the period of {last.date()}; the periods since then that "
              f"have ended are not listed: --end {ended.date()} lists them as zeros", file=sys.stderr)


def _counts(args: argparse.Namespace) -> int:
    from healthai.store import ParquetStore

    if args.suppress_below < 0:
        print("healthai counts: --suppress-below must be >= 0", file=sys.stderr)
        return 2
    if args.by_age and args.wide:
        print("healthai counts: --by-age writes long rows only (not --wide)", file=sys.stderr)
        return 2
    if "://" not in args.store and not Path(args.store).expanduser().is_dir():
        print(f"healthai counts: store {args.store}: no such directory", file=sys.stderr)
        return 2
    private = any(v is not None for v in (args.epsilon, args.regions, args.graph, args.budget,
                                          args.region_ids, args.stream)) \
        or args.keep_negative or args.max_cases_per_patient != DEFAULT_MAX_CASES_PER_PATIENT
    if private and args.epsilon is None:
        print("healthai counts: --regions, --graph, --region-ids, --stream, --budget, --keep-negative and "
              "--max-cases-per-patient go with --epsilon", file=sys.stderr)
        return 2
    if args.epsilon is not None and not EPSILON_RANGE[0] <= args.epsilon <= EPSILON_RANGE[1]:
        print(f"healthai counts: --epsilon {args.epsilon:g} is outside [{EPSILON_RANGE[0]:g}, "
              f"{EPSILON_RANGE[1]:g}]: below, the noise drowns every count; above, the counts are as good "
              "as exact and the release would be recorded as private while protecting no one",
              file=sys.stderr)
        return 2
    if args.alerts is not None or args.alert_threshold is not None:
        return cli_alerts.run(args)
    if args.nowcast or args.as_of is not None or args.max_delay != 28:
        return _nowcast(args)
    store = ParquetStore(args.store).open()
    today = None if args.include_unfinished else dt.datetime.now(dt.UTC).date()
    release = None
    try:
        counts = surveillance_counts(store, args)
        query = {"start": args.start, "end": args.end, "completed_by": today, "level": args.level,
                 "week_start": args.week_start}
        if private:
            release = _private(store, counts, args, query)
            if release is None:  # a stream with no newly ended period
                print(f"healthai counts: stream {args.stream}: no period has ended since its last release; "
                      "nothing released, nothing spent", file=sys.stderr)
                return 0
            frame = release.frame
        else:
            query_counts = counts.counts_by_age if args.by_age else counts.counts
            frame = query_counts(args.syndrome, args.step, **query)
        uncounted = counts.uncounted(args.syndrome, args.level)
    except InvalidInput as e:
        print(f"healthai counts: {e.message}", file=sys.stderr)
        return 2
    finally:
        store.close()
    keys = ["region", "age_group"] if args.by_age else ["region"]
    table = _wide(frame) if args.wide else _long(frame, keys)
    table, suppressed = _suppress(table, [c for c in table.columns if c not in (*keys, "period")],
                                  args.suppress_below)
    table.to_csv(args.out if args.out is not None else sys.stdout, index=False)
    places = frame.columns.get_level_values(0).nunique() if len(frame.columns) else 0
    noun = {"region": "regions", "county": "counties"}[args.level]
    where = f"{len(frame)} {'weeks' if args.step == 'W' else 'days'} x {places} {noun}"
    total = f"{int(frame.to_numpy().sum())} {'noisy ' if release else ''}cases"
    print(f"healthai counts: {args.syndrome}, {where}, {total}; {uncounted} "
          f"matching records wait for a {args.level} or a date"
          + (f"; {suppressed} cells under {args.suppress_below} left empty" if args.suppress_below else ""),
          file=sys.stderr)
    if release is None and args.end is None and today is not None and len(frame):
        _say_last_case(frame.index[-1], today, args.step, args.week_start)
    if release is not None:
        _say_private(release, args)
    return 0


def _private(store, counts, args: argparse.Namespace, query: dict):
    """The private release of the asked counts, checked against --budget and recorded in the ledger."""
    from healthai.surveillance import release as dp_release
    from healthai.surveillance.graph_file import graph_region_ids
    from healthai.surveillance.matrix_file import read_region_ids

    if args.regions is not None and args.graph is not None:
        raise InvalidInput("give the places by --regions or --graph, not both", field="regions")
    if args.region_ids is not None and args.graph is None:
        raise InvalidInput("--region-ids names a headerless --graph file's rows: it needs --graph",
                           field="region_ids")
    named = read_region_ids(args.region_ids)[0] if args.region_ids is not None else None
    regions = (args.regions.split(",") if args.regions is not None
               else graph_region_ids(args.graph, None, named) if args.graph is not None else None)
    spent, n = dp_release.spent(store)
    if args.stream is not None:
        return _stream_release(store, counts, args, query, regions, spent, n)
    if args.budget is not None and spent + args.epsilon > args.budget + 1e-12:
        raise InvalidInput(f"epsilon: this store's {n} recorded releases have spent {spent:g}; another "
                           f"{args.epsilon:g} would pass the budget of {args.budget:g}", field="epsilon")
    out = dp_release.private_counts(
        counts, epsilon=args.epsilon, regions=regions, syndrome=args.syndrome, freq=args.step,
        max_cases_per_patient=args.max_cases_per_patient, nonnegative=not args.keep_negative,
        by_age=args.by_age, **query)
    what = {"syndrome": args.syndrome, "step": args.step, "level": args.level, "week_start": args.week_start,
            "by_age": args.by_age, "use": "healthai counts", "out": str(args.out) if args.out else None,
            "complete_periods": query["completed_by"] is not None}
    args.ledger_entry, entry = dp_release.record(store, out, what, budget=args.budget)  # checked again:
    # another release may have been recorded since the check above
    args.spent = (spent + out.epsilon, n + 1)
    if args.out is not None:  # the ledger entry, beside the published file
        args.out.with_suffix(".privacy.json").write_text(entry)
    return out


def _stream_release(store, counts, args: argparse.Namespace, query: dict, regions, spent: float, n: int):
    """The periods of stream ``--stream`` that ended since its last release (``stream``), or None."""
    from healthai.surveillance import stream

    if args.by_age or query["completed_by"] is None:
        raise InvalidInput("--stream releases whole ended periods by place: not with --by-age or "
                           "--include-unfinished", field="stream")
    if args.start is None:
        raise InvalidInput("start is required for a private release: periods taken from the data would "
                           "show when the first and last cases were (a stream's start: its first period)",
                           field="start")
    spec = stream.define(store, name=args.stream, syndrome=args.syndrome, step=args.step, level=args.level,
                         week_start=args.week_start, places=regions, epsilon=args.epsilon,
                         max_cases_per_patient=args.max_cases_per_patient, start=args.start)
    what = {"use": "healthai counts --stream", "out": str(args.out) if args.out else None}
    out = stream.release_new_periods(counts, store, spec, completed_by=query["completed_by"], end=args.end,
                                     nonnegative=not args.keep_negative, budget=args.budget, what=what)
    if out is None:
        return None
    args.ledger_entry = out.path
    args.spent = (spent + out.charged, n + 1)
    args.charged = (out.charged, out.years)
    if args.out is not None:
        args.out.with_suffix(".privacy.json").write_text(out.text)
    return out.release


def _say_private(release, args: argparse.Namespace) -> None:
    """For the operator (stderr): the guarantee, what the bound left out, the store's running total."""
    card = release.card()
    clamped = ", negatives clamped to 0" if card["nonnegative"] else ""
    if getattr(args, "charged", None) is not None:
        charged, years = args.charged
        print(f"healthai counts: stream {args.stream}: periods of {', '.join(map(str, years))}; epsilon "
              f"{card['epsilon']:g} per patient and calendar year over all the stream's releases, "
              f"{charged:g} charged now (a year's first release)", file=sys.stderr)
    print(f"healthai counts: private release: epsilon {card['epsilon']:g} per patient (delta 0, OpenDP), "
          f"at most {card['max_cases_per_patient']} place-days per patient, noise scale "
          f"{card['noise_scale']:g} (sd {card['noise_sd']:.1f} "
          f"per cell{clamped}); left out: {release.left_out_by_bound} "
          f"case-days beyond the bound, {release.unattributed} cases "
          f"without a patient (operator only: not in the release). This store's releases: {args.spent[1]}, "
          f"epsilon {args.spent[0]:g} in all; ledger {args.ledger_entry}", file=sys.stderr)


def _period_labels(frame: pd.DataFrame) -> list[str]:
    return [t.date().isoformat() for t in frame.index]


def _long(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """``keys`` (region[, age_group]),period,count rows: one per column (a tuple by age) and period."""
    periods = _period_labels(frame)
    rows = [(*(col if isinstance(col, tuple) else (col,)), period, int(n)) for col in frame.columns
            for period, n in zip(periods, frame[col].to_numpy(), strict=True)]
    return pd.DataFrame(rows, columns=[*keys, "period", "count"])


def _suppress(table: pd.DataFrame, columns: list[str], below: int) -> tuple[pd.DataFrame, int]:
    """``table`` with the counts from 1 to ``below`` - 1 of ``columns`` emptied, and how many."""
    if below <= 1:
        return table, 0
    table = table.astype({c: "Int64" for c in columns})
    small = (table[columns] > 0) & (table[columns] < below)
    table[columns] = table[columns].mask(small)
    return table, int(small.to_numpy().sum())


def _wide(frame: pd.DataFrame) -> pd.DataFrame:
    wide = frame.copy()
    wide.insert(0, "period", _period_labels(frame))
    return wide
