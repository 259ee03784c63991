"""Patient-level (user-level) DP-SGD when a patient has several rows.

Rows are grouped into one training example per patient: a ``[P, K, F]`` tensor (K = the most rows
kept for one patient, padded) with a row mask. The loss of a patient is the mean loss over their
rows, so Opacus computes, clips and noises **one gradient per patient**, and Poisson sampling draws
patients. The accountant's (epsilon, delta) then holds for adding or removing one patient with all
of their rows. A patient with more than ``max_rows`` rows keeps a seeded random ``max_rows`` of them
(the count is reported in the metrics); that bounds padding, not privacy (clipping already bounds a
patient's whole contribution).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader


def patient_tensors(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, rows: np.ndarray, *, max_rows: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Rows ``rows`` of (x, y) grouped by ``groups`` → (X [P,K,F], Y [P,K], mask [P,K], rows dropped)."""
    rng = np.random.default_rng(seed)
    order = np.argsort(groups[rows], kind="stable")
    sorted_rows = rows[order]
    _, starts, counts = np.unique(groups[sorted_rows], return_index=True, return_counts=True)
    k = int(min(max_rows, counts.max()))
    n_pat, n_feat = len(starts), x.shape[1]
    xs = np.zeros((n_pat, k, n_feat), np.float32)
    ys = np.zeros((n_pat, k), np.float32)
    mask = np.zeros((n_pat, k), np.float32)
    dropped = 0
    for p, (start, count) in enumerate(zip(starts, counts, strict=True)):
        mine = sorted_rows[start : start + count]
        if count > k:
            mine = rng.choice(mine, size=k, replace=False)
            dropped += int(count - k)
        xs[p, : len(mine)] = x[mine]
        ys[p, : len(mine)] = y[mine]
        mask[p, : len(mine)] = 1.0
    return torch.tensor(xs), torch.tensor(ys), torch.tensor(mask), dropped


def batch_loss(model: nn.Module, batch: list[torch.Tensor], device: torch.device) -> tuple[torch.Tensor, int]:
    """Mean BCE over the batch's examples; for patient batches, each patient's mean over their rows."""
    if len(batch) == 2:
        xb, yb = (t.to(device) for t in batch)
        return nn.functional.binary_cross_entropy_with_logits(model(xb), yb), len(xb)
    xb, yb, mb = (t.to(device) for t in batch)
    per_row = nn.functional.binary_cross_entropy_with_logits(model(xb).squeeze(-1), yb, reduction="none")
    per_patient = (per_row * mb).sum(dim=1) / mb.sum(dim=1).clamp(min=1.0)
    return per_patient.mean(), len(xb)


def train_epoch(
    model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, device: torch.device
) -> tuple[float, int]:
    """One pass over ``loader`` (Poisson batches may be empty); returns (summed loss, examples)."""
    model.train()
    total, count = 0.0, 0
    for batch in loader:
        if len(batch[0]) == 0:
            continue
        optimizer.zero_grad()
        loss, n = batch_loss(model, batch, device)
        loss.backward()
        optimizer.step()
        total, count = total + loss.item() * n, count + n
    return total, count
