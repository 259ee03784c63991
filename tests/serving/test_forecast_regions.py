"""Forecast.Regions lists a model's regions (id, name, aliases); Forecast --stored reports per-region
coverage and refuses regions with no stored counts unless asked to flag them (never silent zeros)."""

from __future__ import annotations

import datetime as dt
import json

import grpc
import numpy as np
import pyarrow as pa
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


def test_stored_window_leaves_out_the_week_under_way(tmp_path, make_server):
    """A live store: cases every day up to today. This week's counts are partial (a drop that did not
    happen), so the window ends with last week and the forecast starts with this week."""
    repo = tmp_path / "models"
    regions = ["US-MA", "US-NY", "US-CT", "US-VT"]
    write_forecast_version(repo, "forecast_tiny", 1, regions, window=W, steps=S)
    today = dt.datetime.now(dt.UTC).date()
    this_monday = today - dt.timedelta(days=today.weekday())
    first = this_monday - dt.timedelta(weeks=6)
    days = [first + dt.timedelta(days=d) for d in range(7 * 6 + today.weekday() + 1)]
    store = ParquetStore(str(tmp_path / "store")).open()
    store.commit({"condition": _conditions([(region, "J10.1", d) for d in days for region in regions])})
    stub = forecast_pb2_grpc.ForecastStub(make_server(repo, surveillance=SurveillanceCounts(store)).channel)

    def forecast(end_date: str = "") -> forecast_pb2.ForecastResponse:
        stored = forecast_pb2.StoredHistory(end_date=end_date)
        request = forecast_pb2.ForecastRequest(model_name="forecast_tiny", stored=stored)
        return stub.Forecast(request, timeout=10)

    r = forecast()
    assert r.first_forecast_period == this_monday.isoformat()
    np.testing.assert_array_equal(np.array(r.stored_history).reshape(W, 4), np.full((W, 4), 7.0))  # whole
    r = forecast(end_date=(this_monday - dt.timedelta(days=7)).isoformat())
    assert r.first_forecast_period == this_monday.isoformat()  # a week's Monday names the whole week
    np.testing.assert_array_equal(np.array(r.stored_history).reshape(W, 4), np.full((W, 4), 7.0))
    with pytest.raises(grpc.RpcError) as err:
        forecast(end_date=today.isoformat())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(f"stored.end_date: the week {this_monday} to ")
    assert "has not ended" in err.value.details()


def test_stored_window_of_a_county_model_counts_by_county(tmp_path, make_server):
    """A model whose regions are US county FIPS codes is answered from county counts: the records name
    the county, or only a ZIP code."""
    from healthai.normalize.context import NormalizeContext
    from healthai.normalize.flat import normalize_table

    repo = tmp_path / "models"
    counties = ["25017", "25025", "25027"]  # Middlesex, Suffolk, Worcester (MA)
    write_forecast_version(repo, "forecast_ma_counties", 1, counties, window=W, steps=S)
    places = [{"county": "Middlesex"}, {"postal_code": "02138"}, {"county": "25025"}, {"county": "Worcester"},
              {"postal_code": "01609"}]
    rows = [(f"c{w}-{i}", MONDAY + dt.timedelta(weeks=w, days=2), place)
            for w in range(6) for i, place in enumerate(places[: 2 + w % 4])]
    table = pa.table({
        "condition_id": [r[0] for r in rows], "patient_id": [r[0] for r in rows],
        "code": ["J10.1"] * len(rows),
        "onset": [r[1].isoformat() for r in rows], "state": ["MA"] * len(rows),
        "county": [r[2].get("county") for r in rows], "postal_code": [r[2].get("postal_code") for r in rows]})
    ctx = NormalizeContext.create(key=bytes(32), reference_date=dt.date(2026, 6, 1))
    store = ParquetStore(str(tmp_path / "store")).open()
    store.commit({"condition": normalize_table("condition", table, ctx=ctx, source="s").tables["condition"]})
    stub = forecast_pb2_grpc.ForecastStub(make_server(repo, surveillance=SurveillanceCounts(store)).channel)
    r = stub.Forecast(forecast_pb2.ForecastRequest(model_name="forecast_ma_counties",
                                                   stored=forecast_pb2.StoredHistory()), timeout=10)
    history = np.array(r.stored_history).reshape(W, 3)
    # weeks 2..5 hold 4, 5, 2, 3 cases: Middlesex (name, ZIP 02138), Suffolk, Worcester (name, ZIP 01609)
    np.testing.assert_array_equal(history, [[2, 1, 1], [2, 1, 2], [2, 0, 0], [2, 1, 0]])
    assert [c.region_id for c in r.coverage] == counties


@pytest.mark.parametrize(("week_start", "first_period", "last_weeks"),
                         [("sunday", "2026-02-15", [7, 7, 7, 7]), ("monday", "2026-02-16", [7, 7, 7, 6])])
def test_stored_window_counts_the_weeks_the_model_was_trained_on(tmp_path, make_server, week_start,
                                                                 first_period, last_weeks):
    """A model trained on MMWR epiweeks (its card: week_start sunday) reads the store in Sunday-to-Saturday
    weeks; one trained on ISO weeks in Monday-to-Sunday weeks. Cases every day, Sun 4 Jan - Sat 14 Feb."""
    repo = tmp_path / "models"
    regions = ["US-MA", "US-NY", "US-CT", "US-VT"]
    version = write_forecast_version(repo, "forecast_tiny", 1, regions, window=W, steps=S)
    card = json.loads((version / "model_card.json").read_text())
    (version / "model_card.json").write_text(json.dumps({**card, "week_start": week_start}))
    days = [dt.date(2026, 1, 4) + dt.timedelta(days=d) for d in range(42)]
    store = ParquetStore(str(tmp_path / "store")).open()
    store.commit({"condition": _conditions([(region, "J10.1", d) for d in days for region in regions])})
    stub = forecast_pb2_grpc.ForecastStub(make_server(repo, surveillance=SurveillanceCounts(store)).channel)
    request = forecast_pb2.ForecastRequest(model_name="forecast_tiny", stored=forecast_pb2.StoredHistory())
    r = stub.Forecast(request, timeout=10)
    assert r.first_forecast_period == first_period
    np.testing.assert_array_equal(np.array(r.stored_history).reshape(W, 4)[:, 0], last_weeks)
