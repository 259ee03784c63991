"""End-to-end runs behind the CLI: train, write a run folder (metrics JSON, PNG plots, model) and
optionally export into a model repository."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from healthai_training import plots
from healthai_training.common import data_file, make_run_dir, write_json
from healthai_training.epi import data as epi_data
from healthai_training.export import base_card, export_risk
from healthai_training.forecast.export import export_forecaster
from healthai_training.forecast.train import ForecastConfig, train_forecaster
from healthai_training.publish import publish
from healthai_training.risk import metrics as risk_metrics
from healthai_training.risk.data import RiskData, load_heart
from healthai_training.risk.domains import with_domains
from healthai_training.risk.train import RiskConfig, train_risk

logger = logging.getLogger(__name__)
RISK_MODEL_NAMES = {"diabetes130": "risk_readmission", "heart": "risk_heart"}
FORECAST_MODEL_NAMES = {"japan": "forecast_japan", "us_states": "forecast_us_states"}


def model_name_for(dataset: str) -> str:
    """A model-repository-safe default name: ``forecast_<dataset>`` in [a-z0-9_]."""
    return "forecast_" + (re.sub(r"[^a-z0-9_]+", "_", dataset.lower()).strip("_") or "custom")


def load_risk_data(dataset: str, *, data_root: Path, seed: int) -> RiskData:
    if dataset == "heart":
        return load_heart(data_file(data_root, "risk/uci_heart_disease/heart_disease_4sites.csv"), seed=seed)
    if dataset == "diabetes130":
        from healthai_training.risk.diabetes import load_diabetes

        return load_diabetes(data_file(data_root, "risk/diabetes130"), seed=seed)
    from healthai_training.errors import TrainingInputError

    raise TrainingInputError(
        f"unknown risk dataset {dataset!r}; choose diabetes130 or heart", field="dataset"
    )


def risk_card(data: RiskData, result: Any, name: str) -> dict[str, Any]:
    features = [
        {"name": f.name, "description": f.description, "unit": f.unit, "baseline": float(b)}
        for f, b in zip(data.features, result.baseline, strict=True)
    ]
    card = base_card(
        name=name,
        task=f"binary risk: {data.description['label']}",
        metrics=result.metrics,
        privacy={
            **result.privacy,
            "scope": "the DP guarantee covers the training patients; the 2 Platt calibration parameters are "
            "fitted without noise on the validation patients",
        },
        data=data.description,
        split={
            "method": "random by patient, seed-controlled",
            "fractions": {"train": 0.6, "val": 0.2, "test": 0.2},
            "sizes": result.metrics["split_sizes"],
            "calibration": "Platt scaling on the validation split",
        },
        inputs=[{"name": "features", "datatype": "FP32", "shape": [-1, len(features)]}],
        outputs=[{"name": "probability", "datatype": "FP32", "shape": [-1, 1]}],
        risk_bands=result.risk_bands,
    )
    if result.privacy.get("private"):
        card["privacy"]["guarantee"] = (
            "(epsilon, delta)-DP for adding or removing one patient with all of their rows: one clipped "
            "gradient per patient, Poisson sampling of patients"
            if data.groups is not None
            else "(epsilon, delta)-DP for adding or removing one row, and one row is one patient"
        )
    if data.imputation is not None:
        card["imputation"] = data.imputation
    return with_domains({**card, "features": features}, data)


def add_domains_to_card(card_path: Path, *, data_root: Path) -> dict[str, Any]:
    """Writes the valid domains into an existing risk card (``healthai train domains``): data set and
    seed from the card's metrics, the training code's loader; the model and every other card field
    are left as they are. Returns the new card."""

    from healthai_training.errors import TrainingInputError

    card = json.loads(Path(card_path).read_text())
    try:
        dataset, seed = card["metrics"]["dataset"], int(card["metrics"]["config"]["seed"])
    except (KeyError, TypeError, ValueError) as exc:
        raise TrainingInputError(f"{card_path}: not a risk card with metrics.dataset and "
                                 "metrics.config.seed", field="card") from exc
    new = with_domains(card, load_risk_data(dataset, data_root=Path(data_root), seed=seed))
    write_json(Path(card_path), new)
    return new


def run_risk(
    *,
    dataset: str,
    data_root: Path,
    config: RiskConfig,
    runs_dir: Path,
    export_repo: Path | None = None,
    model_name: str | None = None,
    export: bool = True,
    table: Path | None = None,
    spec: Path | None = None,
    size_to_cohort: dict[str, Any] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Train one risk model; returns (run folder, metrics). ``export=False`` skips ONNX (sweeps).

    ``table`` + ``spec``: any cohort table (CSV/Parquet) with a TOML spec instead of ``dataset``.
    ``size_to_cohort``: when given, the training settings are sized to the loaded cohort
    (``risk.defaults``), then these user overrides apply.
    """
    if table is not None:
        from healthai_training.risk.cohort import load_cohort

        if spec is None:
            from healthai_training.errors import TrainingInputError

            raise TrainingInputError("--table needs --spec FILE (the cohort spec, TOML)", field="spec")
        data, parsed = load_cohort(table, spec, seed=config.seed)
        dataset, model_name = data.name, model_name or parsed.model_name
    else:
        data = load_risk_data(dataset, data_root=Path(data_root), seed=config.seed)
    if size_to_cohort is not None:
        from healthai_training.risk.defaults import sized_config

        config = sized_config(config, data, size_to_cohort)
    result = train_risk(data=data, config=config)
    if size_to_cohort is not None:  # the card says where its settings came from
        result.metrics["config_source"] = {"sized_to_cohort": "healthai_training.risk.defaults",
                                           "user_overrides": sorted(size_to_cohort)}
    eps = "nonprivate" if config.privacy.epsilon is None else f"eps{config.privacy.epsilon:g}"
    run_dir = make_run_dir(runs_dir, f"risk-{dataset}-{eps}-seed{config.seed}")
    name = model_name or RISK_MODEL_NAMES.get(data.name, f"risk_{data.name}")
    card = risk_card(data, result, name)
    write_json(run_dir / "metrics.json", {**result.metrics, "privacy": result.privacy})
    write_json(run_dir / "curve.json", {"curve": result.curve})
    plots.training_curve(
        result.curve, run_dir / "training_curve.png", keys=("train_loss", "val_loss"), title=f"{name} ({eps})"
    )
    pred, obs = risk_metrics.calibration_curve(result.test_labels, result.test_probabilities)
    plots.calibration(pred, obs, run_dir / "calibration.png", title=f"{name} test calibration ({eps})")
    if export or export_repo is not None:
        export_risk(
            model=result.model, features=card["features"], card=card, repo=run_dir / "models", name=name
        )
        publish(run_dir / "models" / name, export_repo)
    return run_dir, {**result.metrics, "privacy": result.privacy}


