"""ST-GNN forecaster: per-region temporal encoder → graph aggregation (``healthai.ops``) → quantile head.

Input ``history`` [B, W, N] raw weekly counts; output ``forecast`` [B, S, N, Q] counts for steps
1..S ahead at Q quantile levels. Min-max scaling (fitted on training rows) is inside the module, so
the exported ONNX graph takes and returns the original count scale. Quantiles cannot cross: the
median is predicted directly and the other levels as cumulative softplus offsets from it.

Two modes: ``seasonal=False`` sees only the last ``recent`` weeks (the papers' 20-week window);
``seasonal=True`` also reads, for every step, the same week one season (52 weeks) earlier and the
mean of the five weeks around it, so the window must be at least 54 weeks.

Base of the median (``base``): ``"last"`` — residual over the last observed week (default);
``"seasonal_mix"`` (seasonal mode only) — residual over a learned convex mix, per step, of the last
observed week, the same week a season ago (lag 52) and the mean of the five weeks around it,
initialised towards lag 52; ``"lag52"`` (seasonal mode only) — residual over the same week a
season ago (fixed seasonal-naive residual: the network predicts y[t+h] - y[t+h-52]).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from healthai.ops.quantile_head import quantile_head, quantile_offsets, scaled_quantiles

FLUSIGHT_QUANTILES = (
    0.01,
    0.025,
    0.05,
    0.10,
    0.15,
    0.20,
    0.25,
    0.30,
    0.35,
    0.40,
    0.45,
    0.50,
    0.55,
    0.60,
    0.65,
    0.70,
    0.75,
    0.80,
    0.85,
    0.90,
    0.95,
    0.975,
    0.99,
)
SEASON = 52
SEASON_HALF_WIDTH = 2
BASES = ("last", "seasonal_mix", "lag52")
SEASONAL_INPUTS = ("levels", "anomalies")
SEASONAL_MIX_INIT = (0.0, 2.0, 0.0)  # softmax logits for (last week, lag 52, seasonal mean)


MAX_SEASONAL_STEPS = SEASON - SEASON_HALF_WIDTH  # week t+s-52+2 must already be observed


def max_seasonal_steps(season: int = SEASON) -> int:
    """Period t+s-season+2 must already be observed."""
    return season - SEASON_HALF_WIDTH


def seasonal_window(steps: int, anomaly_lags: int = 0, season: int = SEASON) -> int:
    """Smallest window that holds period ``t + s - season ± 2`` for every step s = 1..steps (step 1
    reaches furthest back, so it does not depend on ``steps`` as long as ``steps <= season - 2``) and,
    with ``anomaly_lags`` K, the K last periods and the same K periods a season earlier."""
    if steps > max_seasonal_steps(season):
        raise ValueError(f"seasonal mode supports at most {max_seasonal_steps(season)} steps, got {steps}")
    return season + max(SEASON_HALF_WIDTH, anomaly_lags)


class STGNNForecaster(nn.Module):
    def __init__(
        self,
        *,
        spatial: nn.Module,
        n_nodes: int,
        window: int,
        steps: int,
        quantiles: tuple[float, ...] = FLUSIGHT_QUANTILES,
        hidden: int = 32,
        recent: int = 20,
        seasonal: bool = False,
        base: str = "last",
        anomaly_lags: int = 0,
        seasonal_inputs: str = "levels",
        quantile_init_gap: float | None = None,
        scale_min: np.ndarray | None = None,
        scale_max: np.ndarray | None = None,
        season: int = SEASON,
    ) -> None:
        super().__init__()
        if season < 2 * SEASON_HALF_WIDTH + 1:
            raise ValueError(f"season must be >= {2 * SEASON_HALF_WIDTH + 1} periods, got {season}")
        self.season = int(season)
        if base not in BASES:
            raise ValueError(f"base must be one of {BASES}, got {base!r}")
        if base != "last" and not seasonal:
            raise ValueError(f"base={base!r} needs seasonal=True")
        levels = np.asarray(quantiles, dtype=np.float64)
        if (
            levels.ndim != 1
            or levels.size < 1
            or np.any(np.diff(levels) <= 0)
            or levels[0] <= 0
            or levels[-1] >= 1
        ):
            raise ValueError(f"quantiles must be strictly increasing in (0, 1), got {list(quantiles)}")
        if recent > window:
            raise ValueError(f"recent={recent} exceeds window={window}")
        if anomaly_lags and not seasonal:
            raise ValueError("anomaly_lags needs seasonal=True")
        if seasonal_inputs not in SEASONAL_INPUTS or (seasonal_inputs != "levels" and not seasonal):
            raise ValueError(
                f"seasonal_inputs must be one of {SEASONAL_INPUTS} (seasonal mode), got {seasonal_inputs!r}"
            )
        if seasonal_inputs == "anomalies" and anomaly_lags < 1:
            raise ValueError("seasonal_inputs='anomalies' needs anomaly_lags >= 1")
        self.seasonal_inputs = seasonal_inputs
        if seasonal and window < seasonal_window(steps, anomaly_lags, season):
            raise ValueError(
                f"seasonal mode needs window >= {seasonal_window(steps, anomaly_lags, season)}, got {window}"
            )
        self.anomaly_lags = anomaly_lags
        self.n_nodes, self.window, self.steps, self.recent, self.seasonal = (
            n_nodes,
            window,
            steps,
            recent,
            seasonal,
        )
        self.quantiles = tuple(float(q) for q in levels)
        n_q = len(self.quantiles)
        self.median_index = int(np.argmin(np.abs(levels - 0.5)))
        lo = np.zeros(n_nodes) if scale_min is None else np.asarray(scale_min, float)
        hi = np.ones(n_nodes) if scale_max is None else np.asarray(scale_max, float)
        self.register_buffer("scale_min", torch.tensor(lo, dtype=torch.float32))
        self.register_buffer("scale_range", torch.tensor(np.maximum(hi - lo, 1e-6), dtype=torch.float32))
        if seasonal:  # window positions of week t+s-52+d for s = 1..S, d = -2..2  → [S, 5]
            s = np.arange(1, steps + 1)[:, None]
            d = np.arange(-SEASON_HALF_WIDTH, SEASON_HALF_WIDTH + 1)[None, :]
            self.register_buffer("season_index", torch.tensor(window - 1 + s - season + d, dtype=torch.long))
        levels_seen = seasonal and seasonal_inputs == "levels"
        n_feat = recent + (2 * steps if levels_seen else 0) + anomaly_lags
        self.temporal = nn.Sequential(
            nn.Linear(n_feat, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.spatial = spatial
        self.mix = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, steps * n_q)
        # Linear autoregressive part (as in LSTNet / Cola-GNN); with seasonal_inputs="anomalies" it also
        # reads the graph-aggregated features of the neighbours (a linear graph filter).
        self.highway = nn.Linear(n_feat * (2 if seasonal_inputs == "anomalies" else 1), steps)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        if quantile_init_gap is not None:  # each of the Q-1 gaps starts at softplus(b) = quantile_init_gap
            if quantile_init_gap <= 0:
                raise ValueError(f"quantile_init_gap must be > 0, got {quantile_init_gap}")
            with torch.no_grad():
                bias = torch.full((steps, n_q), float(np.log(np.expm1(quantile_init_gap))))
                bias[:, self.median_index] = 0.0
                self.head.bias.copy_(bias.reshape(-1))
        nn.init.zeros_(self.highway.weight)
        nn.init.zeros_(self.highway.bias)
        # offsets[k] = sum of increments between the median and level k (signed): a fixed [Q-1, Q] matrix
        self.register_buffer("offset_matrix", torch.tensor(quantile_offsets(n_q, self.median_index)))
        self.fused_head = False  # export (custom variant): forward ends in one healthai::quantile_head op
        self.hidden = hidden
        self.base = base
        if base == "seasonal_mix":
            # Per-step mixing logits as the bias of a Linear on a constant input, so Opacus (which
            # needs per-sample gradients of every layer) and ONNX export handle it as a plain layer.
            self.base_mix = nn.Linear(1, steps * len(SEASONAL_MIX_INIT))
            nn.init.zeros_(self.base_mix.weight)
            with torch.no_grad():
                self.base_mix.bias.copy_(torch.tensor(SEASONAL_MIX_INIT).repeat(steps))

    def features(self, xs: torch.Tensor) -> torch.Tensor:
        """Scaled window [B, W, N] → per-node features [B, N, F]."""
        recent = xs[:, self.window - self.recent :, :].transpose(1, 2)
        if not self.seasonal:
            return recent
        lagged = xs[:, self.season_index.reshape(-1), :]  # [B, S*5, N]
        lagged = lagged.reshape(xs.shape[0], self.steps, 2 * SEASON_HALF_WIDTH + 1, self.n_nodes)
        same_week = lagged[:, :, SEASON_HALF_WIDTH, :]
        around = lagged.mean(dim=2)
        parts = [recent, same_week.transpose(1, 2), around.transpose(1, 2)]
        if self.anomaly_lags:  # seasonal differences of the last K weeks: y[t-k] - y[t-k-52]
            w, k = self.window, self.anomaly_lags
            season = self.season
            parts.append((xs[:, w - k :, :] - xs[:, w - k - season : w - season, :]).transpose(1, 2))
        return torch.cat(parts, dim=2)

    def learned_features(self, feats: torch.Tensor) -> torch.Tensor:
        """What the networks see: everything, or (``seasonal_inputs="anomalies"``) the recent weeks and
        their seasonal differences only — the season-ago levels then enter through the base alone."""
        if self.seasonal_inputs == "levels":
            return feats
        r, s = self.recent, self.steps
        return torch.cat([feats[:, :, :r], feats[:, :, r + 2 * s :]], dim=2)

    def base_term(self, feats: torch.Tensor) -> torch.Tensor:
        """What the median is a residual over, [B, N, S] (scaled)."""
        last = feats[:, :, self.recent - 1 : self.recent]
        if self.base == "last":
            return last
        r, s = self.recent, self.steps
        if self.base == "lag52":
            return feats[:, :, r : r + s]
        ones = feats.new_ones(feats.shape[0], 1)
        w = torch.softmax(self.base_mix(ones).reshape(-1, 1, s, len(SEASONAL_MIX_INIT)), dim=-1)
        candidates = torch.stack(
            [last.expand(-1, -1, s), feats[:, :, r : r + s], feats[:, :, r + s : r + 2 * s]], dim=-1
        )
        return (w * candidates).sum(dim=-1)

    def head_outputs(self, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The head's raw outputs [B, N, S, Q] and the two other terms of the median, base and highway
        [B, N, S] (min-max scale): median = base + raw[..., median_index] + highway."""
        xs = (history - self.scale_min) / self.scale_range
        feats = self.features(xs)  # [B, N, F]
        learned = self.learned_features(feats)
        h = self.temporal(learned)
        z = self.mix(torch.cat([h, self.spatial(h)], dim=2))
        # exporting: 2-D into the head, one Gemm (bias inside) instead of MatMul + a full-size Add; the
        # same numbers in torch, but training keeps [B, N, hidden] (Opacus' per-sample gradients)
        raw = self.head(z.reshape(-1, z.shape[-1]) if self.fused_head else z)
        raw = raw.reshape(xs.shape[0], self.n_nodes, self.steps, len(self.quantiles))
        if self.seasonal_inputs == "anomalies":
            learned = torch.cat([learned, self.spatial(learned)], dim=2)
        return raw, self.base_term(feats), self.highway(learned)

    def forward_scaled(self, history: torch.Tensor) -> torch.Tensor:
        """Quantiles on the min-max scale [B, S, N, Q] (what the loss sees; no clamp at zero)."""
        raw, base, highway = self.head_outputs(history)
        median = base + raw[..., self.median_index] + highway  # [B, N, S]
        return scaled_quantiles(raw, median, self.offset_matrix, self.median_index).permute(0, 2, 1, 3)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        if self.fused_head:  # the median's raw term is added inside the op
            raw, base, highway = self.head_outputs(history)
            return quantile_head(raw, base + highway, self.scale_range, self.scale_min, self.median_index)
        q = self.forward_scaled(history)
        counts = q * self.scale_range[None, None, :, None] + self.scale_min[None, None, :, None]
        return torch.clamp(counts, min=0.0)
