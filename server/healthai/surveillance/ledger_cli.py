"""``healthai privacy-ledger``: what a store's private releases have spent, one line per release
(``healthai counts --epsilon``, ``train forecast --count-epsilon``), and the total: what an operator
checks before the next release, without making one.

    healthai privacy-ledger --store var/store [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SHOWN = ("released_at", "use", "stream", "syndrome", "level", "step", "first_period", "last_period", "cells",
         "epsilon", "epsilon_charged", "max_cases_per_patient")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("privacy-ledger", help="a store's private releases and the epsilon they spent")
    p.add_argument("--store", required=True, help="store URI: a folder (as `serve --store-uri`) or s3://...")
    p.add_argument("--json", action="store_true", help="the entries as JSON (every field)")
    p.set_defaults(func=_ledger)


def _ledger(args: argparse.Namespace) -> int:
    from healthai.store import ParquetStore
    from healthai.surveillance.release import entries, epsilon_spent

    if "://" not in args.store and not Path(args.store).expanduser().is_dir():
        print(f"healthai privacy-ledger: store {args.store}: no such directory", file=sys.stderr)
        return 2
    found = entries(ParquetStore(args.store))
    total = epsilon_spent(found)
    if args.json:
        releases = [{"entry": name, **e} for name, e in found]
        print(json.dumps({"epsilon_spent": total, "releases": releases}, indent=1))
        return 0
    print("\t".join(("entry", *SHOWN, "table kept")))
    for name, e in found:
        print("\t".join((name, *(str(e.get(k, "")) for k in SHOWN), "yes" if e.get("table") else "no")))
    print(f"{len(found)} releases, epsilon {total:g} spent in all (per patient; delta 0)", file=sys.stderr)
    return 0
