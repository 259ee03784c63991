"""Risk scoring for a whole batch on the worker thread: probabilities, risk bands and occlusion-based
top contributing features, vectorized over every patient of every request in the batch.

Each feature in turn is set to the model card's baseline and the probability change is measured;
the occluded rows ride in the same ONNX Runtime run as the patients' own rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from healthai.errors import HealthAIError
from healthai.serving.manager import LoadedVersion
from healthai.serving.repository import RepositoryError
from healthai.serving.risk_card import RISK_INPUT, RISK_OUTPUT, RiskCard, parse_risk_card
from healthai.serving.runtime import InferRequest, InferResult

TOP_K = "top_k"


def with_occlusions(x: np.ndarray, baseline: np.ndarray, diagonal: np.ndarray) -> np.ndarray:
    """[n + n*F, F]: the patients, then for each patient F copies, copy j with feature j at baseline."""
    n, f = x.shape
    feed = np.empty((n * (f + 1), f), np.float32)
    feed[:n] = x
    occluded = feed[n:].reshape(n, f, f)
    occluded[:] = x[:, None, :]
    occluded[:, diagonal, diagonal] = baseline
    return feed


def top_features(p: np.ndarray, occluded_p: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and contributions (p - p at baseline) of the k features that move p most, largest first."""
    contribution = p[:, None] - occluded_p
    idx = np.argsort(-np.abs(contribution), axis=1, kind="stable")[:, :k]
    return idx, contribution[np.arange(len(p))[:, None], idx]


class RiskTask:
    """The BatchTask of one risk model version (see ``runtime.BatchTask``)."""

    def __init__(self, card: RiskCard) -> None:
        self.card = card
        self._diagonal = np.arange(card.n_features)

    def request(self, x: np.ndarray, top_k: int) -> InferRequest:
        return InferRequest({RISK_INPUT: x}, batch_size=len(x), task=self, params={TOP_K: top_k})

    def run(self, run: Callable[[dict[str, np.ndarray]], list[np.ndarray]],
            requests: Sequence[InferRequest]) -> list[InferResult | HealthAIError]:
        xs = [r.inputs[RISK_INPUT] for r in requests]
        ks = [r.params.get(TOP_K, 0) for r in requests]
        explained: np.ndarray | None = None  # patients whose request wants top features (None = all)
        if len(xs) == 1:
            x = xs[0]
        else:
            x = np.concatenate(xs)
            if min(ks) == 0 < max(ks):
                explained = np.repeat(np.array(ks) > 0, [len(a) for a in xs])
        n, f = x.shape
        k_max = max(ks)
        if not k_max:
            feed = x
        else:
            chosen = x if explained is None else x[explained]
            feed = with_occlusions(chosen, self.card.baseline, self._diagonal)
            if explained is not None:
                feed = np.concatenate([x, feed[int(explained.sum()):]])
        out = run({RISK_INPUT: feed})[0].reshape(-1)
        p = out[:n]
        bands = np.minimum(np.searchsorted(self.card.band_uppers, p, side="left"),
                           len(self.card.band_names) - 1)
        if k_max:
            m = n if explained is None else int(explained.sum())
            idx, contribution = top_features(p if explained is None else p[explained],
                                             out[n:n + m * f].reshape(m, f), k_max)
            if len(xs) == 1:
                return [{"probability": p, "band": bands, "top_index": idx, "top_contribution": contribution}]
            rank = np.arange(n) if explained is None else np.cumsum(explained) - 1
        results: list[InferResult | HealthAIError] = []
        start = 0
        for a, k in zip(xs, ks, strict=True):
            stop = start + len(a)
            result = {"probability": p[start:stop], "band": bands[start:stop]}
            if k:
                rows = rank[start:stop]
                result["top_index"] = idx[rows, :k]
                result["top_contribution"] = contribution[rows, :k]
            results.append(result)
            start = stop
        return results


def inspect_risk(loaded: LoadedVersion) -> None:
    """Manager inspector: a model with input 'features' -> output 'probability' must carry a valid card."""
    rt = loaded.runtime
    names_in = [s.name for s in rt.inputs]
    names_out = [s.name for s in rt.outputs]
    if names_in != [RISK_INPUT] or RISK_OUTPUT not in names_out:
        return
    spec = rt.inputs[0]
    if not spec.batched or len(spec.dims) != 1:
        raise RepositoryError(f"{rt.dir.path}: risk input '{RISK_INPUT}' must be [-1, F] with batching")
    card = parse_risk_card(loaded.card, n_inputs=spec.dims[0], where=str(rt.dir.path))
    loaded.extras["risk"] = RiskTask(card)
