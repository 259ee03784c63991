"""Risk scoring for a whole batch on the worker thread: probabilities, risk bands and occlusion-based
top contributing features, vectorized over every patient of every request in the batch.

Each feature in turn is set to the model card's baseline and the probability change is measured;
the occluded rows ride in the same ONNX Runtime run as the patients' own rows. Features already at
their baseline are not run (their contribution is exactly 0).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence

import numpy as np

from healthai import _native
from healthai.errors import HealthAIError
from healthai.serving.risk.card import RISK_INPUT, RISK_OUTPUT, RiskCard, parse_risk_card
from healthai.serving.runtime.contract import InferRequest, InferResult
from healthai.serving.runtime.manager import LoadedVersion
from healthai.serving.runtime.repository import RepositoryError

TOP_K = "top_k"
# Batches of coalesced requests up to this many patients score each distinct patient once (a retried
# request, or one admission asked about by several callers, costs one scoring; np.unique over the raw
# row bytes costs ~10-30 µs at this size).
DEDUPE_MAX_ROWS = 512


def occlusions(x: np.ndarray, baseline: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The patients' rows ``x`` [n, F], then the occluded rows that can move p: for each patient and
    each feature whose value differs from its baseline, a copy with that feature at baseline. A feature
    already at its baseline contributes exactly 0, so its row is never built.
    Returns (feed [n + m, F], patient [m], feature [m]) for the m occluded rows (one native pass,
    csrc/occlusion.h: a third of NumPy's repeat-and-scatter time on 1,000 patients)."""
    return _native.occlusion_feed_rows(x, baseline)


