"""Train a risk model (DP-SGD with Opacus or non-private), calibrate on validation, evaluate on test."""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

from healthai_training.common import resolve_device, seed_everything
from healthai_training.errors import TrainingInputError
from healthai_training.privacy import (
    PrivacySettings,
    make_private,
    opacus_sample_rate,
    privacy_report,
    validate_privacy,
)
from healthai_training.risk import metrics
from healthai_training.risk.data import RiskData
from healthai_training.risk.model import CalibratedRisk, RiskNet, fit_platt
from healthai_training.risk.patients import patient_tensors, train_epoch
from healthai_training.risk.release import accountant_entries, clip_bounds, impute, release

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RiskConfig:
    hidden: int = 32
    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3
    optimizer: str = "adam"  # or "sgd" (momentum 0.9)
    shrink_inputs: bool = False  # divide standardised features by sqrt(F) (see train_risk)
    max_rows_per_patient: int = 16  # several rows per patient: rows kept per patient (patients.py)
    seed: int = 0
    device: str = "auto"
    privacy: PrivacySettings = field(default_factory=PrivacySettings)


@dataclass
class RiskResult:
    model: CalibratedRisk
    metrics: dict[str, object]
    curve: list[dict[str, float]]
    privacy: dict[str, object]
    test_probabilities: np.ndarray
    test_labels: np.ndarray
    baseline: np.ndarray  # training mean per feature (occlusion baseline; DP runs: the released one)
    risk_bands: list[dict[str, object]]


def _validate(data: RiskData, cfg: RiskConfig) -> None:
    if data.x.ndim != 2 or data.x.shape[1] != len(data.features):
        raise TrainingInputError(
            f"{data.name}: x has shape {data.x.shape} but {len(data.features)} features", field="features"
        )
    if not np.all(np.isfinite(data.x)):
        raise TrainingInputError(f"{data.name}: features hold NaN/inf after imputation", field="features")
    if np.isnan(data.y).any() or not set(np.unique(data.y)) <= {0.0, 1.0}:
        raise TrainingInputError(f"{data.name}: labels must be 0/1 without NaN", field="label")
    for part in ("train", "val", "test"):
        labels = data.y[data.split[part]]
        if len(labels) == 0 or labels.min() == labels.max():
            raise TrainingInputError(f"{data.name}: the {part} split needs both classes", field="split")
    if cfg.optimizer not in ("adam", "sgd"):
        raise TrainingInputError(
            f"optimizer must be 'adam' or 'sgd', got {cfg.optimizer!r}", field="optimizer"
        )
    if cfg.batch_size < 1 or cfg.lr <= 0 or cfg.hidden < 0:
        raise TrainingInputError("batch_size and lr must be positive, hidden >= 0", field="config")


def risk_bands(prevalence: float) -> list[dict[str, object]]:
    """Three bands: low below the training base rate, high from twice the base rate (capped at 0.9)."""
    t1 = float(prevalence)
    t2 = float(min(2 * prevalence, 0.9)) if 2 * prevalence < 0.95 else float((1 + prevalence) / 2)
    return [
        {"name": "low", "min": 0.0, "max": t1},
        {"name": "medium", "min": t1, "max": t2},
        {"name": "high", "min": t2, "max": 1.0},
    ]


