"""Train the ST-GNN forecaster on the benchmark protocol (non-private or DP-SGD) and evaluate it.

One model covers every step 1..S; horizon h is read from step h. Loss: pinball over the quantile
levels plus squared error of the median (scaled space). The checkpoint kept has the lowest validation
RMSE of the median (``select_on="wis"``: the lowest validation pinball loss over the levels). Settings
and their checks: ``forecast.config``. DP-SGD privacy unit: one training window.

``refit=True`` (non-private only): after selecting the epoch count on validation, a fresh model with
the same seed and hyperparameters is trained on train + validation windows for that many epochs and
evaluated on test (scaling stays fitted on training rows; no checkpoint selection in the refit).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

from healthai_training.common import seed_everything
from healthai_training.epi import baselines, metrics
from healthai_training.epi import data as epi_data
from healthai_training.errors import TrainingInputError
from healthai_training.forecast.build import build_forecaster
from healthai_training.forecast.config import (  # noqa: F401  (re-exported)
    HORIZONS,
    PRIVACY_UNIT,
    ForecastConfig,
    validate_config,
)
from healthai_training.forecast.device import forecast_device
from healthai_training.forecast.graph import RegionGraph
from healthai_training.forecast.model import STGNNForecaster
from healthai_training.privacy import make_private, privacy_report, validate_privacy

logger = logging.getLogger(__name__)
PROGRESS_EVERY = 50  # epochs between progress lines (INFO)


@dataclass
class ForecastResult:
    model: STGNNForecaster
    graph: RegionGraph
    metrics: dict[str, object]
    curve: list[dict[str, float]]
    privacy: dict[str, object]
    predictions: dict[str, np.ndarray]


def _split_tensors(
    data: epi_data.EpiData,
    window: int,
    steps: int,
    lo: np.ndarray,
    hi: np.ndarray,
    split: str,
    loss_steps: tuple[int, ...] = (),
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Windows whose step-1 target lies in ``split`` (train / val / trainval); targets outside the
    split, and cells filled by --missing interpolate (``data.imputed``), are masked out."""
    if split == "trainval":  # refit
        targets = np.concatenate([epi_data.target_weeks(data, "train"), epi_data.target_weeks(data, "val")])
    else:
        targets = epi_data.target_weeks(data, split)
    ends = targets[targets - window >= 0]
    first, last = targets[0], targets[-1]
    x = epi_data.windows(data.series, ends, window)
    tgt_idx = ends[:, None] + np.arange(steps)[None, :]
    mask = (tgt_idx >= first) & (tgt_idx <= last)
    if loss_steps:
        mask &= np.isin(np.arange(1, steps + 1), loss_steps)[None, :]
    y = data.series[np.minimum(tgt_idx, data.n_weeks - 1)]  # [B, S, N]
    y_scaled = (y - lo) / np.maximum(hi - lo, 1e-6)
    cells = np.broadcast_to(mask[:, :, None], y.shape).copy()
    if data.imputed is not None:  # a filled-in count is an input, never a target
        cells &= ~data.imputed[np.minimum(tgt_idx, data.n_weeks - 1)]
    as_t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return as_t(x), as_t(y_scaled), as_t(cells)


def region_weights(cfg: ForecastConfig, lo: np.ndarray, hi: np.ndarray) -> torch.Tensor:
    """Per-region loss weights [N] (mean 1): equal, or the squared training range, which turns the
    scaled-space MSE into the count-scale MSE that the pooled RMSE measures."""
    if cfg.region_weighting == "equal":
        return torch.ones(len(lo))
    w = np.maximum(hi - lo, 1e-6) ** 2
    return torch.tensor(w / w.mean(), dtype=torch.float32)


class _ScaledForecaster(nn.Module):
    """Exposes ``forward_scaled`` as ``forward`` so Opacus can wrap the training view."""

    def __init__(self, model: STGNNForecaster) -> None:
        super().__init__()
        self.model = model

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        return self.model.forward_scaled(history)


def quantile_loss(
    q: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor,
    levels: torch.Tensor,
    median_index: int,
    point_weight: float,
) -> torch.Tensor:
    """Masked mean pinball loss over levels + ``point_weight`` × masked MSE of the median."""
    diff = y.unsqueeze(-1) - q
    pin = torch.maximum(levels * diff, (levels - 1) * diff).mean(dim=-1)
    sq = (y - q[..., median_index]) ** 2
    denom = mask.sum().clamp(min=1.0)
    return ((pin + point_weight * sq) * mask).sum() / denom