def top_features(contribution: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and contributions (p - p at baseline) of the k features that move p most, largest first
    (ties: the card's order; NaN last) — NumPy's stable argsort order, by a native partial sort per row."""
    return _native.top_k_rows(contribution, k)


class RiskTask:
    """The BatchTask of one risk model version (see ``runtime.BatchTask``), with the per-version
    constants the servicer needs precomputed at load."""

    def __init__(self, card: RiskCard) -> None:
        self.card = card
        self.index = {name: i for i, name in enumerate(card.feature_names)}
        self.band_names = np.array(card.band_names, dtype=object)
        self._last_band = len(card.band_names) - 1
        self._band_uppers = card.band_uppers.tolist()
        self._orders: dict[tuple[str, ...], np.ndarray] = {}  # request feature_names -> column order

    def cached_order(self, names: tuple[str, ...]) -> np.ndarray | None:
        return self._orders.get(names)

    def remember_order(self, names: tuple[str, ...], order: np.ndarray) -> None:
        if len(self._orders) < 64:  # callers send a handful of layouts; never unbounded
            self._orders[names] = order

    def request(self, x: np.ndarray, top_k: int) -> InferRequest:
        return InferRequest({RISK_INPUT: x}, batch_size=len(x), task=self, params={TOP_K: top_k})

    def explain_one(self, run: Callable[[dict[str, np.ndarray]], list[np.ndarray]],
                    x: np.ndarray, k: int) -> InferResult:
        """One patient with top features: what ``run`` gives (the latency floor: a lone one-patient
        request). The feed and the top features are one native call each (``healthai._native``,
        csrc/occlusion.h) instead of a dozen NumPy calls, each of which costs microseconds on the
        caches that the RPC around it left cold. Every feature is occluded (in practice every one
        differs from its baseline, a training mean); one at its baseline contributes exactly 0."""
        baseline = self.card.baseline
        out = run({RISK_INPUT: _native.occlusion_feed(x, baseline)})[0]
        idx, top = _native.occlusion_top_k(out, x, baseline, k)
        band = min(bisect.bisect_left(self._band_uppers, float(out[0, 0])), self._last_band)
        return {"probability": out[0], "band": np.array([band]), "top_index": idx, "top_contribution": top}

    def run(self, run: Callable[[dict[str, np.ndarray]], list[np.ndarray]],
            requests: Sequence[InferRequest]) -> list[InferResult | HealthAIError]:
        """Checks the card's feature domains over the whole batch (once, vectorized; a violation is
        InvalidInput, and the executor then runs each request alone, so only the bad one fails,
        named by its own patient index), then scores."""
        domains = self.card.domains
        if len(requests) == 1 and requests[0].rows == 1 and requests[0].params.get(TOP_K, 0):
            x = requests[0].inputs[RISK_INPUT]
            if domains is not None:
                domains.check(x)
            return [self.explain_one(run, x, requests[0].params[TOP_K])]
        ks = [r.params.get(TOP_K, 0) for r in requests]
        want: np.ndarray | None = None  # patients whose request wants top features (None = all)
        inverse: np.ndarray | None = None  # row -> its distinct row, when rows repeat
        if len(requests) == 1:
            x = requests[0].inputs[RISK_INPUT]
        else:
            x = np.concatenate([r.inputs[RISK_INPUT] for r in requests])
        if domains is not None:
            domains.check(x)
        if len(requests) > 1:
            if min(ks) == 0 < max(ks):
                want = np.repeat(np.array(ks) > 0, [r.rows for r in requests])
            if len(x) <= DEDUPE_MAX_ROWS:
                x, want, inverse = distinct_rows(x, want)
        k_max = max(ks)
        p, bands, idx, top = self._score(run, x, want, k_max)
        if inverse is not None:
            p, bands = p[inverse], bands[inverse]
            if k_max:
                idx, top = idx[inverse], top[inverse]
        results: list[InferResult | HealthAIError] = []
        start = 0
        for r, k in zip(requests, ks, strict=True):
            stop = start + r.rows
            result = {"probability": p[start:stop], "band": bands[start:stop]}
            if k:
                result["top_index"] = idx[start:stop, :k]
                result["top_contribution"] = top[start:stop, :k]
            results.append(result)
            start = stop
        return results

    def _score(self, run: Callable[[dict[str, np.ndarray]], list[np.ndarray]], x: np.ndarray,
               want: np.ndarray | None, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Probabilities, bands and (when k) the top-k features of every row of ``x`` — occluded only
        for the rows in ``want`` (None = all); the other rows' top features are zeros, never read."""
        n, f = x.shape
        feed = x
        if k:
            rows = np.arange(n) if want is None else np.flatnonzero(want)
            occluded, patient, feature = occlusions(x if want is None else x[rows], self.card.baseline)
            feed = occluded if want is None else np.concatenate([x, occluded[len(rows):]])
        out = run({RISK_INPUT: feed})[0].reshape(-1)
        p = out[:n]
        bands = np.minimum(self.card.band_uppers.searchsorted(p, side="left"), self._last_band)
        if not k:
            return p, bands, np.empty((n, 0), np.int64), np.empty((n, 0), np.float32)
        contribution = np.zeros((n, f), np.float32)
        row = rows[patient]
        contribution[row, feature] = p[row] - out[n:]
        idx, top = top_features(contribution, k)
        return p, bands, idx, top


def distinct_rows(x: np.ndarray, want: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None,
                                                                   np.ndarray | None]:
    """Bitwise-identical rows scored once: (distinct rows, which of them want top features, row ->
    distinct row); the inverse is None when no row repeats."""
    keys = np.ascontiguousarray(x).view(np.dtype((np.void, x.itemsize * x.shape[1]))).reshape(-1)
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    if len(first) == len(x):
        return x, want, None
    distinct_want = None
    if want is not None:
        distinct_want = np.zeros(len(first), bool)
        distinct_want[inverse[want]] = True
    return x[first], distinct_want, inverse.reshape(-1)


def check_infer_inputs(loaded: LoadedVersion, inputs: dict[str, np.ndarray]) -> None:
    """KServe ModelInfer on a risk model: missing flags derived from their features and the same feature
    domains as Risk.Score (no-op otherwise); ``inputs`` is updated in place."""
    task = loaded.extras.get("risk")
    if task is not None and RISK_INPUT in inputs and task.card.imputation is not None:
        inputs[RISK_INPUT] = task.card.imputation.derive_flags(inputs[RISK_INPUT])  # as Risk.Score does
    if task is not None and task.card.domains is not None and RISK_INPUT in inputs:
        task.card.domains.check(inputs[RISK_INPUT])


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
