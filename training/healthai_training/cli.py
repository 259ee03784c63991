"""``healthai train risk ...`` and ``healthai train forecast ...``.

Examples::

    healthai train risk --dataset heart --epsilon 1.2
    healthai train risk --dataset diabetes130 --non-private --export-to server/healthai/data/models
    healthai train risk --from-store ./var/store --outcome readmission30 --index-encounter inpatient
    healthai train forecast --dataset japan --mode seasonal --seeds 0,1,2,3,4
    healthai train domains server/healthai/data/models/risk_*/2/model_card.json
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from pathlib import Path

from healthai.errors import InputFileError
from healthai_training.cli_forecast import (
    MODES,
    add_data_flags,
    register_backtest,
    resolve_mode,
    user_data,
    write_results_json,
)
from healthai_training.errors import TrainingInputError
from healthai_training.risk.cli_store import add_store_flags

logger = logging.getLogger(__name__)
DATA_ROOT_HELP = "folder holding risk/ and epi/ (default: ../shared/data beside the repository)"
DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")  # common.DEVICE (not imported: torch)


def _seeds(text: str) -> list[int]:
    """Comma-separated seeds, each once, in order; none at all (an unset shell variable) is refused."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--seeds must be comma-separated integers, got {text!r}") from exc
    if not seeds:
        raise argparse.ArgumentTypeError("--seeds needs at least one integer seed, got none")
    return list(dict.fromkeys(seeds))


def _device(text: str) -> str:
    if not DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"choose auto, cpu, cuda or cuda:N, got {text!r}")
    return text


def _threads(p: argparse.ArgumentParser) -> None:
    """``--threads`` after the sub-command too (``healthai train forecast ... --threads 2``); left
    unset there, the value given before it (or its default, 1) stands."""
    p.add_argument("--threads", type=int, default=argparse.SUPPRESS,
                   help="torch CPU threads (default 1: the models are small)")


def _privacy_args(p: argparse.ArgumentParser, *, default_epsilon: float | None) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--epsilon",
        type=float,
        default=default_epsilon,
        help=f"target epsilon for DP-SGD (default {default_epsilon})",
    )
    g.add_argument("--non-private", action="store_true", help="train without differential privacy")
    p.add_argument("--delta", type=float, default=1e-5)
    p.add_argument("--max-grad-norm", type=float, default=1.0)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", type=Path, default=None, help=DATA_ROOT_HELP)
    p.add_argument("--runs-dir", type=Path, default=Path("runs"))
    p.add_argument(
        "--export-to",
        type=Path,
        default=None,
        help="model repository to (over)write, e.g. server/healthai/data/models",
    )
    p.add_argument("--model-name", default=None)
    p.add_argument("--seeds", type=_seeds, default=[0])
    p.add_argument("--device", type=_device, default="auto",
                   help="auto (CUDA when present), cpu, cuda or cuda:N")
    _threads(p)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--hidden", type=int, default=None)


def _privacy(args: argparse.Namespace):
    from healthai_training.privacy import PrivacySettings

    eps = None if args.non_private else args.epsilon
    return PrivacySettings(epsilon=eps, delta=args.delta, max_grad_norm=args.max_grad_norm)


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    names = ("epochs", "batch_size", "lr", "hidden", "optimizer")
    return {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}


