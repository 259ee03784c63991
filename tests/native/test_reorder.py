"""Locality order: relabelled graph + permuted features give the same aggregation."""

from __future__ import annotations

import re

import numpy as np
import pytest

from healthai.ops import aggregate
from healthai.ops.reorder import locality_order, permute_rows, relabel_sources

from .reference import random_graph


@pytest.mark.parametrize("batched", [False, True])
def test_reordered_graph_gives_the_same_result(batched) -> None:
    rng = np.random.default_rng(0)
    indptr, indices = random_graph(rng, 200, 150, 2000, power_law=True)
    x = rng.standard_normal((*((2,) if batched else ()), 150, 9))
    perm = locality_order(indices, 150)
    assert sorted(perm.tolist()) == list(range(150))
    degree = np.bincount(indices, minlength=150)
    assert np.all(np.diff(degree[np.argsort(perm)]) <= 0)  # new order = descending in-degree
    got = aggregate(
        indptr, relabel_sources(indices, perm), permute_rows(x, perm, num_threads=2), None, "mean"
    )
    np.testing.assert_allclose(got, aggregate(indptr, indices, x, None, "mean"), rtol=1e-12)


def test_permute_rows_checks_its_arguments() -> None:
    x = np.ones((4, 3))
    with pytest.raises(ValueError, match=re.escape("perm is not a permutation of 0..3: perm[1]=0")):
        permute_rows(x, np.array([0, 0, 1, 2]))
    with pytest.raises(ValueError, match=re.escape("perm must have shape (4,), got (3,)")):
        permute_rows(x, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=re.escape("out must have shape (4, 3), got (4, 2)")):
        permute_rows(x, np.arange(4), out=np.empty((4, 2)))