def _data_section(data: epi_data.EpiData) -> dict[str, Any]:
    if data.name in FORECAST_MODEL_NAMES and not data.report:
        return {
            "dataset": data.name,
            "weeks": data.n_weeks,
            "regions": data.n_regions,
            "source": "amy-deng/colagnn data files (see ../shared/data/epi READMEs)",
        }
    return {"dataset": data.name, "periods": data.n_weeks, "regions": data.n_regions, **data.report}


def _week_start(data: epi_data.EpiData) -> dict[str, str]:
    """A weekly model's first day of the week (its periods' weekday: ``sunday`` for MMWR epiweeks), so
    ``Forecast --stored`` counts the store in the same weeks."""
    if data.step != "W" or not data.periods:
        return {}
    return {"week_start": dt.date.fromisoformat(data.periods[0]).strftime("%A").lower()}


def card_privacy(privacy: dict[str, Any], data: epi_data.EpiData) -> dict[str, Any]:
    """The card's privacy block: DP-SGD's (per training window), or, when the training series were
    counts released under epsilon-DP per patient (``--count-epsilon``), that guarantee, which covers the
    weights and everything computed from them (post-processing), with DP-SGD's beside it if used."""
    counts = data.report.get("store", {}).get("privacy")
    if counts is None:
        return privacy
    return {
        "private": True,
        "privacy_unit": "patient",
        "epsilon": counts["epsilon"],
        "delta": counts["delta"],
        "accountant": "OpenDP privacy map of the counts' release (discrete Laplace, L1 sensitivity = "
                      "max_cases_per_patient)",
        "training_counts": counts,
        "guarantee": "epsilon-DP per patient for the weights and the card's metrics: both are computed "
                     "only from the released noisy counts (the metrics are against those counts too). "
                     "Forecast --stored feeds the store's exact recent counts to the model, so its "
                     "answers are not covered, unless the server runs with stored_counts = private "
                     "(it then reads the newest DP release: each release spends its own epsilon)",
        **({"dp_sgd": privacy} if privacy.get("private") else {}),
    }