def _train_risk(args: argparse.Namespace) -> int:
    from healthai_training.report import risk_defaults
    from healthai_training.risk.train import RiskConfig
    from healthai_training.runs import run_risk

    if getattr(args, "from_store", None) is not None:  # issue 12: a cohort built from the store
        from healthai_training.risk.cli_store import store_table

        args.table, args.spec = store_table(args)
    if args.table is not None and args.dataset is not None:
        raise TrainingInputError("give either --dataset or --table/--spec, not both", field="dataset")
    if args.spec is not None and args.table is None:
        raise TrainingInputError("--spec needs --table FILE (the cohort table)", field="table")
    dataset = args.dataset or "diabetes130"
    defaults = risk_defaults(dataset, private=not args.non_private) if args.table is None else {}
    if args.new_version and args.export_to is None:
        raise TrainingInputError("--new-version needs --export-to REPOSITORY", field="new_version")
    results = []
    for seed in args.seeds:
        cfg = RiskConfig(
            **{**defaults, **_overrides(args)}, seed=seed, device=args.device, privacy=_privacy(args)
        )
        run_dir, result = run_risk(
            dataset=dataset,
            data_root=args.data_root,
            config=cfg,
            runs_dir=args.runs_dir,
            export_repo=None,  # published below (version chosen here: --new-version)
            model_name=args.model_name,
            export=not args.no_export or args.export_to is not None,
            table=args.table,
            spec=args.spec,
            size_to_cohort=_overrides(args) if args.table is not None else None,
        )
        results.append(result)
        line = {"run_dir": str(run_dir), "test": result["test"], **_privacy_line(result["privacy"])}
        if args.export_to is not None:
            line["published"] = _publish_risk(run_dir, args)
        print(json.dumps(line))
    if args.json is not None:  # issue 12: {"auroc", "auprc", "brier", "epsilon"} (mean over seeds)
        keys = ("auroc", "auprc", "brier")
        summary = {k: float(sum(r["test"][k] for r in results) / len(results)) for k in keys}
        eps = [r["privacy"]["epsilon"] for r in results]
        summary["epsilon"] = None if None in eps else float(max(eps))
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


def _publish_risk(run_dir: Path, args: argparse.Namespace) -> dict[str, object]:
    """Publish the run's exported model into ``--export-to`` (version 1, or the next with --new-version)."""
    from healthai_training.publish import publish

    (model_dir,) = [p for p in (run_dir / "models").iterdir() if p.is_dir()]
    version = publish(model_dir, args.export_to, new_version=args.new_version)
    return {"repository": str(args.export_to), "model": model_dir.name, "version": version}


FORECAST_FLAGS = (  # forecaster options that override FORECAST_DEFAULTS when given
    "scaling",
    "base",
    "seasonal_inputs",
    "anomaly_lags",
    "recent",
    "point_weight",
    "region_weighting",
    "quantile_init_gap",
)


def _train_forecast(args: argparse.Namespace) -> int:
    from healthai_training.forecast.train import ForecastConfig
    from healthai_training.report import forecast_defaults
    from healthai_training.runs import run_forecast

    private = not args.non_private and args.epsilon is not None
    custom = args.series is not None or args.from_store is not None
    dataset = "custom" if custom else args.dataset
    # Length checks against the model window happen in training (the window depends on the season).
    data = user_data(args)
    flags = {name: getattr(args, name) for name in FORECAST_FLAGS if getattr(args, name) is not None}
    args.mode = resolve_mode(args.mode, data, flags)
    settings = {**forecast_defaults(dataset, args.mode, private=private), **_overrides(args), **flags}
    if data is not None:
        settings["season"] = data.season
    results = []
    for seed in args.seeds[:1] if args.ensemble else args.seeds:
        cfg = ForecastConfig(
            seasonal=args.mode == "seasonal",
            refit=args.refit,
            **settings,
            seed=seed,
            device=args.device,
            privacy=_privacy(args),
        )
        run_dir, result = run_forecast(
            dataset=args.dataset,
            data_root=args.data_root,
            config=cfg,
            runs_dir=args.runs_dir,
            export_repo=args.export_to,
            model_name=args.model_name,
            variants=tuple(args.variants.split(",")),
            ensemble_seeds=tuple(args.seeds) if args.ensemble else (),
            data=data,
            new_version=args.new_version,
            stack=not args.no_stack,
            cache_dir=args.cache_dir,
        )
        results.append(result)
        print(
            json.dumps(
                {
                    "run_dir": str(run_dir),
                    "rmse": {h: r["rmse"] for h, r in result["test"].items()},
                    **_privacy_line(result["privacy"]),
                    **({"published": result["published"]} if "published" in result else {}),
                }
            )
        )
    write_results_json(args.json, results)
    return 0


