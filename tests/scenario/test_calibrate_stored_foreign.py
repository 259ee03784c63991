"""Calibrating to stored counts when the store holds cases of residents of regions outside the graph
(a visitor from abroad, a territory the county graph lacks): they are left out and counted, as
``train forecast --from-store`` does; an observed series naming a foreign region is still refused."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from healthai.app.settings import Settings
from healthai.app.testing import serve_in_thread
from healthai.normalize.context import NormalizeContext
from healthai.normalize.flat import normalize_table
from healthai.scenario.observed import within_graph
from healthai.scenario.plugin import ScenarioPlugin
from healthai.scenario.settings import ScenarioSettings
from healthai.store import ParquetStore
from healthai.surveillance import SurveillanceCounts
from healthai.v1 import scenario_pb2, scenario_pb2_grpc

DAYS = 35
VISITORS = ("DE-BW", "US-PR")  # neither is a state of the county graph


def _store(root: Path, visitors: tuple[str, ...], home: bool = True) -> SurveillanceCounts:
    """Five weeks of Massachusetts cases growing 6 % a day (``home``), plus one case per visitor region."""
    rows = [(f"c{d}-{i}", "US-MA", dt.date(2026, 2, 1) + dt.timedelta(days=d))
            for d in range(DAYS * home) for i in range(round(3 * 1.06 ** d))]
    rows += [(f"v{k}", region, dt.date(2026, 2, 20)) for k, region in enumerate(visitors)]
    table = pa.table({"condition_id": [r[0] for r in rows], "patient_id": [r[0] for r in rows],
                      "code": ["J10.1"] * len(rows), "region": [r[1] for r in rows],
                      "onset": [r[2].isoformat() for r in rows]})
    ctx = NormalizeContext.create(key=bytes(32), reference_date=dt.date(2026, 6, 1))
    store = ParquetStore(str(root)).open()
    store.commit({"condition": normalize_table("condition", table, ctx=ctx, source="s").tables["condition"]})
    return SurveillanceCounts(store)


def _calibrate(counts: SurveillanceCounts, counties_dir: Path, **request) -> scenario_pb2.CalibrateResult:
    plugin = ScenarioPlugin(ScenarioSettings(graphs_dir=counties_dir.parent), counts)
    with serve_in_thread(Settings(port=0, dev_mode=True), [plugin]) as running, \
            grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        req = scenario_pb2.CalibrateRequest(graph=scenario_pb2.ScenarioGraph(name="us_counties"), **request)
        return scenario_pb2_grpc.ScenarioStub(channel).Calibrate(req, timeout=120)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[SurveillanceCounts, SurveillanceCounts]:
    return (_store(tmp_path_factory.mktemp("home"), ()),
            _store(tmp_path_factory.mktemp("visited"), VISITORS))


def test_cases_outside_the_graph_are_left_out_and_counted(stores, counties_dir: Path, caplog) -> None:
    home, visited = stores
    assert set(VISITORS) <= set(visited.counts("ili", "D").columns)  # the store keeps them
    with caplog.at_level(logging.INFO, logger="healthai.scenario.service"):
        fit = _calibrate(visited, counties_dir, stored=scenario_pb2.StoredCounts())
    alone = _calibrate(home, counties_dir, stored=scenario_pb2.StoredCounts())
    assert fit.r0 == alone.r0 and fit.reporting_rate == alone.reporting_rate and fit.rmse == alone.rmse
    logged = [r.getMessage() for r in caplog.records if "outside the graph" in r.getMessage()]
    assert logged == ["calibration: 2 stored cases in 2 regions outside the graph left out"]
    assert not any(v in m for v in VISITORS for m in logged)  # a count, no region names


def test_a_scenario_calibrated_to_the_store_runs_despite_visitors(stores, counties_dir: Path) -> None:
    _, visited = stores
    plugin = ScenarioPlugin(ScenarioSettings(graphs_dir=counties_dir.parent), visited)
    with serve_in_thread(Settings(port=0, dev_mode=True), [plugin]) as running, \
            grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        req = scenario_pb2.ScenarioRequest(
            graph=scenario_pb2.ScenarioGraph(name="us_counties"), horizon_days=7, runs=2,
            calibrate=scenario_pb2.CalibrateRequest(stored=scenario_pb2.StoredCounts()),
            report_regions=["25017"])
        out = scenario_pb2_grpc.ScenarioStub(channel).Run(req, timeout=120)
    assert np.isfinite(out.calibration.r0) and list(out.region_ids) == ["25017"]


def test_an_observed_series_naming_a_foreign_region_is_still_refused(stores, counties_dir: Path) -> None:
    home, _ = stores
    with pytest.raises(grpc.RpcError) as e:
        _calibrate(home, counties_dir, observed=scenario_pb2.Observed(
            region_ids=["US-MA", "DE-BW"], counts=[1.0, 0.0] * 30))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details().startswith("observed.region_ids[1]: region 'DE-BW' is neither")


def test_a_store_of_visitors_only_says_so(counties_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(grpc.RpcError) as e:
        _calibrate(_store(tmp_path, VISITORS, home=False), counties_dir, stored=scenario_pb2.StoredCounts())
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details() == (".stored: no stored counts to calibrate to (2 cases, all in 2 regions "
                                 "outside the graph)")


def test_within_graph_keeps_graph_regions_and_their_states() -> None:
    frame = pd.DataFrame({"25017": [1, 2], "US-NY": [3, 0], "DE-BW": [0, 1], "US-PR": [4, 0]})
    kept, outside = within_graph(frame, ["25017", "36061"])
    assert list(kept.columns) == ["25017", "US-NY"] and (outside.regions, outside.cases) == (2, 5)
    same, none = within_graph(kept, ["25017", "36061"])
    assert same is kept and (none.regions, none.cases) == (0, 0)