def evaluate(
    model: STGNNForecaster, data: epi_data.EpiData, horizons: tuple[int, ...], split: str = "test"
) -> tuple[dict, dict]:
    """Per-horizon RMSE/MAE/PCC (median), WIS, 50%/95% coverage on ``split`` weeks, next to the
    baselines; cells filled by --missing interpolate are not scored."""
    model.eval()
    levels = np.asarray(model.quantiles)
    targets = epi_data.target_weeks(data, split)
    out, preds = {}, {}
    with torch.no_grad():
        for h in horizons:
            ends = targets - h + 1
            x = torch.tensor(epi_data.windows(data.series, ends, model.window), dtype=torch.float32)
            q = model(x.to(model.scale_min.device)).cpu().numpy()[:, h - 1]  # [B, N, Q]
            seen = data.observed(targets)
            y = data.series[targets][seen]
            point = q[..., model.median_index][seen]
            q_seen = q[seen]
            row = metrics.point_metrics(y, point)
            row["wis"] = metrics.weighted_interval_score(y, q_seen, levels)
            row["coverage50"] = metrics.coverage(y, q_seen, levels, 0.5)
            row["coverage95"] = metrics.coverage(y, q_seen, levels, 0.95)
            row["baselines"] = {
                name: metrics.point_metrics(y, b[seen])
                for name, b in baselines.all_baselines(data.series, targets, h, season=data.season).items()
            }
            out[str(h)] = row
            preds[str(h)] = q
    return out, preds


def _new_model(graph: RegionGraph, cfg: ForecastConfig, lo: np.ndarray, hi: np.ndarray) -> STGNNForecaster:
    return build_forecaster(
        graph,
        window=cfg.effective_window,
        steps=cfg.steps,
        quantiles=cfg.quantiles,
        hidden=cfg.hidden,
        recent=cfg.recent,
        seasonal=cfg.seasonal,
        base=cfg.base,
        anomaly_lags=cfg.anomaly_lags,
        seasonal_inputs=cfg.seasonal_inputs,
        quantile_init_gap=cfg.quantile_init_gap,
        scale_min=lo,
        scale_max=hi,
        season=cfg.season,
    )


def _train_epoch(
    train_view: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    levels: torch.Tensor,
    median_index: int,
    cfg: ForecastConfig,
    device: torch.device,
) -> tuple[float, int]:
    """One pass over ``loader``; returns (summed loss × batch size, sample count)."""
    train_view.train()
    total, count = 0.0, 0
    for xb, yb, mb in loader:
        if len(xb) == 0:
            continue
        xb, yb, mb = xb.to(device), yb.to(device), mb.to(device)
        optimizer.zero_grad()
        loss = quantile_loss(train_view(xb), yb, mb, levels, median_index, cfg.point_weight)
        loss.backward()
        optimizer.step()
        total, count = total + loss.item() * len(xb), count + len(xb)
    return total, count


def _refit(
    data: epi_data.EpiData,
    graph: RegionGraph,
    cfg: ForecastConfig,
    lo: np.ndarray,
    hi: np.ndarray,
    levels: torch.Tensor,
    *,
    epochs: int,
    device: torch.device,
) -> STGNNForecaster:
    """Fresh model, same seed and hyperparameters, trained on train + validation for ``epochs``."""
    x, y, m = _split_tensors(data, cfg.effective_window, cfg.steps, lo, hi, "trainval", cfg.loss_steps)
    m = m * region_weights(cfg, lo, hi)
    gen = seed_everything(cfg.seed)
    model = _new_model(graph, cfg, lo, hi).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loader = DataLoader(TensorDataset(x, y, m), batch_size=cfg.batch_size, shuffle=True, generator=gen)
    view = _ScaledForecaster(model)
    for _ in tqdm(range(epochs), desc=f"refit {data.name}", leave=False, disable=None):
        _train_epoch(view, loader, optimizer, levels, model.median_index, cfg, device)
    return model.cpu().eval()