def _privacy_line(privacy: dict) -> dict[str, object]:
    """A run's summary line: its epsilon and, when private, the unit it protects (as the card says)."""
    line: dict[str, object] = {"epsilon": privacy["epsilon"]}
    if privacy.get("private"):
        line["privacy_unit"] = privacy["privacy_unit"]
    return line


def _tables(args: argparse.Namespace) -> int:
    from healthai_training.report import main_tables

    return main_tables(args)


def _domains(args: argparse.Namespace) -> int:
    from healthai_training.runs import add_domains_to_card

    for path in args.cards:
        card = add_domains_to_card(path, data_root=args.data_root)
        print(json.dumps({"card": str(path), "rows": card["domains"]["rows"],
                          "one_hot": [g["name"] for g in card["domains"]["one_hot"]]}))
    return 0


MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")  # a repository folder: no path, no space


def _refused_outputs(args: argparse.Namespace) -> str:
    """Why the run's outputs could not be written (a --json folder that does not exist, a model name
    that is not one folder name), or ""."""
    out = getattr(args, "json", None)
    if out is not None and not Path(out).parent.is_dir():
        return f"--json {out}: the folder {Path(out).parent} does not exist"
    name = getattr(args, "model_name", None)
    if name is not None and not MODEL_NAME.fullmatch(name):
        return (f"--model-name {name!r}: a model name is one folder name of the repository: letters, digits, "
                "'_', '.' and '-', starting with a letter or digit")
    return ""


def _guard(func):
    def run(args: argparse.Namespace) -> int:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        for name in ("healthai", "healthai_training"):  # progress: origins trained, export, publish
            logging.getLogger(name).setLevel(logging.INFO)
        import torch

        torch.set_num_threads(args.threads)
        if getattr(args, "data_root", "") is None:  # not per parser: the repository is found at run time
            from healthai_training.common import default_data_root

            args.data_root = default_data_root()
        refused = _refused_outputs(args)  # before hours of training, not after
        if refused:
            print(f"error: {refused}")
            return 2
        try:
            return func(args)
        except InputFileError as exc:  # TrainingInputError, or a file the shared readers refused
            print(f"error: {exc.message}")
            return 2

    return run


