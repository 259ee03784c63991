"""The default forecaster as one module (and so one ONNX graph): the ST-GNN (or a seed ensemble)
stacked with the seasonal baselines computed from the same input window, with calibrated bands.

Input ``history`` [B, W, N] raw counts, W = max(the ST-GNN's window, what the baselines need:
2·season + 2 periods for the mean of the same periods ±2 in the two prior seasons). Outputs
``forecast`` [B, S, N, Q] (per-step residual quantiles on the square-root scale: ``max(√point +
offset, 0)²``) and ``point`` [B, S, N] (the stacked point forecast: per-step convex weights over the
members). Weights and offsets come from ``stacking.fit_stack`` on rolling origins before the test
data; serving needs no torch (it is all in the graph).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from healthai_training.forecast.origins import MEMBERS

HALF_WIDTH = 2  # seasonal mean: periods i - k·season ± 2


def members_window(members: tuple[str, ...], season: int) -> int:
    """Periods of history the baseline members need at step 1."""
    if "seasonal_mean_2x5" in members:
        return 2 * season + HALF_WIDTH
    if "lag52" in members:
        return season
    return 1


class StackedForecaster(nn.Module):
    def __init__(
        self,
        model: nn.Module,
        *,
        members: tuple[str, ...],
        weights: np.ndarray,  # [S, K] convex per step, in ``members`` order
        offsets: np.ndarray,  # [S, Q] residual quantiles per step on the square-root scale
        season: int,
    ) -> None:
        super().__init__()
        unknown = set(members) - set(MEMBERS)
        if unknown or members[0] != "healthai":
            raise ValueError(f"members must start with 'healthai' and come from {MEMBERS}, got {members}")
        steps, q = model.steps, len(model.quantiles)
        if weights.shape != (steps, len(members)) or offsets.shape != (steps, q):
            raise ValueError(f"weights {weights.shape} / offsets {offsets.shape} do not fit {steps} steps, "
                             f"{len(members)} members, {q} levels")
        self.inner = model
        self.members = tuple(members)
        self.inner_window = model.window
        self.window = max(model.window, members_window(self.members, season))
        for attr in ("steps", "quantiles", "n_nodes", "median_index", "recent", "seasonal", "base",
                     "seasonal_inputs", "anomaly_lags"):
            setattr(self, attr, getattr(model, attr))
        self.season = season
        self.register_buffer("scale_min", model.scale_min.clone())
        self.register_buffer("scale_range", model.scale_range.clone())
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32))
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.float32))
        t = self.window - 1
        s = np.arange(1, steps + 1)
        d = np.arange(-HALF_WIDTH, HALF_WIDTH + 1)
        idx = {"last_value": np.full((steps, 1), t),
               "lag52": (t + s - season)[:, None],
               "seasonal_mean_2x5": np.concatenate(
                   [t + s[:, None] - k * season + d[None, :] for k in (1, 2)], axis=1)}
        for name in self.members[1:]:
            self.register_buffer(f"idx_{name}", torch.tensor(idx[name], dtype=torch.long))

    def member_points(self, history: torch.Tensor) -> torch.Tensor:
        """[B, S, N, K]: each member's point forecast per step."""
        inner = self.inner(history[:, self.window - self.inner_window:, :])[..., self.median_index]
        cols = [inner]
        for name in self.members[1:]:
            idx = getattr(self, f"idx_{name}")  # [S, D]
            cols.append(history[:, idx.reshape(-1), :].reshape(history.shape[0], *idx.shape, -1).mean(dim=2))
        return torch.stack(cols, dim=-1)

    def forward(self, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        point = (self.member_points(history) * self.weights[None, :, None, :]).sum(dim=-1)  # [B, S, N]
        root = torch.sqrt(torch.clamp(point, min=0.0)).unsqueeze(-1) + self.offsets[None, :, None, :]
        return torch.clamp(root, min=0.0) ** 2, point
