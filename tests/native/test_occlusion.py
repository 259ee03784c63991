"""healthai._native.occlusion_feed / occlusion_top_k (Risk.Score's lone-patient explanation) and
occlusion_feed_rows / top_k_rows (its batch path) give exactly what the NumPy formulation gives, and
refuse sizes that do not fit before touching memory."""

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


def numpy_feed_rows(x: np.ndarray, baseline: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    moved = x != baseline
    patient, feature = np.nonzero(moved)
    occluded = np.repeat(x, moved.sum(axis=1), axis=0)
    occluded[np.arange(len(feature)), feature] = baseline[feature]
    return np.concatenate([x, occluded]), patient, feature


@pytest.mark.parametrize("seed", range(10))
def test_batch_feed_occludes_only_features_off_baseline(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, f = int(rng.integers(0, 40)), int(rng.integers(1, 30))
    baseline = rng.normal(size=f).astype(np.float32)
    x = rng.normal(size=(n, f)).astype(np.float32)
    at_base = rng.random((n, f)) < 0.3
    x[at_base] = np.broadcast_to(baseline, (n, f))[at_base]
    if n:
        x[0] = baseline  # a patient entirely at baseline: no occluded row
    got = _native.occlusion_feed_rows(x, baseline)
    for g, w in zip(got, numpy_feed_rows(x, baseline), strict=True):
        np.testing.assert_array_equal(g, w)
    assert got[0].dtype == np.float32 and got[1].dtype == got[2].dtype == np.int64


@pytest.mark.parametrize("seed", range(20))
def test_batch_top_k_matches_numpy_stable_argsort(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, f = int(rng.integers(0, 30)), int(rng.integers(1, 60))
    c = rng.choice(np.array([0.0, -0.0, 0.1, -0.1, 0.25, -0.3], np.float32), size=(n, f))  # many ties
    if seed % 4 == 0 and n:
        c[rng.integers(n), rng.integers(f)] = np.nan
    for k in sorted({0, 1, min(3, f), f}):
        idx, top = _native.top_k_rows(c, k)
        want = np.argsort(-np.abs(c), axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(idx, want)
        np.testing.assert_array_equal(top, np.take_along_axis(c, want, axis=1))
        assert idx.shape == top.shape == (n, k) and idx.dtype == np.int64 and top.dtype == np.float32


def test_batch_wrong_sizes_are_refused() -> None:
    baseline = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match=r"x must be \[n, 4\]"):
        _native.occlusion_feed_rows(np.zeros((3, 5), np.float32), baseline)
    with pytest.raises(ValueError, match=r"x must be \[n, 4\]"):
        _native.occlusion_feed_rows(np.zeros(4, np.float32), baseline)
    with pytest.raises(ValueError, match="baseline must be a non-empty 1-D array"):
        _native.occlusion_feed_rows(np.zeros((3, 4), np.float32), np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match=r"contribution must be \[n, F\]"):
        _native.top_k_rows(np.zeros(4, np.float32), 2)
    with pytest.raises(ValueError, match=r"k must be in \[0, 4\]"):
        _native.top_k_rows(np.zeros((2, 4), np.float32), 5)
    with pytest.raises(ValueError, match=r"k must be in \[0, 4\]"):
        _native.top_k_rows(np.zeros((2, 4), np.float32), -1)