def privacy_tag(privacy: dict[str, Any]) -> str:
    """A forecast run folder's privacy part: ``nonprivate``, ``eps8`` (DP-SGD's target per training
    window), ``counteps1`` (trained on counts released under epsilon-DP per patient), or both."""
    counts = "training_counts" in privacy
    sgd = privacy.get("dp_sgd", {}) if counts else privacy
    tags = [f"counteps{privacy['epsilon']:g}"] if counts else []
    if sgd.get("private"):
        tags.append(f"eps{sgd.get('target_epsilon', sgd['epsilon']):g}")
    return "-".join(tags) or "nonprivate"


def forecast_card(data: epi_data.EpiData, result: Any, name: str, cfg: ForecastConfig) -> dict[str, Any]:
    a, b = data.split_points
    training = {k: v for k, v in asdict(cfg).items() if k != "privacy"}
    if "ensemble_seeds" in result.metrics:
        training["ensemble_seeds"] = result.metrics["ensemble_seeds"]
    return base_card(
        name=name,
        task=f"{'daily' if data.step == 'D' else 'weekly'} counts per region: steps 1..S ahead, quantiles",
        metrics=result.metrics["test"],
        privacy=card_privacy(result.privacy, data),
        data=_data_section(data),
        split={
            "method": "chronological " + "/".join(f"{round(100 * f):g}" for f in data.split),
            "fractions": list(data.split),
            "train_weeks": [0, a],
            "val_weeks": [a, b],
            "test_weeks": [b, data.n_weeks],
            **({"test_periods": [data.periods[b], data.periods[-1]]} if data.periods else {}),
            "scaling": f"{cfg.scaling} min-max on training periods (in graph)",
        },
        inputs=[{"name": "history", "datatype": "FP32", "shape": [-1, result.model.window, data.n_regions]}],
        outputs=[
            {
                "name": "forecast",
                "datatype": "FP32",
                "shape": [-1, cfg.steps, data.n_regions, len(cfg.quantiles)],
            },
            *(
                [{"name": "point", "datatype": "FP32", "shape": [-1, cfg.steps, data.n_regions]}]
                if "stack" in result.metrics
                else []
            ),
        ],
        mode="seasonal" if cfg.seasonal else "window20",
        **({"stack": result.metrics["stack"]} if "stack" in result.metrics else {}),
        training=training,
        step=data.step,
        **_week_start(data),
        season_length=data.season,
        region_ids=list(data.region_ids),
        region_names=list(data.region_names),
    )


def _stacked(data: epi_data.EpiData, config: ForecastConfig, ensemble_seeds: tuple[int, ...],
             cache_dir: Path | None) -> Any:
    """The default forecaster (``forecast.default``), its result shaped like ``train_forecaster``'s."""
    from healthai_training.forecast.default import card_section, train_default
    from healthai_training.forecast.graph import RegionGraph
    from healthai_training.forecast.train import ForecastResult

    d = train_default(data, config, cache_dir=cache_dir, seeds=tuple(ensemble_seeds))
    steps = {str(h): d.final.test_q[h] for h in config.horizons}
    summary = {
        "dataset": data.name,
        "mode": "seasonal" if config.seasonal else "window20",
        "window": d.model.window,
        "best_epoch": d.final.best_epoch,
        "test": d.test,
        "stack": card_section(d),
        "config": {k: v for k, v in asdict(config).items() if k != "privacy"},
        **({"ensemble_seeds": list(ensemble_seeds)} if ensemble_seeds else {}),
    }
    from healthai_training.forecast.train import PRIVACY_UNIT

    privacy = {"private": False, "privacy_unit": PRIVACY_UNIT, "epsilon": None, "delta": None}
    graph = RegionGraph.from_adjacency(data.adjacency, data.region_ids)
    return ForecastResult(model=d.model, graph=graph, metrics=summary, curve=d.final.curve or [],
                          privacy=privacy, predictions=steps)


