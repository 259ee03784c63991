"""The forecaster's data flags (``--series/--graph/--from-store ...``), shared by ``train forecast`` and
``train backtest``, and ``healthai train backtest`` itself."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from healthai.surveillance.counts import WEEK_DAYS
from healthai_training.errors import TrainingInputError


def add_data_flags(p: argparse.ArgumentParser) -> None:
    data = p.add_argument_group("your own data (instead of --dataset)")
    src = data.add_mutually_exclusive_group()
    src.add_argument(
        "--series",
        type=Path,
        default=None,
        help="CSV/Parquet counts: long (region, period, count) or wide (period + one column per region)",
    )
    src.add_argument(
        "--from-store",
        default=None,
        metavar="URI",
        help="the store's surveillance counts (a ParquetStore path or URI) instead of --series",
    )
    data.add_argument("--series-start", default=None, metavar="DATE",
                      help="--series is a headerless matrix (rows = periods, columns = regions, as the "
                           "published benchmarks ship it): the first row's period (needs --step)")
    data.add_argument("--region-ids", type=Path, default=None, metavar="FILE",
                      help="names of a headerless matrix's columns (series and graph), one per line: id or "
                           "id,name (default: by position, r01, r02, ...); with --from-store and a built-in "
                           "graph: the model's regions (default: every region the store has cases in)")
    data.add_argument("--columns", type=_names, default=None, metavar="REGION,PERIOD,COUNT",
                      help="a long --series file's own column names for region, period and count (its other "
                           "columns are ignored); hubverse target data (location, target_end_date, "
                           "observation) is recognised without it")
    data.add_argument("--target", default=None, metavar="NAME",
                      help="a long --series file with a 'target' column holding several series: the one "
                           "to use")
    data.add_argument("--exclude-regions", type=_names, default=(), metavar="IDS",
                      help="comma-separated regions to leave out: of --series (a national total such as US "
                           "beside its states), or with --from-store of the model's regions")
    data.add_argument("--syndrome", default="ili", help="with --from-store: which syndrome's counts")
    data.add_argument("--syndromes", type=Path, default=None, metavar="FILE",
                      help="with --from-store: a TOML file of your own syndromes ([syndromes.NAME]: icd10, "
                           "snomed, lab_loinc) beside the built-in ones")
    data.add_argument("--week-start", default="monday", choices=WEEK_DAYS,
                      help="with --from-store and weekly steps: the day weeks begin on (monday: ISO weeks; "
                           "sunday: MMWR weeks)")
    data.add_argument("--count-epsilon", type=float, default=None,
                      help="with --from-store: train on the counts released under this epsilon-DP per "
                           "patient (discrete Laplace, OpenDP; recorded in the store's privacy ledger); the "
                           "card's privacy unit is then the patient")
    data.add_argument("--count-start", default=None,
                      help="with --count-epsilon (required): the first period, an ISO date in it")
    data.add_argument("--count-end", default=None,
                      help="with --count-epsilon: the last period, an ISO date in it (default: the last "
                           "period that has ended)")
    data.add_argument("--max-cases-per-patient", type=int, default=None, metavar="C",
                      help="with --count-epsilon: place-days one patient may add (default 4)")
    data.add_argument(
        "--graph",
        type=Path,
        default=None,
        help="edge list CSV (source,target[,weight]), square adjacency CSV (with an id header, or none: "
        "regions by position or --region-ids), or GeoJSON; or a built-in graph: us-states (FIPS, USPS or "
        "ISO 3166-2 ids), us-counties (county FIPS ids)",
    )
    data.add_argument(
        "--graph-id-property", default=None, help="GeoJSON: the properties key holding region ids"
    )
    data.add_argument(
        "--allow-isolated", action="store_true", help="train even when a region has no neighbour"
    )
    data.add_argument(
        "--step", choices=("W", "D"), default=None, help="period length (default: from the data)"
    )
    data.add_argument(
        "--season-length",
        type=int,
        default=None,
        help="periods per season (default 52 for weeks, 364 for days: 52 weeks, so a season back is the "
        "same weekday)",
    )
    data.add_argument(
        "--split", type=_split, default=None, help="TRAIN,VAL,TEST fractions (default 0.5,0.2,0.3)"
    )
    data.add_argument(
        "--negatives",
        choices=("refuse", "clip", "keep"),
        default="refuse",
        help="negative counts (reporting corrections): refuse (default), clip to 0, or keep",
    )
    data.add_argument(
        "--missing",
        choices=("refuse", "interpolate"),
        default=None,
        help="missing cells or periods of --series (empty, NA, X): refuse (default), or interpolate in time "
        "from the region's own counts (first/last count carried to the ends), counted in the run report "
        "and left out of every score",
    )
    data.add_argument(
        "--scaling",
        choices=("per-region", "global"),
        default=None,
        help="min-max scaling fitted on training periods (default per-region)",
    )


def user_data(args: argparse.Namespace):
    """The --series / --from-store data, or None for --dataset."""
    from healthai_training.epi import user_data

    private = {k: getattr(args, f"count_{k}", None) for k in ("epsilon", "start", "end")}
    private["max_cases_per_patient"] = getattr(args, "max_cases_per_patient", None)
    if args.from_store is None or private["epsilon"] is None:
        for flag, value in private.items():
            if value is not None:
                needs = "--from-store" if args.from_store is None else "--count-epsilon"
                name = flag if flag == "max_cases_per_patient" else f"count_{flag}"
                raise TrainingInputError(f"--{name.replace('_', '-')} needs {needs}", field=name)
    if getattr(args, "series_start", None) is not None and args.series is None:
        raise TrainingInputError("--series-start needs --series (a headerless matrix)", field="series_start")
    if args.series is None and args.from_store is None:
        for flag in ("graph", "step", "season_length", "split", "region_ids", "missing", "columns", "target",
                     "exclude_regions", "syndromes"):
            if getattr(args, flag, None) not in (None, ()):
                raise TrainingInputError(
                    f"--{flag.replace('_', '-')} needs --series or --from-store", field=flag
                )
        return None
    if args.graph is None:
        raise TrainingInputError("--graph FILE is required with --series or --from-store", field="graph")
    common = dict(
        graph=args.graph,
        step=args.step,
        season=args.season_length,
        split=args.split or user_data.DEFAULT_SPLIT,
        negatives=args.negatives,
        allow_isolated=args.allow_isolated,
        id_property=args.graph_id_property,
        region_ids=getattr(args, "region_ids", None),
    )
    if args.from_store is not None:
        if getattr(args, "missing", None) is not None:
            raise TrainingInputError("--missing is for --series files: the store's counts have no missing "
                                     "cells (a day without cases counts 0)", field="missing")
        for flag in ("columns", "target"):
            if getattr(args, flag, None):
                flag_name = flag.replace("_", "-")
                raise TrainingInputError(f"--{flag_name} is for --series files, not the store's counts",
                                         field=flag)
        return user_data.load_store(args.from_store, syndrome=args.syndrome, week_start=args.week_start,
                                    private=private if private["epsilon"] is not None else None,
                                    exclude=getattr(args, "exclude_regions", ()),
                                    syndromes=getattr(args, "syndromes", None), **common)
    start = getattr(args, "series_start", None)
    data = user_data.load_files(series=args.series, series_start=start,
                                missing=getattr(args, "missing", None) or "refuse",
                                columns=getattr(args, "columns", None), target=getattr(args, "target", None),
                                exclude=getattr(args, "exclude_regions", ()), **common)
    if data.imputed is not None:
        r = data.report
        last = r.get("missing_in_last_period") or []
        print(f"missing: {r['missing_cells']} cells ({r['missing_share']:.1%}) filled in time, used as "
              "inputs only (never a training target or a scored truth)"
              + (f"; the last period was filled for {', '.join(last[:5])}" if last else ""), file=sys.stderr)
    return data


MODES = ("window20", "seasonal")
MIN_SEASONS_OF_WINDOWS = 2  # the default mode is seasonal from this many seasons of training windows


def resolve_mode(mode: str | None, data, settings: dict) -> str:
    """``--mode``, or by default the seasonal mode when the training split holds at least two seasons
    of seasonal training windows (a window is one season + 2 periods, plus the horizon: weekly, a
    training split of 172 periods, a series of 344 weeks at the default split), else ``window20``.
    A seasonal network learns each period of the season from as many windows as there are seasons
    of them; on shorter histories the 20-period window did better (RESULTS.md, "tenth session": found
    on seen series, pre-registered, adopted on new ones). The choice and its reason go into
    ``data.report`` and are printed; ``--mode seasonal`` overrides it (too short a series for even
    one seasonal window still stops with the length error)."""
    if mode is not None or data is None:
        return mode or "seasonal"
    from healthai_training.epi.data import split_points
    from healthai_training.forecast.train import ForecastConfig

    fields = {k: v for k, v in settings.items() if k in ForecastConfig.__dataclass_fields__ and v is not None}
    cfg = ForecastConfig(seasonal=True, **{**fields, "season": data.season})
    n_train = split_points(data.n_weeks, data.split)[0]
    windows = max(n_train - cfg.effective_window - cfg.steps + 1, 0)
    if windows >= MIN_SEASONS_OF_WINDOWS * data.season:
        data.report["mode"] = {"mode": "seasonal", "why": "default"}
        return "seasonal"
    why = (f"the training split ({n_train} periods) holds {windows} seasonal training windows "
           f"({cfg.effective_window} + {cfg.steps} periods each), fewer than {MIN_SEASONS_OF_WINDOWS} "
           f"seasons of {data.season}; --mode seasonal insists, --season-length changes the season")
    data.report["mode"] = {"mode": "window20", "why": why}
    print(f"mode: window20 ({why})", file=sys.stderr)
    return "window20"


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(","))


def _horizons(text: str) -> tuple[int, ...]:
    try:
        steps = tuple(sorted({int(s) for s in text.split(",") if s.strip()}))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--horizons must be whole steps like 1,2,3, got {text!r}") from exc
    if not steps or steps[0] < 1 or steps[-1] > 15:
        raise argparse.ArgumentTypeError(f"--horizons must lie in 1..15 (the model's steps), got {text!r}")
    return steps


def _split(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(s) for s in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--split must be TRAIN,VAL,TEST fractions, got {text!r}") from exc


def write_results_json(path: Path | None, results: list[dict]) -> None:
    """--json: the per-horizon metrics of the run (mean over seeds when there are several)."""
    if path is None:
        return
    from healthai_training.forecast.results_json import forecast_results

    tables = [forecast_results(r["test"]) for r in results]
    out = tables[0]
    if len(tables) > 1:
        for name, cols in out["models"].items():
            for key, values in cols.items():
                if all(v is not None for v in values):
                    cols[key] = [
                        sum(t["models"][name][key][i] for t in tables) / len(tables)
                        for i in range(len(values))
                    ]
        out["seeds"] = len(tables)
    path.write_text(json.dumps(out, indent=2) + "\n")


def _backtest(args: argparse.Namespace, forecast_flags: tuple[str, ...]) -> int:
    from healthai_training.common import data_file, make_run_dir, write_json
    from healthai_training.epi import data as epi_data
    from healthai_training.forecast import backtest
    from healthai_training.forecast.train import ForecastConfig
    from healthai_training.report import forecast_defaults

    data = user_data(args)
    dataset = "custom" if data is not None or args.defaults == "generic" else args.dataset
    args.mode = resolve_mode(args.mode, data, {k: getattr(args, k, None) for k in forecast_flags})
    if data is None:
        for relative in epi_data.DATASETS[args.dataset]:
            data_file(args.data_root, relative)
        data = epi_data.load_epi(args.dataset, data_root=args.data_root)
    settings = {
        **forecast_defaults(dataset, args.mode),
        **{
            k: v
            for k, v in vars(args).items()
            if k in ("epochs", "batch_size", "lr", "hidden") and v is not None
        },
    }
    for name in forecast_flags:
        if getattr(args, name, None) is not None:
            settings[name] = getattr(args, name)
    cfg = ForecastConfig(
        seasonal=args.mode == "seasonal",
        **settings,
        season=data.season,
        seed=args.seeds[0],
        device=args.device,
        **({"horizons": args.horizons} if args.horizons else {}),
    )
    seeds = tuple(args.seeds) if args.ensemble else ()
    result = backtest.run_backtest(data=data, config=cfg, fixed_split=args.fixed_split,
                                   cache_dir=args.cache_dir, seeds=seeds)
    kind = "fixedsplit" if args.fixed_split else "backtest"
    tag = "ens" + "-".join(map(str, seeds)) if seeds else f"seed{cfg.seed}"
    run_dir = make_run_dir(args.runs_dir, f"{kind}-{data.name}-{args.mode}-{tag}")
    write_json(run_dir / "backtest.json", {**result, "config": settings, "data": data.report})
    tables = "\n\n".join(
        f"{m.upper()}\n" + backtest.markdown_table(result, metric=m) for m in ("rmse", "wis", "pcc")
    )
    (run_dir / "tables.md").write_text(tables + "\n")
    backtest.plot(result, run_dir / "backtest.png", title=f"{data.name}: rolling origins {result['origins']}")
    if args.json is not None:
        args.json.write_text(json.dumps(backtest.results_json(result), indent=2) + "\n")
    print(tables)
    print(json.dumps({"run_dir": str(run_dir), "origins": result["origins"]}))
    return 0


def register_backtest(kinds, guard, common, forecast_flags: tuple[str, ...]) -> None:
    bt = kinds.add_parser("backtest", help="rolling-origin evaluation against seasonal baselines")
    bt.add_argument("--dataset", choices=("japan", "us_states"), default="us_states")
    bt.add_argument("--mode", choices=MODES, default=None,
                    help="default: seasonal when the training split holds two seasons of seasonal "
                    "windows, else window20")
    bt.add_argument("--json", type=Path, default=None, help="write per-horizon metrics as JSON")
    bt.add_argument("--horizons", type=_horizons, default=None, metavar="H,H,...",
                    help="steps ahead to score, each in 1..15 (default 2,3,5,10,15, the papers' horizons; "
                    "e.g. 1,2,3,4 for the next four weeks)")
    bt.add_argument(
        "--fixed-split",
        action="store_true",
        help="one origin at the --split test start (default 0.5,0.2,0.3, the papers' protocol)",
    )
    bt.add_argument(
        "--defaults",
        choices=("generic", "dataset"),
        default="generic",
        help="generic: the settings used for your own data (one set for every data set); dataset: "
        "--dataset's own FORECAST_DEFAULTS",
    )
    bt.add_argument("--cache-dir", type=Path, default=None,
                    help="reuse models trained at the same origins with the same settings")
    bt.add_argument("--ensemble", action="store_true",
                    help="the ST-GNN member is a seed ensemble of every --seeds value (like train forecast)")
    add_data_flags(bt)
    common(bt)
    bt.set_defaults(func=guard(lambda args: _backtest(args, forecast_flags)))
