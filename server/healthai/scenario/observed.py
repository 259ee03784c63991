"""Which stored counts a graph is calibrated to: per state, its counties when every stored case of the
state has one and they are regions of the graph, else the state's total.

Counties are finer evidence for a county graph, but a case without a county (no county name or ZIP
code in its address) is only in its state's total; mixing the two for one state would drop it or
count it twice. So each state is taken whole at the finer level or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from healthai.scenario.graphs import state_of


def stored_columns(regions: pd.DataFrame, counties: pd.DataFrame | None, graph_ids: Iterable[str]
                   ) -> pd.DataFrame:
    """``regions`` (day x ISO 3166-2 state) with each state whose cases all have a county replaced by
    its county columns (day x FIPS) from ``counties``."""
    if counties is None or counties.empty:
        return regions
    ids = set(graph_ids)
    counties = counties.reindex(index=regions.index, fill_value=0)
    by_state: dict[str, list[str]] = {}
    for county in counties.columns:
        by_state.setdefault(state_of(str(county)), []).append(county)
    parts = []
    for state in regions.columns:
        mine = by_state.get(str(state), [])
        whole = bool(mine) and all(c in ids for c in mine) and \
            (counties[mine].sum(axis=1).to_numpy() == regions[state].to_numpy()).all()
        parts.append(counties[mine] if whole else regions[[state]])
    return pd.concat(parts, axis=1)
