"""healthai._native.occlusion_feed / occlusion_top_k (Risk.Score's lone-patient explanation) give
exactly what the NumPy formulation gives, and refuse sizes that do not fit before touching memory."""

from __future__ import annotations

import numpy as np
import pytest

from healthai import _native


def numpy_top_k(out: np.ndarray, x: np.ndarray, baseline: np.ndarray,
                k: int) -> tuple[np.ndarray, np.ndarray]:
    out = out.reshape(-1)
    contribution = out[0] - out[1:]
    contribution[x.reshape(-1) == baseline] = 0.0
    idx = np.argsort(-np.abs(contribution), kind="stable")[:k]
    return idx[None], contribution[idx][None]


def test_feed_occludes_one_feature_per_row() -> None:
    x = np.arange(1, 6, dtype=np.float32)[None]
    baseline = np.full(5, -1.0, np.float32)
    feed = _native.occlusion_feed(x, baseline)
    want = np.repeat(x, 6, axis=0)
    want[np.arange(1, 6), np.arange(5)] = baseline
    np.testing.assert_array_equal(feed, want)
    assert feed.dtype == np.float32 and feed.shape == (6, 5)


@pytest.mark.parametrize("seed", range(20))
def test_top_k_matches_numpy_ties_zeros_and_nan(seed: int) -> None:
    rng = np.random.default_rng(seed)
    f = int(rng.integers(1, 60))
    baseline = rng.normal(size=f).astype(np.float32)
    x = rng.normal(size=(1, f)).astype(np.float32)
    at_base = rng.random(f) < 0.2
    x[0, at_base] = baseline[at_base]
    out = rng.choice(np.array([0.1, 0.2, 0.3, 0.25], np.float32), size=(f + 1, 1))  # many ties
    if seed % 5 == 0:
        out[rng.integers(1, f + 1), 0] = np.nan
    for k in sorted({0, 1, min(3, f), f}):
        idx, top = _native.occlusion_top_k(out, x, baseline, k)
        want_idx, want_top = numpy_top_k(out, x, baseline, k)
        np.testing.assert_array_equal(idx, want_idx)
        np.testing.assert_array_equal(top, want_top)  # NaN == NaN here
        assert idx.dtype == np.int64 and top.dtype == np.float32


def test_wrong_sizes_are_refused() -> None:
    baseline = np.zeros(4, np.float32)
    x = np.zeros((1, 4), np.float32)
    with pytest.raises(ValueError, match="x must hold one patient's 4 features"):
        _native.occlusion_feed(np.zeros((1, 5), np.float32), baseline)
    with pytest.raises(ValueError, match="baseline must be a non-empty 1-D array"):
        _native.occlusion_feed(x, np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="out must hold 5 outputs"):
        _native.occlusion_top_k(np.zeros((4, 1), np.float32), x, baseline, 2)
    with pytest.raises(ValueError, match=r"k must be in \[0, 4\]"):
        _native.occlusion_top_k(np.zeros((5, 1), np.float32), x, baseline, 5)
