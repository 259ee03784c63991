"""What one site does in a federated round: load its cohort, train locally under DP-SGD, evaluate.

The model is the risk model of ``healthai_training.risk`` with data-independent preprocessing, so
nothing about a site's data leaves it except the DP-trained weights: each feature is scaled by its
spec domain (``(x - min) / (max - min)``) and missing values are imputed with the domain midpoint
(flags 0; ``spec_imputation`` is that rule as the card's ``imputation`` block).

Every site must build its cohort with the coordinator's spec: ``canonical_spec`` is what must agree
(target, features in order, types, columns, units, domains, categories, labels, missing and
out-of-domain policies; not the free-text names and descriptions), ``spec_digest`` its SHA-256, sent
with every round's config and returned with every update; ``spec_differences`` names what differs.

Privacy at a site: DP-SGD (Opacus, Poisson sampling of patients, clip ``max_grad_norm``). The noise
multiplier is chosen once so that all ``rounds x local_epochs`` epochs together meet the site's
target (epsilon, delta); the RDP accountant's history is kept in the site's run state across rounds,
so the epsilon reported each round is what the site has spent so far.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from opacus import PrivacyEngine
from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier
from torch.utils.data import DataLoader, TensorDataset

from healthai.cohort.features import cohort_features
from healthai_training.errors import PrivacyBudgetError, TrainingInputError
from healthai_training.risk import metrics
from healthai_training.risk.cohort import (
    CohortSpec,
    build_cohort,
    fill_value,
    load_spec,
    midpoint,
    read_table,
    spec_features,
)
from healthai_training.risk.data import FeatureSpec, RiskData
from healthai_training.risk.model import RiskNet
from healthai_training.risk.patients import patient_tensors, train_epoch

logger = logging.getLogger(__name__)
ACCOUNTANT = "rdp"
SPEC_MISMATCH = "cohort spec differs from the coordinator's"  # marks the refusal in error replies


class SpecMismatchError(TrainingInputError):
    """This site's cohort spec is not the coordinator's: it refuses to train or evaluate."""


def _norm(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)  # 700 and 700.0 are the same bound
    if isinstance(value, list | tuple):
        return [_norm(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _norm(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    return str(value)


def canonical_spec(spec: CohortSpec) -> dict[str, Any]:
    """What every site's spec must share with the coordinator's (descriptions and names left out)."""
    features = []
    for rule in spec.features:
        raw = asdict(rule)
        raw.pop("description", None)
        features.append(_norm(raw))
    return {"target": spec.target, "positive": _norm(spec.positive), "features": features}


def canonical_json(spec: CohortSpec) -> str:
    return json.dumps(canonical_spec(spec), sort_keys=True, separators=(",", ":"))


def spec_digest(spec: CohortSpec) -> str:
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()


def spec_differences(site: dict[str, Any], coordinator: dict[str, Any], *, limit: int = 6) -> list[str]:
    """What differs between two canonical specs, as ``where: site X, coordinator Y`` lines."""
    out = [f"{k}: site {site.get(k)!r}, coordinator {coordinator.get(k)!r}" for k in ("target", "positive")
           if site.get(k) != coordinator.get(k)]
    mine = {f["name"]: f for f in site.get("features", [])}
    theirs = {f["name"]: f for f in coordinator.get("features", [])}
    if list(mine) != list(theirs):
        out.append(f"features (in order): site {list(mine)}, coordinator {list(theirs)}")
    for name in (n for n in theirs if n in mine):
        for key in sorted(set(mine[name]) | set(theirs[name])):
            if mine[name].get(key) != theirs[name].get(key):
                out.append(f"features.{name}.{key}: site {mine[name].get(key)!r}, "
                           f"coordinator {theirs[name].get(key)!r}")
    return out[:limit] + ([f"... and {len(out) - limit} more"] if len(out) > limit else [])


def check_spec(spec: CohortSpec, config: dict[str, Any]) -> str:
    """Refuse (``SpecMismatchError``) a round whose coordinator spec is not this site's; its digest."""
    digest = spec_digest(spec)
    theirs = config.get("spec-digest")
    if theirs is None or str(theirs) == digest:
        return digest
    try:
        diff = spec_differences(canonical_spec(spec), json.loads(str(config.get("spec-canonical", "{}"))))
    except ValueError:
        diff = []
    raise SpecMismatchError(f"{SPEC_MISMATCH} (sha256 {digest[:12]} here, {str(theirs)[:12]} "
                            f"at the coordinator): {'; '.join(diff) or 'see the coordinator spec'}; "
                            "use the coordinator's spec", field="spec")


def spec_imputation(spec: CohortSpec) -> dict[str, Any]:
    """The card's ``imputation`` block for what sites do: domain midpoints (flags 0), from the spec alone."""
    columns = sorted({c for rule in spec.features for c in rule.columns})
    table = cohort_features(pd.DataFrame({c: pd.Series([], dtype=float) for c in columns}), spec)
    return {"values": {n: fill_value(table.domains[n], n) for n in table.names if n in table.imputable},
            "indicators": dict(table.indicators), "rule": "domain midpoint (flags: 0)"}


def json_safe(value: Any) -> Any:
    """``value`` with every NaN / inf float as None (JSON has no NaN; strict parsers refuse it)."""
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


@dataclass(frozen=True)
class LocalConfig:
    rounds: int
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    epsilon: float | None = 1.2  # None: non-private
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    seed: int = 0


def load_site(table: Path | str, spec: Path | str, *, seed: int) -> tuple[RiskData, CohortSpec]:
    parsed = load_spec(spec)
    data = build_cohort(read_table(table), parsed, seed=seed, source=Path(table).name, impute="midpoint")
    return data, parsed


Features = tuple[list[FeatureSpec], dict[str, dict[str, Any]]]


