"""One forecast origin: train the ST-GNN on the data before it and collect every member's point
forecasts (the ST-GNN's median and the seasonal baselines) per step, on the origin's validation
periods and on the periods after it. Shared by ``train backtest`` and the default forecaster.

At origin ``o`` the ST-GNN trains on ``[0, val_start)`` and picks its epoch on ``[val_start, o)``;
the periods ``[o, end)`` are forecast s steps ahead from the data up to ``t - s``. Trained models
can be cached on disk (``cache_dir``), keyed by everything training sees: the settings, the cuts,
the series before the origin and the graph — so a rolling backtest and a fixed split share the
models of their common origins.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from healthai_training.epi import baselines
from healthai_training.epi import data as epi_data
from healthai_training.forecast.stacking import FitSet
from healthai_training.forecast.train import ForecastConfig, _new_model, train_forecaster

logger = logging.getLogger(__name__)
# Stack members: the ST-GNN and the baselines a fixed window can compute (the drift baseline needs
# the whole history, so it is scored but not stacked).
MEMBERS = ("healthai", "last_value", "lag52", "seasonal_mean_2x5")
Trainer = Callable[[epi_data.EpiData, ForecastConfig], torch.nn.Module]


@dataclass
class OriginForecasts:
    origin: int
    val_start: int
    end: int
    model: torch.nn.Module
    val: dict[int, FitSet]  # step -> the validation periods' member forecasts
    test: dict[int, FitSet]  # step -> the periods [origin, end)
    test_q: dict[int, np.ndarray]  # step -> the ST-GNN's own quantiles [T, N, Q] on [origin, end)
    best_epoch: int | None = None
    curve: list[dict[str, float]] | None = None  # the training curve (None: loaded from the cache)


def _key(data: epi_data.EpiData, cfg: ForecastConfig, val_start: int, origin: int) -> str:
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("device", "privacy")}
    h = hashlib.sha256(json.dumps([settings, val_start, origin, data.season], sort_keys=True).encode())
    h.update(np.ascontiguousarray(data.series[:origin], np.float64).tobytes())
    h.update(np.ascontiguousarray(data.adjacency, np.float64).tobytes())
    if data.imputed is not None:  # filled cells are not training targets
        h.update(np.ascontiguousarray(data.imputed[:origin]).tobytes())
    return h.hexdigest()[:24]


def _train_cached(sub: epi_data.EpiData, cfg: ForecastConfig, cache_dir: Path | None
                  ) -> tuple[torch.nn.Module, int | None, list | None]:
    val_start, origin = sub.cuts
    path = None if cache_dir is None else Path(cache_dir) / f"{_key(sub, cfg, val_start, origin)}.pt"
    if path is not None and path.is_file():
        from healthai_training.forecast.graph import RegionGraph

        lo, hi = epi_data.minmax_fit(sub.series, val_start, cfg.scaling)
        model = _new_model(RegionGraph.from_adjacency(sub.adjacency, sub.region_ids), cfg, lo, hi)
        saved = torch.load(path, weights_only=True)
        model.load_state_dict(saved["state"])
        return model.eval(), int(saved["best_epoch"]), None
    result = train_forecaster(data=sub, config=cfg)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state": result.model.state_dict(), "best_epoch": result.metrics["best_epoch"]}, path)
    return result.model, int(result.metrics["best_epoch"]), result.curve


def model_steps(model: torch.nn.Module, series: np.ndarray, targets: np.ndarray, step: int) -> np.ndarray:
    """The model's quantiles [T, N, Q] for ``targets`` forecast ``step`` periods ahead."""
    x = torch.tensor(epi_data.windows(series, targets - step + 1, model.window), dtype=torch.float32)
    with torch.no_grad():
        return model(x).numpy()[:, step - 1].astype(np.float64)


def validation_flatters(cfg: ForecastConfig) -> tuple[str, ...]:
    """The members that the validation periods flatter, marked ``FitSet.selected`` so the stack does not
    judge them there alone: the ST-GNN in seasonal mode, where its epoch, picked on those periods,
    fits them much better than the next season (few training windows of a season each). In window20
    mode the same periods predicted the next season's ST-GNN-vs-baselines contest better than
    earlier origins' seasons did, so they judge it like any other fit set (RESULTS.md, "eleventh
    session": found on seen series, pre-registered, adopted on three new ones)."""
    return ("healthai",) if cfg.seasonal else ()


def no_fold_anchor(cfg: ForecastConfig) -> str | None:
    """The member the stack hedges toward when it has no fold, only the validation periods to judge on
    (``stacking.fit_stack``'s ``anchor``): the ST-GNN in window20 mode, where one short stretch of a
    short history made the stack bet everything on a baseline that then failed (a seasonal one
    replaying an epidemic after a quiet stretch); none in seasonal mode, where those periods flatter the
    ST-GNN and the stack's own hedge applies (RESULTS.md, "twelfth session": found on seen series,
    pre-registered, adopted on three new ones)."""
    return None if cfg.seasonal else "healthai"


def _fit_set(series: np.ndarray, targets: np.ndarray, step: int, season: int, median: np.ndarray,
             selected: tuple[str, ...] = ()) -> FitSet:
    points = {"healthai": median, **baselines.all_baselines(series, targets, step, season=season)}
    return FitSet(points, series[targets], int(targets[0]), int(targets[-1]) + 1, selected)


def forecasts_at(
    data: epi_data.EpiData,
    cfg: ForecastConfig,
    origin: int,
    *,
    steps: tuple[int, ...],
    val_start: int | None = None,
    end: int | None = None,
    val_fraction: float = 0.2,
    trainer: Trainer | None = None,
    cache_dir: Path | None = None,
    seeds: tuple[int, ...] = (),
) -> OriginForecasts:
    """Train at ``origin`` (``trainer`` overrides the single-seed ST-GNN and is not cached; ``seeds``
    (>= 2): a seed ensemble, each member cached like a single model) and collect the members'
    forecasts for ``steps``."""
    end = min(origin + data.season, data.n_weeks) if end is None else end
    val_start = int((1 - val_fraction) * origin) if val_start is None else val_start
    sub = replace(data, series=data.series[:end], cuts=(val_start, origin))
    if trainer is None and len(seeds) > 1:
        from healthai_training.forecast.ensemble import ForecastEnsemble

        trained = [_train_cached(sub, replace(cfg, seed=s), cache_dir) for s in seeds]
        model, best_epoch, curve = ForecastEnsemble([t[0] for t in trained]), trained[0][1], trained[0][2]
    elif trainer is None:
        model, best_epoch, curve = _train_cached(sub, cfg, cache_dir)
    else:
        model, best_epoch, curve = trainer(sub, cfg), None, None
    model.eval()
    m = model.median_index
    out = OriginForecasts(origin, val_start, end, model, {}, {}, {}, best_epoch, curve)
    val_t, test_t = np.arange(val_start, origin), np.arange(origin, end)
    flattered = validation_flatters(cfg)
    for s in steps:
        vt = val_t[val_t - s + 1 - model.window >= 0]
        if len(vt):
            median = model_steps(model, sub.series, vt, s)[..., m]
            out.val[s] = _fit_set(sub.series, vt, s, data.season, median, flattered)
        if len(test_t):
            q = model_steps(model, sub.series, test_t, s)
            out.test_q[s] = q
            out.test[s] = _fit_set(sub.series, test_t, s, data.season, q[..., m])
    logger.info("origin %d: trained (epoch %s)", origin, best_epoch)
    return out
