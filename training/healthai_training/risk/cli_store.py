"""``healthai train risk --from-store URI``: the store cohort (``risk.store_cohort``) is written as a
table + TOML spec into a cohort folder, then trained by the ``--table``/``--spec`` path (same DP-SGD,
card with domains, ONNX export and serving)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

from healthai_training.errors import TrainingInputError
from healthai_training.risk.store_options import INDEX_ENCOUNTERS, OUTCOMES, PER_PATIENT, StoreCohortOptions


def _date(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--data-end must be an ISO date or date-time, got {text!r}") \
            from exc
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def add_store_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("store cohort (--from-store)")
    g.add_argument("--from-store", default=None, metavar="URI",
                   help="build the cohort from an ingest store (ParquetStore path or URI) instead of --table")
    g.add_argument("--outcome", choices=OUTCOMES, default="readmission30",
                   help="readmission30: an inpatient admission within --window-days after index discharge")
    g.add_argument("--index-encounter", choices=INDEX_ENCOUNTERS, default="inpatient",
                   help="which encounters are index encounters (default inpatient, class IMP)")
    g.add_argument("--per-patient", choices=PER_PATIENT, default="all",
                   help="all: every index, grouped per patient for DP-SGD; first/last/random: one each")
    g.add_argument("--window-days", type=int, default=30)
    g.add_argument("--min-age", type=float, default=18.0, help="least age at discharge (years)")
    g.add_argument("--data-end", type=_date, default=None,
                   help="last date the data cover (default: the latest admission or discharge stored from "
                        "each source); index encounters whose window ends later are excluded")
    g.add_argument("--min-measured", type=int, default=10,
                   help="leave out measurements stored for fewer patients than this (0: keep all)")
    g.add_argument("--cohort-dir", type=Path, default=None,
                   help="where cohort.parquet, cohort.toml and cohort_report.json go "
                        "(default a new store-cohort-* folder under --runs-dir)")


def store_table(args: argparse.Namespace) -> tuple[Path, Path]:
    """Builds and writes the store cohort of ``args``; returns (table, spec) for ``--table``/``--spec``."""
    from healthai_training.common import make_run_dir
    from healthai_training.risk.store_cohort import build_store_cohort

    if args.table is not None or args.spec is not None or args.dataset is not None:
        raise TrainingInputError("give --from-store, or --table/--spec, or --dataset: one of them",
                                 field="from_store")
    options = StoreCohortOptions(
        outcome=args.outcome, index_encounter=args.index_encounter, per_patient=args.per_patient,
        window_days=args.window_days, min_age=args.min_age, min_measured=args.min_measured,
        data_end=args.data_end, seed=args.seeds[0],
        name=args.model_name.removeprefix("risk_") if args.model_name else None,
    )
    cohort = build_store_cohort(args.from_store, options)
    folder = args.cohort_dir or make_run_dir(args.runs_dir, "store-cohort")
    table, spec = cohort.write(folder)
    print(json.dumps({"cohort_dir": str(folder), **cohort.report["counts"]}))
    return table, spec