def train_risk(*, data: RiskData, config: RiskConfig) -> RiskResult:
    """Validate, train (private unless ``config.privacy.epsilon`` is None), calibrate, evaluate.

    A private run releases nothing exact about its training patients: the standardisation, baselines,
    imputation values and base rate come from ``risk.release`` (DP, composed into the reported epsilon,
    listed in ``privacy.released`` and ``privacy.mechanisms``); ``data`` itself is not changed."""
    cfg = config
    _validate(data, cfg)
    tr, va, te = (data.split[k] for k in ("train", "val", "test"))
    examples = len(np.unique(data.groups[tr])) if data.groups is not None else len(tr)
    sample_rate = opacus_sample_rate(examples, cfg.batch_size)  # the rate the accountant uses
    sigma = validate_privacy(cfg.privacy, sample_rate=sample_rate, epochs=cfg.epochs)  # DP-SGD alone
    if cfg.privacy.private:  # composed with the DP statistics (risk.release)
        extra = accountant_entries(float(cfg.privacy.epsilon), cfg.privacy.delta, data.features)
        sigma = validate_privacy(cfg.privacy, sample_rate=sample_rate, epochs=cfg.epochs, extra=extra)
    rel = None
    if cfg.privacy.private:
        rel = release(data, epsilon=float(cfg.privacy.epsilon), delta=cfg.privacy.delta)
        data = replace(data, x=impute(data, rel))
    x, y = torch.tensor(data.x), torch.tensor(data.y).reshape(-1, 1)
    if data.groups is not None:  # one example per patient: patient-level DP (patients.py)
        px, py, pmask, rows_capped = patient_tensors(
            data.x, data.y, data.groups, tr, max_rows=cfg.max_rows_per_patient, seed=cfg.seed
        )
        train_set = TensorDataset(px, py, pmask)
    else:
        train_set, rows_capped = TensorDataset(x[tr], y[tr]), 0
    device = resolve_device(cfg.device)
    gen = seed_everything(cfg.seed)
    if rel is not None:
        mean, std = rel.mean.astype(np.float32), rel.std.astype(np.float32)
    else:
        mean, std = data.x[tr].mean(axis=0), data.x[tr].std(axis=0)
    # Optionally divide standardised inputs by sqrt(F): per-example gradient norms then sit near the
    # clipping norm instead of ~sqrt(F) times above it (less clipping bias under DP-SGD).
    spread = std * np.sqrt(len(mean)) if cfg.shrink_inputs else std
    net = RiskNet(mean=mean, std=spread, hidden=cfg.hidden,
                  clip=clip_bounds(rel) if rel is not None else None).to(device)
    loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, generator=gen)
    if cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=0.9)
    else:
        optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    model: nn.Module = net
    engine = None
    if cfg.privacy.private:
        model, optimizer, loader, engine = make_private(
            model=net,
            optimizer=optimizer,
            loader=loader,
            settings=cfg.privacy,
            epochs=cfg.epochs,
            generator=gen,
            noise_multiplier=sigma,
        )
    loss_fn = nn.BCEWithLogitsLoss()
    curve, best_state, best_val = [], None, float("inf")
    for epoch in tqdm(range(cfg.epochs), desc=f"risk {data.name}", leave=False, disable=None):
        total, count = train_epoch(model, loader, optimizer, device)
        net.eval()
        with torch.no_grad():
            val_loss = float(loss_fn(net(x[va].to(device)), y[va].to(device)))
            val_auc = metrics.auroc(data.y[va], net(x[va].to(device)).cpu().numpy())
        curve.append(
            {"epoch": epoch, "train_loss": total / max(count, 1), "val_loss": val_loss, "val_auroc": val_auc}
        )
        # Non-private runs keep the best validation epoch; DP runs keep the last (the accounted release).
        if not cfg.privacy.private and val_loss < best_val:
            best_val, best_state = val_loss, copy.deepcopy(net.state_dict())
    if best_state is not None:
        net.load_state_dict(best_state)
    net = net.cpu().eval()
    with torch.no_grad():
        a, b = fit_platt(net(x[va]), y[va])
        calibrated = CalibratedRisk(net, a, b).eval()
        p_val = calibrated(x[va]).numpy().ravel()
        p_test = calibrated(x[te]).numpy().ravel()
        uncal_test = torch.sigmoid(net(x[te])).numpy().ravel()
    results = {
        "dataset": data.name,
        "test": metrics.all_metrics(data.y[te], p_test),
        "test_uncalibrated": metrics.all_metrics(data.y[te], uncal_test),
        "val": metrics.all_metrics(data.y[va], p_val),
        "platt": {"a": a, "b": b},
        "split_sizes": {k: len(v) for k, v in data.split.items()},
        "training_examples": {"unit": "patient" if data.groups is not None else "row",
                              "count": len(train_set), "rows_capped": rows_capped},
        "config": {k: v for k, v in asdict(cfg).items() if k != "privacy"},
    }
    privacy = privacy_report(
        settings=cfg.privacy,
        engine=engine,
        optimizer=optimizer if engine else None,
        sample_rate=sample_rate,
        epochs=cfg.epochs,
        unit=data.description["privacy_unit"],
        examples=len(train_set),
        extra=rel.mechanisms if rel is not None else (),
    )
    if rel is not None:
        privacy["released"] = rel.card_block([f.name for f in data.features])
    return RiskResult(
        model=calibrated,
        metrics=results,
        curve=curve,
        privacy=privacy,
        test_probabilities=p_test,
        test_labels=data.y[te],
        baseline=mean,
        risk_bands=risk_bands(rel.prevalence if rel is not None else float(data.y[tr].mean())),
    )
