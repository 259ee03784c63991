"""Which stored counts a graph is calibrated to: per state, its counties when every stored case of the
state has one and they are regions of the graph, else the state's total.

Counties are finer evidence for a county graph, but a case without a county (no county name or ZIP
code in its address) is only in its state's total; mixing the two for one state would drop it or
count it twice. So each state is taken whole at the finer level or not at all.

Cases of residents of regions outside the graph (a visitor from abroad, a territory the county graph
lacks) are left out and counted (``within_graph``), as ``train forecast --from-store`` does; an
observed file the user sends is not filtered: a foreign column there is refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from healthai.scenario.graphs import state_of


@dataclass(frozen=True)
class Outside:
    """What ``within_graph`` left out: stored regions (columns) and their cases."""

    regions: int = 0
    cases: int = 0


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


def within_graph(frame: pd.DataFrame, graph_ids: Iterable[str]) -> tuple[pd.DataFrame, Outside]:
    """``frame``'s columns that are graph regions or states of them (``calibrate.groups_of`` reads
    both), and how many columns and cases were left out."""
    ids = {str(g) for g in graph_ids}
    states = {state_of(g) for g in ids}
    keep = [c for c in frame.columns if str(c) in ids or str(c) in states]
    if len(keep) == len(frame.columns):
        return frame, Outside()
    out = frame.drop(columns=keep)
    return frame[keep], Outside(regions=out.shape[1], cases=round(float(out.to_numpy().sum())))
