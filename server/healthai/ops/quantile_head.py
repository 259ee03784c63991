"""``torch.ops.healthai.quantile_head``: the forecaster's quantile head as one op, so that export can
write it as one ``healthai.QuantileHead`` node (our ONNX Runtime library) instead of eight.

``quantile_head(raw [B, N, S, Q], base [B, N, S], scale [N], shift [N], median_index) -> [B, S, N, Q]``:
the median is ``base + raw[..., median_index]``, the other levels are the median plus the cumulative
softplus of ``raw`` outwards from it, steps are moved first, and each region is scaled back
(``q * scale + shift``) and clamped at zero. The eager implementation is ``quantile_head_reference``
(torch, differentiable); export traces the fake and translates the op (``onnx_export``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["quantile_head", "quantile_head_reference", "quantile_offsets", "scaled_quantiles"]


def quantile_offsets(levels: int, median_index: int) -> np.ndarray:
    """``[Q-1, Q]`` signed sums: ``increments @ offsets`` gives every level's offset from the median,
    where increment j belongs to level ``[k for k in range(Q) if k != median_index][j]``."""
    m = median_index
    cum = np.zeros((levels - 1, levels), dtype=np.float32)
    for j, lvl in enumerate(k for k in range(levels) if k != m):
        for k in range(levels):
            if m < lvl <= k:
                cum[j, k] = 1.0
            elif k <= lvl < m:
                cum[j, k] = -1.0
    return cum


def scaled_quantiles(raw: Tensor, median: Tensor, offsets: Tensor, median_index: int) -> Tensor:
    """The levels on the model's scale, ``[B, N, S, Q]``."""
    m = median_index
    increments = torch.nn.functional.softplus(torch.cat([raw[..., :m], raw[..., m + 1 :]], dim=3))
    return median.unsqueeze(-1) + increments @ offsets


def quantile_head_reference(
    raw: Tensor, base: Tensor, scale: Tensor, shift: Tensor, median_index: int
) -> Tensor:
    offsets = torch.from_numpy(quantile_offsets(raw.shape[-1], median_index)).to(raw)
    median = base + raw[..., median_index]
    q = scaled_quantiles(raw, median, offsets, median_index).permute(0, 2, 1, 3)
    return torch.clamp(q * scale[None, None, :, None] + shift[None, None, :, None], min=0.0)


@torch.library.custom_op("healthai::quantile_head", mutates_args=())
def quantile_head(raw: Tensor, base: Tensor, scale: Tensor, shift: Tensor, median_index: int) -> Tensor:
    return quantile_head_reference(raw, base, scale, shift, median_index)


@quantile_head.register_fake
def _quantile_head_fake(
    raw: Tensor, base: Tensor, scale: Tensor, shift: Tensor, median_index: int
) -> Tensor:
    return raw.new_empty((raw.shape[0], raw.shape[2], raw.shape[1], raw.shape[3]))
