"""The default forecaster that ``healthai train forecast`` exports: the ST-GNN stacked with the
seasonal baselines, per-step weights and bands learned on rolling origins inside the data before
the test split (``backtest.inner_origins``: every season start after the first two, each trained on
its own past) plus the final model's validation periods. The test split is only scored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from healthai_training.epi import data as epi_data
from healthai_training.epi import metrics
from healthai_training.forecast.backtest import inner_origins, observed_only, stack_members
from healthai_training.forecast.origins import (
    OriginForecasts,
    Trainer,
    forecasts_at,
    model_steps,
    no_fold_anchor,
)
from healthai_training.forecast.stacked_model import StackedForecaster, members_window
from healthai_training.forecast.stacking import BAG_MIN_SETS, FitSet, StackFit, fit_stack
from healthai_training.forecast.train import ForecastConfig

logger = logging.getLogger(__name__)


@dataclass
class DefaultForecaster:
    model: StackedForecaster
    final: OriginForecasts  # the ST-GNN at the test start (its own metrics, predictions)
    fits: dict[int, StackFit]  # step -> stack
    origins: list[int]  # rolling origins the stack learned from (besides the final validation)
    test: dict[str, dict]  # horizon -> metrics of the stacked model on the test split


def card_section(d: DefaultForecaster) -> dict:
    """What the model card says about the stack."""
    steps = sorted(d.fits)
    return {
        "kind": "healthai_stacked",
        "members": list(d.model.members),
        "weights_per_step": {str(s): d.fits[s].record() for s in steps},
        "calibration": "per-step residual quantiles on the square-root scale (q = max(sqrt(point) + offset, "
        "0)^2) from forward-chaining out-of-sample folds over the fit sets and the final weights on every "
        "fit set",
        "recency": "fit sets weighted 0.5 per season of age (weights, best member, shrinkage folds)",
        "best_member": "least weighted squared error on the fit sets; in seasonal mode a member that wins "
        "only with the periods that selected it (the ST-GNN's validation periods) must also win on the "
        "others (with no other set, the target is half that member, half the best of the others); in "
        "window20 mode the validation periods judge the ST-GNN like any fit set, and with no fold (no "
        "other set) the target is half the best member, half the ST-GNN",
        "bagging": f"from {BAG_MIN_SETS} fit sets, the weights are the mean of the fit on all sets and of "
        "each leave-one-set-out refit",
        "fit_sets": "validation periods of the final model + the seasons after each rolling origin "
        "inside the training data (each forecast by a model trained before it)",
        "rolling_origins": d.origins,
        "inner_window": d.model.inner_window,
        "window": d.model.window,
        "outputs": {"forecast": "calibrated quantiles of the stack", "point": "stacked point forecast"},
    }


def test_metrics(model: StackedForecaster, final: OriginForecasts, series: np.ndarray,
                 horizons: tuple[int, ...], levels: np.ndarray, inputs: np.ndarray | None = None,
                 imputed: np.ndarray | None = None) -> dict[str, dict]:
    """The stack's metrics on the test periods of ``series`` (its windows from ``inputs``, default the
    same series: a benchmark can feed noisy counts and score against exact ones); cells ``imputed``
    (bool like ``series``: filled by --missing interpolate) are not scored."""
    inputs = series if inputs is None else inputs
    out = {}
    targets = np.arange(final.origin, final.end)
    targets = targets[targets - max(horizons) + 1 - model.window >= 0]
    for h in horizons:
        x = torch.tensor(epi_data.windows(inputs, targets - h + 1, model.window), dtype=torch.float32)
        with torch.no_grad():
            q, point = (t.numpy()[:, h - 1].astype(np.float64) for t in model(x))
        seen = epi_data.observed_cells(imputed, targets, series.shape[1])
        y = series[targets][seen]
        q, point = q[seen], point[seen]
        row = metrics.point_metrics(y, point)
        row["wis"] = metrics.weighted_interval_score(y, q, levels)
        row["coverage50"] = metrics.coverage(y, q, levels, 0.5)
        row["coverage95"] = metrics.coverage(y, q, levels, 0.95)
        keep = np.isin(np.arange(final.origin, final.end), targets)
        own = final.test_q[h][keep][seen]
        row["healthai_alone"] = {**metrics.point_metrics(y, own[..., final.model.median_index]),
                                 "wis": metrics.weighted_interval_score(y, own, levels),
                                 "coverage50": metrics.coverage(y, own, levels, 0.5),
                                 "coverage95": metrics.coverage(y, own, levels, 0.95)}
        row["baselines"] = {n: metrics.point_metrics(y, p[keep][seen])
                            for n, p in final.test[h].points.items() if n != "healthai"}
        out[str(h)] = row
    return out


def train_default(
    data: epi_data.EpiData,
    cfg: ForecastConfig,
    *,
    trainer: Trainer | None = None,
    cache_dir: Path | None = None,
    seeds: tuple[int, ...] = (),
) -> DefaultForecaster:
    """Rolling origins inside the pre-test data, the final model at the test start, the stack."""
    val_start, test_start = epi_data.split_points(data.n_weeks, data.split)
    steps = tuple(range(1, cfg.steps + 1))
    origins = inner_origins(test_start, cfg, data.season)
    past: dict[int, list[FitSet]] = {}
    for o in origins:
        f = forecasts_at(data, cfg, o, steps=steps, end=min(o + data.season, test_start), trainer=trainer,
                         cache_dir=cache_dir, seeds=seeds)
        for s in steps:
            past.setdefault(s, []).append(f.test[s])
    final = forecasts_at(data, cfg, test_start, steps=steps, val_start=val_start, end=data.n_weeks,
                         trainer=trainer, cache_dir=cache_dir, seeds=seeds)
    levels = np.asarray(final.model.quantiles)
    names = None
    for s in steps:  # one member list for every step: those all sets of every step hold
        got = stack_members(final.test[s], final.val.get(s))
        names = got if names is None else [n for n in names if n in got]
    names = [n for n in names if members_window((n,), data.season) <= val_start]
    fits = {}
    for s in steps:
        sets = [observed_only(data, x) for x in ([final.val[s]] if s in final.val else []) + past.get(s, [])]
        fits[s] = fit_stack([x for x in sets if all(n in x.points for n in names)], names, levels,
                            season=data.season, anchor=no_fold_anchor(cfg))
    model = StackedForecaster(
        final.model,
        members=tuple(names),
        weights=np.stack([fits[s].weights for s in steps]),
        offsets=np.stack([fits[s].offsets for s in steps]),
        season=data.season,
    ).eval()
    test = test_metrics(model, final, data.series, cfg.horizons, levels, imputed=data.imputed)
    logger.info("stack: %d rolling origins %s, members %s", len(origins), origins, names)
    return DefaultForecaster(model, final, fits, origins, test)


__all__ = ["DefaultForecaster", "card_section", "model_steps", "train_default"]
