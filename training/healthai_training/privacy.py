"""Differential privacy settings, validated up front, and the Opacus wiring shared by both models.

DP-SGD with Poisson sampling: ``PrivacyEngine.make_private_with_epsilon`` picks the noise multiplier
for the target (epsilon, delta) over the planned epochs; the accountant's epsilon after training is
what the model card reports.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from opacus import PrivacyEngine
from opacus.accountants.utils import get_noise_multiplier
from torch.utils.data import DataLoader

from healthai_training.errors import PrivacyBudgetError, TrainingInputError

logger = logging.getLogger(__name__)

ACCOUNTANT = "rdp"
# Above this noise multiplier the model learns nothing useful; refuse instead of training noise.
MAX_NOISE_MULTIPLIER = 50.0


@dataclass(frozen=True)
class PrivacySettings:
    """``epsilon=None`` means non-private training (for comparison)."""

    epsilon: float | None = 1.2
    delta: float = 1e-5
    max_grad_norm: float = 1.0

    @property
    def private(self) -> bool:
        return self.epsilon is not None


def validate_privacy(settings: PrivacySettings, *, sample_rate: float, epochs: int) -> float | None:
    """Check the settings and return the noise multiplier Opacus will need (None if non-private).

    Raises before any training: epsilon <= 0, delta outside (0, 1), clip norm <= 0, sample rate
    outside (0, 1], epochs < 1, or a target that cannot be reached with these epochs.
    """
    if epochs < 1:
        raise TrainingInputError(f"epochs must be >= 1, got {epochs}", field="epochs")
    if not settings.private:
        return None
    eps, delta = settings.epsilon, settings.delta
    if not (isinstance(eps, int | float) and math.isfinite(eps) and eps > 0):
        raise TrainingInputError(f"epsilon must be a finite number > 0, got {eps}", field="epsilon")
    if not (math.isfinite(delta) and 0 < delta < 1):
        raise TrainingInputError(f"delta must be in (0, 1), got {delta}", field="delta")
    if not (math.isfinite(settings.max_grad_norm) and settings.max_grad_norm > 0):
        raise TrainingInputError(
            f"max_grad_norm must be > 0, got {settings.max_grad_norm}", field="max_grad_norm"
        )
    if not 0 < sample_rate <= 1:
        raise TrainingInputError(f"sample_rate must be in (0, 1], got {sample_rate}", field="sample_rate")
    try:
        sigma = get_noise_multiplier(
            target_epsilon=eps,
            target_delta=delta,
            sample_rate=sample_rate,
            epochs=epochs,
            accountant=ACCOUNTANT,
        )
    except ValueError as exc:
        raise PrivacyBudgetError(
            f"epsilon={eps} at delta={delta} cannot be reached with sample_rate={sample_rate:.4g} "
            f"over {epochs} epochs ({exc})",
            field="epsilon",
        ) from exc
    if sigma > MAX_NOISE_MULTIPLIER:
        raise PrivacyBudgetError(
            f"epsilon={eps} at delta={delta} needs noise multiplier {sigma:.1f} "
            f"(> {MAX_NOISE_MULTIPLIER}) with sample_rate={sample_rate:.4g} over {epochs} epochs; "
            "raise epsilon, lower epochs or use more data",
            field="epsilon",
        )
    return sigma


def make_private(
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader,
    settings: PrivacySettings,
    epochs: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.nn.Module, torch.optim.Optimizer, DataLoader, PrivacyEngine]:
    """Wrap model/optimizer/loader with Opacus (Poisson sampling) for the target epsilon."""
    engine = PrivacyEngine(accountant=ACCOUNTANT, secure_mode=False)
    model, optimizer, loader = engine.make_private_with_epsilon(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        target_epsilon=settings.epsilon,
        target_delta=settings.delta,
        epochs=epochs,
        max_grad_norm=settings.max_grad_norm,
        poisson_sampling=True,
        noise_generator=generator,
    )
    logger.info(
        "DP-SGD: noise multiplier %.3f, sample rate %.4g", optimizer.noise_multiplier, 1 / len(loader)
    )
    return model, optimizer, loader, engine


def privacy_report(
    *,
    settings: PrivacySettings,
    engine: PrivacyEngine | None,
    optimizer: torch.optim.Optimizer | None,
    sample_rate: float,
    epochs: int,
    unit: str,
) -> dict[str, object]:
    """The privacy block of a model card; epsilon is the accountant's, not the target."""
    if engine is None or not settings.private:
        return {
            "private": False,
            "privacy_unit": unit,
            "epsilon": None,
            "delta": None,
            "max_grad_norm": None,
            "accountant": None,
            "noise_multiplier": None,
            "target_epsilon": None,
            "epochs": epochs,
            "sample_rate": sample_rate,
        }
    return {
        "private": True,
        "privacy_unit": unit,
        "epsilon": float(engine.get_epsilon(settings.delta)),
        "target_epsilon": settings.epsilon,
        "delta": settings.delta,
        "max_grad_norm": settings.max_grad_norm,
        "accountant": ACCOUNTANT,
        "noise_multiplier": float(optimizer.noise_multiplier),
        "epochs": epochs,
        "sample_rate": sample_rate,
        "poisson_sampling": True,
    }