def train_forecaster(*, data: epi_data.EpiData, config: ForecastConfig) -> ForecastResult:
    """Validate everything, then train and evaluate. Raises TrainingInputError before any training."""
    validate_config(config, data)
    cfg = config
    window = cfg.effective_window
    a, _ = data.split_points
    lo, hi = epi_data.minmax_fit(data.series, a, cfg.scaling)
    flat = epi_data.flat_regions(data.series, a, data.region_ids)
    if flat:
        logger.warning("%d region(s) never change over the training split (%s%s): scaled by all regions' "
                       "training range; their forecasts learn nothing from their own history until it is "
                       "in the training split", len(flat), ", ".join(flat[:8]),
                       ", ..." if len(flat) > 8 else "")
    x_tr, y_tr, m_tr = _split_tensors(data, window, cfg.steps, lo, hi, "train", cfg.loss_steps)
    x_va, y_va, m_va = _split_tensors(data, window, cfg.steps, lo, hi, "val", cfg.loss_steps)
    weights = region_weights(cfg, lo, hi)
    m_tr, m_va = m_tr * weights, m_va * weights
    if len(x_tr) < 2:
        raise TrainingInputError(f"only {len(x_tr)} training windows; need a longer series", field="series")
    sample_rate = min(1.0, cfg.batch_size / len(x_tr))
    validate_privacy(cfg.privacy, sample_rate=sample_rate, epochs=cfg.epochs)

    device = forecast_device(cfg.device)  # a GPU only where our native graph op passes its self-check
    gen = seed_everything(cfg.seed)
    graph = RegionGraph.from_adjacency(data.adjacency, data.region_ids)
    model = _new_model(graph, cfg, lo, hi).to(device)
    levels = torch.tensor(cfg.quantiles, dtype=torch.float32, device=device)
    train_view: nn.Module = _ScaledForecaster(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loader = DataLoader(
        TensorDataset(x_tr, y_tr, m_tr), batch_size=cfg.batch_size, shuffle=True, generator=gen
    )
    engine = None
    if cfg.privacy.private:
        train_view, optimizer, loader, engine = make_private(
            model=train_view,
            optimizer=optimizer,
            loader=loader,
            settings=cfg.privacy,
            epochs=cfg.epochs,
            generator=gen,
        )

    best_state, best_val, best_epoch, curve = None, float("inf"), 0, []
    for epoch in tqdm(range(cfg.epochs), desc=f"forecast {data.name}", leave=False, disable=None):
        total, count = _train_epoch(train_view, loader, optimizer, levels, model.median_index, cfg, device)
        model.eval()
        with torch.no_grad():
            q_va = model.forward_scaled(x_va.to(device))
            val_loss = float(
                quantile_loss(q_va, y_va.to(device), m_va.to(device), levels, model.median_index, 0.0)
            )
            err = q_va[..., model.median_index] - y_va.to(device)
            val_rmse = float(torch.sqrt((err**2 * m_va.to(device)).sum() / m_va.sum()))
        curve.append(
            {
                "epoch": epoch,
                "train_loss": total / max(count, 1),
                "val_pinball": val_loss,
                "val_rmse_scaled": val_rmse,
            }
        )
        score = val_rmse if cfg.select_on == "rmse" else val_loss
        if score < best_val:
            best_val, best_state, best_epoch = score, copy.deepcopy(model.state_dict()), epoch
        if (epoch + 1) % PROGRESS_EVERY == 0 and epoch + 1 < cfg.epochs:  # counties: 10-25 s an epoch
            logger.info("%s: epoch %d of %d, best validation epoch so far %d", data.name, epoch + 1,
                        cfg.epochs, best_epoch)
    model.load_state_dict(best_state)
    model = model.cpu().eval()
    val_metrics, _ = evaluate(model, data, cfg.horizons, split="val")
    before_refit = None
    if cfg.refit:
        before_refit, _ = evaluate(model, data, cfg.horizons)
        model = _refit(data, graph, cfg, lo, hi, levels, epochs=best_epoch + 1, device=device)
    test, preds = evaluate(model, data, cfg.horizons)
    privacy = privacy_report(
        settings=cfg.privacy,
        engine=engine,
        optimizer=optimizer if engine else None,
        sample_rate=sample_rate,
        epochs=cfg.epochs,
        unit=PRIVACY_UNIT,
    )
    summary = {
        "dataset": data.name,
        "mode": "seasonal" if cfg.seasonal else "window20",
        "window": window,
        "best_val_rmse_scaled": curve[best_epoch]["val_rmse_scaled"],
        "best_epoch": best_epoch,
        "epoch_selected_on": cfg.select_on,
        "val": val_metrics,
        "refit_on_train_val_epochs": best_epoch + 1 if cfg.refit else None,
        "test_before_refit": before_refit,
        "test": test,
        "n_train_windows": len(x_tr),
        "config": {k: v for k, v in asdict(cfg).items() if k != "privacy"},
    }
    return ForecastResult(
        model=model, graph=graph, metrics=summary, curve=curve, privacy=privacy, predictions=preds
    )
