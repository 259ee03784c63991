"""``healthai counts --alerts C1|C2|C3``: EARS aberration flags per region and period
(``healthai.surveillance.aberration``), on the stored counts or, with ``--nowcast``, on their nowcasts."""

from __future__ import annotations

import argparse
import datetime as dt
import sys

import pandas as pd

from healthai.errors import InvalidInput
from healthai.surveillance.aberration import METHODS, THRESHOLD


def add_arguments(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("alerts (aberration detection; healthai.surveillance.aberration)")
    group.add_argument("--alerts", choices=METHODS, default=None,
                       help="flag each region's counts that stand out from its own recent past (CDC EARS: "
                            "C1 against the 7 periods before, C2 the same with a 2-period guard band, C3 "
                            "C2's excess summed over 3 periods): region,period,count,expected,sd,statistic,"
                            "upper_bound,alarm")
    group.add_argument("--alert-threshold", type=float, default=None, metavar="X",
                       help=f"with --alerts: the statistic that raises an alarm (default "
                            f"{', '.join(f'{m} {t:g}' for m, t in THRESHOLD.items())})")


def run(args: argparse.Namespace) -> int:
    from healthai.store import ParquetStore
    from healthai.surveillance.aberration import alerts
    from healthai.surveillance.nowcast import nowcast

    clash = [flag for flag, on in (("--wide", args.wide), ("--by-age", args.by_age),
                                   ("--epsilon", args.epsilon is not None),
                                   ("--include-unfinished", args.include_unfinished),
                                   ("--suppress-below", args.suppress_below > 0),
                                   ("--end (with --nowcast: --as-of)", args.nowcast and args.end is not None))
             if on]
    if args.alerts is None or clash:
        print("healthai counts: --alert-threshold goes with --alerts" if args.alerts is None else
              "healthai counts: --alerts writes long rows of exact counts (or their nowcasts: --nowcast; "
              f"the period under way is partial): not with {', '.join(clash)}", file=sys.stderr)
        return 2
    if not args.nowcast and (args.as_of is not None or args.max_delay != 28):
        print("healthai counts: --as-of and --max-delay go with --nowcast", file=sys.stderr)
        return 2
    from healthai.surveillance.cli import surveillance_counts

    store = ParquetStore(args.store).open()
    try:
        counts = surveillance_counts(store, args)
        if args.nowcast:
            got = nowcast(counts, syndrome=args.syndrome, freq=args.step, level=args.level,
                          week_start=args.week_start, as_of=args.as_of, start=args.start,
                          max_delay=args.max_delay)
            frame = got.table.pivot(index="period", columns="region", values="nowcast")
            frame.index = pd.DatetimeIndex(frame.index)
        else:
            frame = counts.counts(
                args.syndrome, args.step, start=args.start, end=args.end, level=args.level,
                completed_by=dt.datetime.now(dt.UTC).date(), week_start=args.week_start)
        table = alerts(frame, args.alerts, args.alert_threshold)
    except InvalidInput as e:
        print(f"healthai counts: {e.message}", file=sys.stderr)
        return 2
    finally:
        store.close()
    table.to_csv(args.out if args.out is not None else sys.stdout, index=False)
    last = table[table["period"] == table["period"].max()] if len(table) else table
    flagged = last.loc[last["alarm"], "region"].tolist()
    judged = table["period"].nunique()
    print(f"healthai counts: {args.alerts} on {'nowcasts' if args.nowcast else 'stored counts'}: "
          f"{int(table['alarm'].sum())} alarms over {judged} periods judged"
          + (f"; in the latest ({last['period'].iloc[0]}): {_regions(flagged)}" if len(last) else
             "; too few periods for a baseline"), file=sys.stderr)
    return 0


def _regions(flagged: list[str]) -> str:
    if not flagged:
        return "none"
    return f"{len(flagged)} ({', '.join(flagged[:10])}{' ...' if len(flagged) > 10 else ''})"
