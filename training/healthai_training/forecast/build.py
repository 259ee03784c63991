"""Build a forecaster for any region graph; the spatial step is ``healthai.ops.GraphAggregation``."""

from __future__ import annotations

from typing import Any

import numpy as np

from healthai_training.forecast.graph import RegionGraph
from healthai_training.forecast.model import FLUSIGHT_QUANTILES, STGNNForecaster


def graph_layer(graph: RegionGraph):
    """The native CSR aggregation layer (symmetric normalisation when the graph asks for it)."""
    from healthai.ops import GraphAggregation

    return GraphAggregation.from_adjacency(
        graph.to_scipy(), reduce="sum", normalize=graph.normalization == "sym"
    )


def build_forecaster(
    graph: RegionGraph,
    *,
    window: int = 20,
    steps: int = 15,
    quantiles: tuple[float, ...] = FLUSIGHT_QUANTILES,
    hidden: int = 32,
    recent: int = 20,
    scale_min: np.ndarray | None = None,
    scale_max: np.ndarray | None = None,
    **design: Any,
) -> STGNNForecaster:
    """An (untrained unless you train it) ST-GNN over ``graph``; scaling defaults to identity.
    ``design``: the remaining ``STGNNForecaster`` options (``seasonal``, ``base``, ``anomaly_lags``,
    ``seasonal_inputs``, ``quantile_init_gap``), passed through unchanged."""
    return STGNNForecaster(
        spatial=graph_layer(graph),
        n_nodes=graph.n_nodes,
        window=window,
        steps=steps,
        quantiles=quantiles,
        hidden=hidden,
        recent=min(recent, window),
        scale_min=scale_min,
        scale_max=scale_max,
        **design,
    )
