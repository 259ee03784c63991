"""Small MLP risk model with standardisation and Platt calibration inside the module (and the ONNX)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class RiskNet(nn.Module):
    """Raw features [B, F] → logit [B, 1]; standardisation constants are buffers."""

    def __init__(self, *, mean: np.ndarray, std: np.ndarray, hidden: int = 32,
                 clip: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(np.where(std > 1e-6, std, 1.0), dtype=torch.float32))
        n = len(mean)
        self.clip = Clip(*clip) if clip is not None else None  # a DP model's clipping bounds
        self.body = (
            nn.Sequential(nn.Linear(n, hidden), nn.ReLU(), nn.Linear(hidden, 1))
            if hidden
            else nn.Linear(n, 1)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.clip(features) if self.clip is not None else features
        return self.body((x - self.mean) / self.std)


class Clip(nn.Module):
    """Each feature held to [low, high]: a DP model's clipping bounds of features open on a side, so a
    value past the bound is scored as the bound, as training saw it (exported as ONNX Max and Min)."""

    def __init__(self, low: np.ndarray, high: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("low", torch.tensor(low, dtype=torch.float32))
        self.register_buffer("high", torch.tensor(high, dtype=torch.float32))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.minimum(torch.maximum(features, self.low), self.high)


class CalibratedRisk(nn.Module):
    """``probability = sigmoid(a * logit + b)`` with (a, b) fitted on the validation split (Platt)."""

    def __init__(self, net: RiskNet, a: float = 1.0, b: float = 0.0) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("platt", torch.tensor([a, b], dtype=torch.float32))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.platt[0] * self.net(features) + self.platt[1])

    def folded(self) -> nn.Sequential:
        """The same function with the standardisation folded into the first linear layer and the
        Platt scaling into the last (exact algebra, in float64): ``Gemm [-> Relu -> Gemm] -> Sigmoid``
        instead of six to eight ONNX nodes. What is exported: every node is a kernel call per run,
        and for a one-patient request ONNX Runtime's per-node cost is most of the model's time."""
        layers = [m for m in self.net.body.modules() if isinstance(m, nn.Linear | nn.ReLU)]
        linears = [m for m in layers if isinstance(m, nn.Linear)]
        mean, std = self.net.mean.double(), self.net.std.double()
        a, b = (float(v) for v in self.platt.double())
        out: list[nn.Module] = []
        for layer in layers:
            if not isinstance(layer, nn.Linear):
                out.append(nn.ReLU())
                continue
            weight, bias = layer.weight.detach().double(), layer.bias.detach().double()
            if layer is linears[0]:  # w · (x - mean) / std + c = (w / std) · x + (c - w · (mean / std))
                weight, bias = weight / std, bias - weight @ (mean / std)
            if layer is linears[-1]:  # a · (w · h + c) + b
                weight, bias = a * weight, a * bias + b
            folded = nn.Linear(layer.in_features, layer.out_features)
            with torch.no_grad():
                folded.weight.copy_(weight.float())
                folded.bias.copy_(bias.float())
            out.append(folded)
        clip = [self.net.clip] if self.net.clip is not None else []
        return nn.Sequential(*clip, *out, nn.Sigmoid()).eval()


def fit_platt(logits: torch.Tensor, labels: torch.Tensor, *, steps: int = 200) -> tuple[float, float]:
    """Minimise the validation log-loss of ``sigmoid(a * logit + b)`` over (a, b)."""
    ab = torch.tensor([1.0, 0.0], requires_grad=True)
    opt = torch.optim.LBFGS([ab], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")
    z, y = logits.detach().reshape(-1), labels.reshape(-1)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(ab[0] * z + ab[1], y)
        loss.backward()
        return loss

    opt.step(closure)
    a, b = (float(v) for v in ab.detach())
    return a, b
