"""Small real epi data sets for fast forecaster tests."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from healthai_training.epi.data import EpiData, load_epi

NORTHERN_NEW_ENGLAND = ("Massachusetts", "New_Hampshire", "Vermont")


def us_states_subset(shared_data: Path, periods: int,
                     states: tuple[str, ...] = NORTHERN_NEW_ENGLAND) -> EpiData:
    """The first ``periods`` weeks of ``states`` from the US-states ILI set, with their adjacency."""
    data = load_epi("us_states", data_root=shared_data)
    cols = [data.region_ids.index(s) for s in states]
    return replace(data, series=data.series[:periods, cols], adjacency=data.adjacency[np.ix_(cols, cols)],
                   region_ids=tuple(data.region_ids[c] for c in cols), region_names=())