def register(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train models offline (DP-SGD) and export them to ONNX")
    train.add_argument("--threads", type=int, default=1, help="torch CPU threads (the models are small)")
    kinds = train.add_subparsers(dest="kind", required=True)
    risk = kinds.add_parser("risk", help="patient risk model (readmission, heart disease)")
    risk.add_argument("--dataset", choices=("diabetes130", "heart"), default=None,
                      help="a built-in dataset (default diabetes130 unless --table is given)")
    risk.add_argument("--table", type=Path, default=None, help="any cohort table: CSV or Parquet")
    risk.add_argument("--spec", type=Path, default=None,
                      help="TOML cohort spec for --table (training/examples/heart_cohort.toml)")
    risk.add_argument("--json", type=Path, default=None,
                      help='write {"auroc", "auprc", "brier", "epsilon"} (test, mean over seeds) here')
    _common(risk)
    _privacy_args(risk, default_epsilon=1.2)
    risk.add_argument("--optimizer", choices=("adam", "sgd"), default=None)
    risk.add_argument("--no-export", action="store_true", help="skip the ONNX export into the run folder")
    risk.add_argument(
        "--new-version",
        action="store_true",
        help="with --export-to: publish as the next version number (hot reload) instead of version 1",
    )
    add_store_flags(risk)
    risk.set_defaults(func=_guard(_train_risk))
    fc = kinds.add_parser("forecast", help="spatio-temporal GNN forecaster on weekly ILI counts")
    fc.add_argument("--dataset", choices=("japan", "us_states"), default="japan")
    fc.add_argument(
        "--mode",
        choices=MODES,
        default=None,
        help="window20: the papers' 20-period window; seasonal: also season-ago periods (production). "
        "Default: seasonal when the training split holds two seasons of seasonal windows, else window20",
    )
    fc.add_argument(
        "--base",
        choices=("last", "seasonal_mix", "lag52"),
        default=None,
        help="what the median is a residual over (seasonal_mix / lag52 need --mode seasonal); "
        "default per dataset and mode (healthai_training.report.FORECAST_DEFAULTS)",
    )
    fc.add_argument(
        "--seasonal-inputs",
        choices=("levels", "anomalies"),
        default=None,
        help="seasonal mode: networks see all levels, or recent weeks + seasonal differences only",
    )
    fc.add_argument("--anomaly-lags", type=int, default=None, help="seasonal differences of the last K weeks")
    fc.add_argument("--recent", type=int, default=None, help="recent weeks the networks see")
    fc.add_argument(
        "--quantile-init-gap",
        type=float,
        default=None,
        help="initial gap between neighbouring quantile levels (scaled); default 0.02 under DP",
    )
    fc.add_argument("--point-weight", type=float, default=None, help="weight of the median's squared error")
    fc.add_argument(
        "--region-weighting",
        choices=("equal", "scale"),
        default=None,
        help="scale: weight each region's loss by its squared training range (count-scale MSE)",
    )
    fc.add_argument(
        "--refit",
        action="store_true",
        help="after selecting the epoch on validation, retrain on train+validation (non-private only)",
    )
    fc.add_argument(
        "--ensemble",
        action="store_true",
        help="train one member per --seeds value and export their mean as one model (non-private)",
    )
    fc.add_argument("--variants", default="custom,standard", help="ONNX variants to export")
    fc.add_argument(
        "--no-stack",
        action="store_true",
        help="export the ST-GNN alone instead of the default stack with the seasonal baselines (DP runs "
        "never stack: each rolling origin would spend the privacy budget again)",
    )
    fc.add_argument("--cache-dir", type=Path, default=None,
                    help="reuse models trained at the same origins with the same settings (backtest too)")
    add_data_flags(fc)
    fc.add_argument(
        "--new-version",
        action="store_true",
        help="with --export-to: publish as the next version number (hot reload) instead of version 1",
    )
    fc.add_argument("--json", type=Path, default=None, help="write the test metrics per horizon as JSON")
    _common(fc)
    _privacy_args(fc, default_epsilon=None)
    fc.set_defaults(func=_guard(_train_forecast))
    register_backtest(kinds, _guard, _common, FORECAST_FLAGS)
    domains = kinds.add_parser(
        "domains", help="write the features' valid domains into existing risk model cards (no retraining)"
    )
    domains.add_argument("cards", type=Path, nargs="+", help="model_card.json files of risk models")
    domains.add_argument("--data-root", type=Path, default=None, help=DATA_ROOT_HELP)
    _threads(domains)
    domains.set_defaults(func=_guard(_domains))
    tables = kinds.add_parser("tables", help="metric tables over seeds (risk + forecaster, DP and not)")
    tables.add_argument("--data-root", type=Path, default=None, help=DATA_ROOT_HELP)
    _threads(tables)
    tables.add_argument("--runs-dir", type=Path, default=Path("runs"))
    tables.add_argument("--seeds", type=_seeds, default=[0, 1, 2, 3, 4])
    tables.add_argument("--epochs", type=int, default=None, help="forecaster epochs")
    tables.add_argument("--from-runs", action="store_true",
                        help="only rebuild the tables from the run folders in --runs-dir (no training)")
    tables.add_argument("--only", default="risk,forecast", help="which tables: risk, forecast or both")
    tables.add_argument("--dp-seeds", type=int, default=2, help="seeds for the DP forecaster runs")
    tables.set_defaults(func=_guard(_tables))
