"""Forecast.Regions lists a model's regions (id, name, aliases); Forecast --stored reports per-region
coverage and refuses regions with no stored counts unless asked to flag them (never silent zeros)."""

from __future__ import annotations

import datetime as dt
import json

import grpc
import numpy as np
import pytest

from healthai.store import ParquetStore
from healthai.surveillance import SurveillanceCounts
from healthai.v1 import forecast_pb2, forecast_pb2_grpc

from .test_forecast import _conditions
from .tiny_models import write_forecast_version

W, S = 4, 3
MONDAY = dt.date(2026, 1, 5)


def test_regions_rpc_lists_ids_names_and_iso_aliases(tmp_path, make_server):
    repo = tmp_path / "models"
    write_forecast_version(repo, "forecast_tiny", 1, ["Massachusetts", "New_York"], window=W, steps=S)
    graph_path = repo / "forecast_tiny/1/graph.json"
    graph = json.loads(graph_path.read_text())
    graph_path.write_text(json.dumps({**graph, "region_names": ["Massachusetts", "New York"]}))
    stub = forecast_pb2_grpc.ForecastStub(make_server(repo).channel)
    r = stub.Regions(forecast_pb2.RegionsRequest(model_name="forecast_tiny"), timeout=10)
    assert [(x.id, x.name, list(x.aliases)) for x in r.regions] == [
        ("Massachusetts", "Massachusetts", ["US-MA"]),
        ("New_York", "New York", ["US-NY"]),
    ]
    assert (r.model_version, r.window, r.step, list(r.horizons)) == (1, W, "W", [1, 2, 3])
    with pytest.raises(grpc.RpcError) as err:
        stub.Regions(forecast_pb2.RegionsRequest(model_name="forecast_nope"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_default_japan_model_lists_real_prefectures(make_server):
    from healthai.serving.settings import ServingSettings

    stub = forecast_pb2_grpc.ForecastStub(make_server(ServingSettings().model_repository).channel)
    r = stub.Regions(forecast_pb2.RegionsRequest(model_name="forecast_japan"), timeout=30)
    names = {x.id: x.name for x in r.regions}
    assert len(names) == 47 and names["JP-13"] == "Tokyo" and names["JP-01"] == "Hokkaido"


@pytest.fixture
def store_server(tmp_path, make_server):
    """A 4-region model; the store has 6 weeks for US-MA and US-NY, the last 2 weeks only for US-CT,
    and nothing for US-VT."""
    repo = tmp_path / "models"
    write_forecast_version(repo, "forecast_tiny", 1, ["US-MA", "US-NY", "US-CT", "US-VT"], window=W, steps=S)
    rows = [
        (region, "J10.1", MONDAY + dt.timedelta(weeks=week, days=1))
        for week in range(6)
        for region in ("US-MA", "US-NY")
    ]
    rows += [("US-CT", "J11.1", MONDAY + dt.timedelta(weeks=week, days=2)) for week in (4, 5)]
    store = ParquetStore(str(tmp_path / "store")).open()
    store.commit({"condition": _conditions(rows)})
    server = make_server(repo, surveillance=SurveillanceCounts(store))
    return forecast_pb2_grpc.ForecastStub(server.channel)


def test_stored_refuses_regions_without_data(store_server):
    with pytest.raises(grpc.RpcError) as err:
        store_server.Forecast(
            forecast_pb2.ForecastRequest(model_name="forecast_tiny", stored=forecast_pb2.StoredHistory()),
            timeout=10,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "1 of the model's 4 regions have no stored counts (e.g. ['US-VT'])" in err.value.details()


def test_stored_coverage_flags_missing_and_partial_regions(store_server):
    r = store_server.Forecast(
        forecast_pb2.ForecastRequest(
            model_name="forecast_tiny", stored=forecast_pb2.StoredHistory(allow_missing_regions=True)
        ),
        timeout=10,
    )
    cov = {
        c.region_id: (c.first_stored_period, c.covered_periods, c.window_periods, c.cases_in_window)
        for c in r.coverage
    }
    assert cov == {
        "US-MA": (MONDAY.isoformat(), 4, 4, 4.0),
        "US-NY": (MONDAY.isoformat(), 4, 4, 4.0),
        "US-CT": ((MONDAY + dt.timedelta(weeks=4)).isoformat(), 2, 4, 2.0),
        "US-VT": ("", 0, 4, 0.0),
    }
    history = np.array(r.stored_history).reshape(W, 4)
    np.testing.assert_array_equal(history, [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0]])
