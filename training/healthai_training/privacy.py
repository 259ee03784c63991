"""Differential privacy settings, validated up front, and the Opacus wiring shared by both models.

DP-SGD with Poisson sampling at q = 1 / len(loader) (Opacus's rate, not batch / n): the noise
multiplier is picked for the target (epsilon, delta) over the planned epochs, composed (RDP) with any
other Gaussian mechanism of the same release (``extra``: the risk model's DP statistics, ``risk.release``).
The card's privacy block lists every mechanism as (noise_multiplier, sample_rate, steps): Opacus's
``RDPAccountant`` with that history recomputes the card's epsilon (:func:`composed_epsilon`).
"""

from __future__ import annotations

import logging
import math
import secrets
import warnings
from dataclasses import dataclass

import torch
from opacus import PrivacyEngine
from opacus.accountants.utils import get_noise_multiplier
from torch.utils.data import DataLoader

from healthai_training.errors import PrivacyBudgetError, TrainingInputError

logger = logging.getLogger(__name__)

ACCOUNTANT = "rdp"
Mechanism = tuple[float, float, int]  # (noise_multiplier, sample_rate, steps): an RDP accountant entry
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


def opacus_sample_rate(examples: int, batch_size: int) -> float:
    """The rate Opacus's Poisson loader samples at (and its accountant uses): 1 / len(loader)."""
    return 1.0 / max(1, math.ceil(examples / batch_size))


def composed_epsilon(history: list[Mechanism] | tuple[Mechanism, ...], delta: float) -> float:
    """Epsilon at ``delta`` of the RDP composition of Gaussian mechanisms (Opacus's RDPAccountant)."""
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [(float(s), float(q), int(n)) for s, q, n in history]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "optimal order is the largest alpha" for weak mechanisms
        return float(accountant.get_epsilon(delta))


def _sigma_with(target: float, delta: float, sample_rate: float, steps: int,
                extra: tuple[Mechanism, ...]) -> float:
    """The smallest DP-SGD noise multiplier (to 1e-3) whose composition with ``extra`` is <= target."""
    def eps(sigma: float) -> float:
        return composed_epsilon([(sigma, sample_rate, steps), *extra], delta)

    if composed_epsilon(list(extra), delta) >= target:
        raise ValueError("the other mechanisms alone spend the target")
    lo, hi = 0.3, 1.0
    while eps(hi) > target:
        lo, hi = hi, hi * 2
        if hi > 4 * MAX_NOISE_MULTIPLIER:
            raise ValueError("no noise multiplier reaches it")
    while hi - lo > 1e-3:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if eps(mid) > target else (lo, mid)
    return hi


def validate_privacy(settings: PrivacySettings, *, sample_rate: float, epochs: int,
                     extra: tuple[Mechanism, ...] = ()) -> float | None:
    """Check the settings and return the noise multiplier DP-SGD needs (None if non-private): Opacus's
    for the target alone, or with ``extra`` mechanisms the one whose RDP composition reaches the target.
    ``sample_rate`` must be the rate the accountant uses (:func:`opacus_sample_rate`).

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
        if extra:
            sigma = _sigma_with(eps, delta, sample_rate, int(epochs / sample_rate), extra)
        else:
            sigma = get_noise_multiplier(target_epsilon=eps, target_delta=delta, sample_rate=sample_rate,
                                         epochs=epochs, accountant=ACCOUNTANT)
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
    noise_multiplier: float | None = None,
) -> tuple[torch.nn.Module, torch.optim.Optimizer, DataLoader, PrivacyEngine]:
    """Wrap model/optimizer/loader with Opacus (Poisson sampling) for the target epsilon, or with
    ``noise_multiplier`` when given (a composed budget, :func:`validate_privacy` with ``extra``).

    The Poisson sampling and the gradient noise draw from a generator seeded by the operating system,
    never from ``generator`` (the run's seed, which the card publishes): noise that anyone can
    regenerate protects nothing. So DP runs are not bit-reproducible; their accounting is."""
    del generator  # the run's seeded generator: model init and splits only
    generator = torch.Generator().manual_seed(secrets.randbits(63))
    engine = PrivacyEngine(accountant=ACCOUNTANT, secure_mode=False)
    if noise_multiplier is not None:
        model, optimizer, loader = engine.make_private(
            module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=noise_multiplier,
            max_grad_norm=settings.max_grad_norm, poisson_sampling=True, noise_generator=generator)
        logger.info("DP-SGD: noise multiplier %.3f, sample rate %.4g", noise_multiplier, 1 / len(loader))
        return model, optimizer, _sampled_by(loader, generator), engine
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
    return model, optimizer, _sampled_by(loader, generator), engine


def _sampled_by(loader: DataLoader, generator: torch.Generator) -> DataLoader:
    """Opacus's Poisson sampler takes the wrapped loader's (seeded) generator: give it ``generator``."""
    sampler = getattr(loader, "batch_sampler", None)
    if sampler is None or not hasattr(sampler, "generator"):
        raise RuntimeError("Opacus's DP data loader has no sampler generator to replace")
    sampler.generator = generator
    return loader


def privacy_report(
    *,
    settings: PrivacySettings,
    engine: PrivacyEngine | None,
    optimizer: torch.optim.Optimizer | None,
    sample_rate: float,
    epochs: int,
    unit: str,
    examples: int | None = None,
    extra: tuple[dict[str, object], ...] = (),
) -> dict[str, object]:
    """The privacy block of a model card; epsilon is the accountant's, not the target. ``sample_rate``,
    ``steps`` and ``noise_multiplier`` are what the accountant used (its history); ``extra``: other
    Gaussian mechanisms of the release ({name, noise_multiplier, sample_rate, steps, ...}), composed
    into epsilon; ``mechanisms`` lists all of them (recompute with :func:`composed_epsilon`)."""
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
    history = list(engine.accountant.history)
    sigma, q = (float(optimizer.noise_multiplier), float(sample_rate))
    steps = sum(int(n) for _, _, n in history)
    if history:
        sigma, q = float(history[0][0]), float(history[0][1])
    sgd = {"name": "dp_sgd", "noise_multiplier": sigma, "sample_rate": q, "steps": steps}
    if len(history) > 1:  # never for one training run; kept exact rather than summarised
        sgd = {"name": "dp_sgd", "history": [list(h) for h in history]}
    mechanisms = [sgd, *extra]
    entries = [*history, *((float(m["noise_multiplier"]), float(m["sample_rate"]), int(m["steps"]))
                           for m in extra)]
    return {
        "private": True,
        "privacy_unit": unit,
        "epsilon": composed_epsilon(entries, settings.delta),
        "target_epsilon": settings.epsilon,
        "delta": settings.delta,
        "max_grad_norm": settings.max_grad_norm,
        "accountant": ACCOUNTANT,
        "noise_multiplier": sigma,
        "epochs": epochs,
        "steps": steps,
        "sample_rate": q,
        **({"expected_batch_size": q * examples} if examples is not None else {}),
        "poisson_sampling": True,
        "mechanisms": mechanisms,
        "recompute": "opacus RDPAccountant with history = [(noise_multiplier, sample_rate, steps) of every "
                     "entry of mechanisms]; get_epsilon(delta)",
    }
