"""Seed ensemble of forecasters, exported as one ONNX model.

Each quantile level is the mean of the members' values at that level (quantile averaging, or
"Vincentization"): averaging level by level keeps the levels ordered, so the ensemble is
non-crossing like its members. Members share data, split, scaling and settings; only the seed
differs. Non-private only: K members trained on the same windows would spend the privacy budget K
times, and the accountant here tracks one training run.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from healthai_training.epi import data as epi_data
from healthai_training.errors import TrainingInputError
from healthai_training.forecast.model import STGNNForecaster
from healthai_training.forecast.train import ForecastConfig, ForecastResult, evaluate, train_forecaster

SHARED_ATTRS = (
    "window",
    "recent",
    "seasonal",
    "base",
    "seasonal_inputs",
    "anomaly_lags",
    "steps",
    "quantiles",
    "n_nodes",
    "median_index",
    "season",
)


class ForecastEnsemble(nn.Module):
    """Mean of K forecasters, level by level; same interface as ``STGNNForecaster``."""

    def __init__(self, members: list[STGNNForecaster]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        first = members[0]
        for m in members[1:]:
            diff = [a for a in SHARED_ATTRS if getattr(m, a) != getattr(first, a)]
            if diff or not torch.equal(m.scale_min, first.scale_min):
                raise ValueError(f"ensemble members differ in {diff or ['scale']}")
        self.members = nn.ModuleList(members)
        for attr in SHARED_ATTRS:
            setattr(self, attr, getattr(first, attr))
        self.register_buffer("scale_min", first.scale_min.clone())
        self.register_buffer("scale_range", first.scale_range.clone())

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(history) for m in self.members]).mean(dim=0)


def train_ensemble(
    *, data: epi_data.EpiData, config: ForecastConfig, seeds: tuple[int, ...]
) -> ForecastResult:
    """Train one member per seed (``config.seed`` is ignored) and evaluate their mean."""
    if config.privacy.private:
        raise TrainingInputError(
            "ensembles are non-private only (each member would spend the privacy budget again)",
            field="ensemble",
        )
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise TrainingInputError(f"an ensemble needs >= 2 distinct seeds, got {list(seeds)}", field="seeds")
    results = [train_forecaster(data=data, config=replace(config, seed=s)) for s in seeds]
    model = ForecastEnsemble([r.model for r in results]).eval()
    val, _ = evaluate(model, data, config.horizons, split="val")
    test, preds = evaluate(model, data, config.horizons)
    members = [
        {
            "seed": s,
            "best_epoch": r.metrics["best_epoch"],
            "val_rmse": {h: row["rmse"] for h, row in r.metrics["val"].items()},
            "test_rmse": {h: row["rmse"] for h, row in r.metrics["test"].items()},
        }
        for s, r in zip(seeds, results, strict=True)
    ]
    metrics = {
        **results[0].metrics,
        "val": val,
        "test": test,
        "ensemble_seeds": list(seeds),
        "members": members,
    }
    metrics.pop("best_epoch", None)
    return ForecastResult(
        model=model,
        graph=results[0].graph,
        metrics=metrics,
        curve=results[0].curve,
        privacy=results[0].privacy,
        predictions=preds,
    )