def run_forecast(
    *,
    dataset: str,
    data_root: Path | None,
    config: ForecastConfig,
    runs_dir: Path,
    export_repo: Path | None = None,
    model_name: str | None = None,
    variants: tuple[str, ...] = ("custom", "standard"),
    ensemble_seeds: tuple[int, ...] = (),
    data: epi_data.EpiData | None = None,
    new_version: bool = False,
    stack: bool = True,
    cache_dir: Path | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Train the default forecaster on ``data`` (the user's files or the store) or, without it, on the
    named benchmark ``dataset``: the ST-GNN (with ``ensemble_seeds``, one member per seed and their
    mean) stacked with the seasonal baselines (``forecast.default``). ``stack=False`` or a DP run
    exports the ST-GNN alone (the stack trains one model per rolling origin, which under DP would
    spend the privacy budget again per origin); its epoch is then the one with the least validation
    pinball loss over the quantile levels (``select_on="wis"``), not the median's least RMSE."""
    if data is None:
        for relative in epi_data.DATASETS.get(dataset, ()):
            data_file(data_root, relative)
        data = epi_data.load_epi(
            dataset, data_root=data_root, window=config.effective_window, horizon=config.steps
        )
    stack = stack and not config.privacy.private
    if not stack:  # the ST-GNN's own quantiles are served: keep the epoch that scores them best
        config = replace(config, select_on="wis")
    if stack:
        result = _stacked(data, config, ensemble_seeds, cache_dir)
        seeds = ("ens" + "-".join(str(s) for s in ensemble_seeds)) if ensemble_seeds else f"seed{config.seed}"
        seed_tag = seeds + "-stacked"
    elif ensemble_seeds:
        from healthai_training.forecast.ensemble import train_ensemble

        result = train_ensemble(data=data, config=config, seeds=tuple(ensemble_seeds))
        seed_tag = "ens" + "-".join(str(s) for s in ensemble_seeds)
    else:
        result = train_forecaster(data=data, config=config)
        seed_tag = f"seed{config.seed}"
    mode = "seasonal" if config.seasonal else "window20"
    # The run records the card's privacy (DP counts per patient, DP-SGD per training window, or none).
    privacy = card_privacy(result.privacy, data)
    eps = privacy_tag(privacy)
    # The user's own series are named after their source, never after the benchmark --dataset
    # default (which would publish over the served forecast_japan).
    label = data.name if data.report else dataset
    run_dir = make_run_dir(runs_dir, f"forecast-{label}-{mode}-{eps}-{seed_tag}")
    name = model_name or FORECAST_MODEL_NAMES.get(label) or model_name_for(label)
    write_json(run_dir / "metrics.json", {**result.metrics, "privacy": privacy, "data": data.report})
    if result.curve:
        write_json(run_dir / "curve.json", {"curve": result.curve})
        plots.training_curve(
            result.curve,
            run_dir / "training_curve.png",
            keys=("train_loss", "val_pinball"),
            title=f"{name} {mode} ({eps})",
        )
    h = str(config.horizons[0])
    unit = "day" if getattr(data, "step", "W") == "D" else "week"
    targets = epi_data.target_weeks(data, "test")
    busiest = list(np.argsort(-data.series[targets].sum(axis=0))[:3])
    plots.forecast_vs_actual(
        targets,
        data.series[targets],
        result.predictions[h],
        result.model.median_index,
        result.model.quantiles,
        busiest,
        list(data.region_ids),
        run_dir / f"forecast_h{h}.png",
        title=f"{name}: test {unit}s, {h} {unit}(s) ahead" + (" (ST-GNN member)" if stack else ""),
    )
    card = forecast_card(data, result, name, config)
    torch.save(result.model.state_dict(), run_dir / "model_state.pt")
    graph = replace(result.graph, region_names=tuple(data.region_names))
    if variants:  # variants=() skips the ONNX export (metric sweeps)
        export_forecaster(result.model, graph, run_dir / "models" / name, variants=variants, card=card)
        version = publish(run_dir / "models" / name, export_repo, new_version=new_version)
        if version is not None:
            result.metrics["published"] = {"repository": str(export_repo), "model": name, "version": version}
    return run_dir, {**result.metrics, "privacy": privacy}
