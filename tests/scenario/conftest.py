"""Small real graphs for scenario tests (a synthetic grid; the Census county graph when present)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from healthai.ops.metapop import MobilityGraph
from healthai.scenario.graphs import gravity_graph

COUNTIES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "graphs" / "us_counties"


def grid_graph(
    side: int = 5, *, pop_scale: int = 100_000, mobility: float = 0.1, seed: int = 1
) -> MobilityGraph:
    """side x side regions on a 50 km lattice, 4-neighbour edges, populations ~ pop_scale."""
    rng = np.random.default_rng(seed)
    n = side * side
    rows, cols = np.divmod(np.arange(n), side)
    edges = [
        (a, b) for a in range(n) for b in range(n) if abs(rows[a] - rows[b]) + abs(cols[a] - cols[b]) == 1
    ]
    pop = (pop_scale * rng.uniform(0.5, 2.0, n)).astype(np.int64)
    lat, lon = 40.0 + rows * 0.45, -100.0 + cols * 0.6
    return gravity_graph([f"r{k:02d}" for k in range(n)], pop, lat, lon, np.array(edges), mobility=mobility)


@pytest.fixture(scope="session")
def grid() -> MobilityGraph:
    return grid_graph()


@pytest.fixture(scope="session")
def counties_dir() -> Path:
    if not (COUNTIES / "county_adjacency2024.txt").is_file():
        pytest.skip(f"the county graph is not at {COUNTIES}")
    return COUNTIES