def model_features(spec: CohortSpec) -> Features:
    features, domains = spec_features(spec)
    for f in features:
        midpoint(domains[f.name], f.name)  # every feature needs a bounded domain
    return features, domains


def new_model_for(features: Features, *, hidden: int, seed: int | None = None) -> RiskNet:
    """Scaling by spec domains, ``(x - min) / (max - min)``: the same at every site, no data needed."""
    names, domains = features
    lo = np.array([float(domains[f.name]["min"]) for f in names], np.float32)
    hi = np.array([float(domains[f.name]["max"]) for f in names], np.float32)
    if seed is not None:
        torch.manual_seed(seed)
    return RiskNet(mean=lo, std=np.maximum(hi - lo, 1e-6), hidden=hidden)


def new_model(data: RiskData, *, hidden: int) -> RiskNet:
    return new_model_for((data.features, data.domains or {}), hidden=hidden)


def get_weights(net: RiskNet) -> list[np.ndarray]:
    """The trainable arrays (the scaling buffers are fixed by the spec and never exchanged)."""
    return [p.detach().cpu().numpy().copy() for p in net.body.parameters()]


def check_weights(net: RiskNet, arrays: list[np.ndarray], *, who: str) -> None:
    """Refuse arrays that do not fit the model: count, shapes, dtype, finiteness."""
    expected = [tuple(p.shape) for p in net.body.parameters()]
    got = [tuple(np.shape(a)) for a in arrays]
    if got != expected:
        raise TrainingInputError(f"{who}: {len(got)} arrays of shapes {got}, the model has {expected}",
                                 field="parameters")
    for i, a in enumerate(arrays):
        if not np.issubdtype(np.asarray(a).dtype, np.floating):
            raise TrainingInputError(f"{who}: array {i} has dtype {np.asarray(a).dtype}, expected float",
                                     field="parameters")
        if not np.all(np.isfinite(a)):
            raise TrainingInputError(f"{who}: array {i} holds NaN or inf", field="parameters")


def set_weights(net: RiskNet, arrays: list[np.ndarray], *, who: str = "update") -> None:
    check_weights(net, arrays, who=who)
    with torch.no_grad():
        for p, a in zip(net.body.parameters(), arrays, strict=True):
            p.copy_(torch.as_tensor(np.asarray(a, np.float32)))


def training_set(data: RiskData, rows: np.ndarray, *, seed: int) -> TensorDataset:
    """One example per row, or per patient when a patient may have several rows (patient-level DP)."""
    if data.groups is None:
        return TensorDataset(torch.tensor(data.x[rows]), torch.tensor(data.y[rows]).reshape(-1, 1))
    px, py, mask, _ = patient_tensors(data.x, data.y, data.groups, rows, max_rows=16, seed=seed)
    return TensorDataset(px, py, mask)


def noise_for(cfg: LocalConfig, *, n_examples: int) -> tuple[float, float]:
    """(noise multiplier, sample rate) that meet the site's target over all rounds."""
    q = 1.0 / math.ceil(n_examples / cfg.batch_size)  # what Opacus' Poisson loader uses
    if cfg.epsilon is None:
        return 0.0, q
    try:
        sigma = get_noise_multiplier(target_epsilon=cfg.epsilon, target_delta=cfg.delta, sample_rate=q,
                                     epochs=cfg.rounds * cfg.local_epochs, accountant=ACCOUNTANT)
    except ValueError as exc:
        raise PrivacyBudgetError(f"epsilon={cfg.epsilon} cannot be reached with {n_examples} patients, "
                                 f"batch {cfg.batch_size}, {cfg.rounds} rounds x {cfg.local_epochs} epochs",
                                 field="epsilon") from exc
    return float(sigma), q


def local_round(
    net: RiskNet, train: TensorDataset, cfg: LocalConfig, *, history: list[tuple[float, float, int]],
    seed: int,
) -> dict[str, float]:
    """Train ``net`` in place for ``cfg.local_epochs``; append this round to the accountant ``history``."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    sigma, q = noise_for(cfg, n_examples=len(train))
    loader = DataLoader(train, batch_size=cfg.batch_size, shuffle=True, generator=gen)
    optimizer = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=0.9)
    model: torch.nn.Module = net
    engine = None
    if cfg.epsilon is not None:
        engine = PrivacyEngine(accountant=ACCOUNTANT)
        model, optimizer, loader = engine.make_private(
            module=net, optimizer=optimizer, data_loader=loader, noise_multiplier=sigma,
            max_grad_norm=cfg.max_grad_norm, poisson_sampling=True, noise_generator=gen,
        )
    total, count = 0.0, 0
    for _ in range(cfg.local_epochs):
        t, c = train_epoch(model, loader, optimizer, torch.device("cpu"))
        total, count = total + t, count + c
    epsilon = float("nan")
    if engine is not None:
        history.extend(engine.accountant.history)  # (noise multiplier, sample rate, steps) entries
        accountant = RDPAccountant()
        accountant.history = list(history)
        epsilon = float(accountant.get_epsilon(cfg.delta))
    return {"train_loss": total / max(count, 1), "epsilon": epsilon, "noise_multiplier": sigma,
            "sample_rate": q}


def evaluate(net: RiskNet, data: RiskData, rows: np.ndarray) -> dict[str, float]:
    net.eval()
    with torch.no_grad():
        p = torch.sigmoid(net(torch.tensor(data.x[rows]))).numpy().ravel()
    y = data.y[rows]
    out = {"accuracy": float(np.mean((p >= 0.5) == (y >= 0.5))), "n": float(len(rows)),
           "brier": float(np.mean((p - y) ** 2))}
    out["auroc"] = metrics.auroc(y, p) if 0 < y.mean() < 1 else float("nan")
    return out
