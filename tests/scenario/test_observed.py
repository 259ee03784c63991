"""Calibrating the county graph to stored counts: a state whose every case has a county is observed by
county, any other by its total (never both: no case dropped or counted twice)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import grpc
import numpy as np
import pyarrow as pa
import pytest

from healthai.app.settings import Settings
from healthai.app.testing import serve_in_thread
from healthai.normalize.context import NormalizeContext
from healthai.normalize.flat import normalize_table
from healthai.scenario.graphs import county_graph
from healthai.scenario.observed import stored_columns
from healthai.scenario.plugin import ScenarioPlugin
from healthai.scenario.settings import ScenarioSettings
from healthai.store import ParquetStore
from healthai.surveillance import SurveillanceCounts
from healthai.v1 import scenario_pb2, scenario_pb2_grpc

# (state, ZIP code or None): MA cases all have a county; one NY case has none; CT's ZIP codes give none
PLACES = [("MA", "02138"), ("MA", "01609"), ("MA", "02108"), ("NY", "10001"), ("NY", None), ("CT", "06103")]


@pytest.fixture(scope="module")
def counts(tmp_path_factory: pytest.TempPathFactory) -> SurveillanceCounts:
    """Six weeks of cases growing 6 % a day at each place, through the flat normalizer."""
    rows = [(f"c{k}-{d}-{i}", state, zip_code, dt.date(2026, 2, 1) + dt.timedelta(days=d))
            for k, (state, zip_code) in enumerate(PLACES) for d in range(35)
            for i in range(round(3 * 1.06 ** d))]
    table = pa.table({"condition_id": [r[0] for r in rows], "patient_id": [r[0] for r in rows],
                      "code": ["J10.1"] * len(rows), "state": [r[1] for r in rows],
                      "postal_code": [r[2] for r in rows], "onset": [r[3].isoformat() for r in rows]})
    ctx = NormalizeContext.create(key=bytes(32), reference_date=dt.date(2026, 6, 1))
    store = ParquetStore(str(tmp_path_factory.mktemp("store"))).open()
    store.commit({"condition": normalize_table("condition", table, ctx=ctx, source="s").tables["condition"]})
    return SurveillanceCounts(store)


def test_states_with_a_county_for_every_case_are_observed_by_county(counts: SurveillanceCounts,
                                                                   counties_dir: Path) -> None:
    regions = counts.counts("ili", "D")
    by_county = counts.counts("ili", "D", level="county")
    observed = stored_columns(regions, by_county, county_graph(counties_dir).ids)
    assert sorted(observed.columns) == ["25017", "25025", "25027", "US-CT", "US-NY"]
    assert observed.to_numpy().sum() == regions.to_numpy().sum()  # every case once


def test_calibrate_rpc_on_mixed_county_and_state_counts(counts: SurveillanceCounts,
                                                        counties_dir: Path) -> None:
    plugin = ScenarioPlugin(ScenarioSettings(graphs_dir=counties_dir.parent), counts)
    with serve_in_thread(Settings(port=0, dev_mode=True), [plugin]) as running, \
            grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        request = scenario_pb2.CalibrateRequest(graph=scenario_pb2.ScenarioGraph(name="us_counties"),
                                                stored=scenario_pb2.StoredCounts())
        fit = scenario_pb2_grpc.ScenarioStub(channel).Calibrate(request, timeout=120)
    assert fit.last_date == "2026-03-07" and fit.r2 > 0.9 and np.isfinite(fit.r0)

