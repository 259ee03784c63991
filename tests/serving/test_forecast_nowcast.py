"""``StoredHistory.nowcast``: Forecast --stored corrects the window's latest weeks for reporting delay
before the model reads them (real Parquet store whose commits are dated as the records arrived, real
gRPC server, the SDK and the CLI)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import grpc
import numpy as np
import pyarrow as pa
import pytest

from healthai.store import ParquetStore
from healthai.surveillance import SurveillanceCounts
from healthai.surveillance.nowcast import nowcast
from healthai.surveillance.released import ReleasedCounts
from healthai.v1 import forecast_pb2, forecast_pb2_grpc

from .tiny_models import write_forecast_version

REGIONS = ["US-CT", "US-MA", "US-NY"]
W, S, WEEKS = 4, 3, 16


def _rows(rows: list[tuple[int, str, dt.date]]) -> pa.Table:
    ts = pa.timestamp("us", tz="UTC")
    return pa.table({
        "source": pa.array(["test"] * len(rows)),
        "record_key": pa.array([f"c{i}" for i, _, _ in rows]),
        "patient_id": pa.array([f"p{i}" for i, _, _ in rows]),
        "region": pa.array([r for _, r, _ in rows]),
        "icd10_code": pa.array(["J10.1"] * len(rows)),
        "snomed_code": pa.array([None] * len(rows), pa.string()),
        "onset": pa.array([dt.datetime.combine(d, dt.time(9), dt.UTC) for _, _, d in rows], ts),
        "recorded": pa.array([None] * len(rows), ts),
    })


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """About 30 cases a week per region over the 16 weeks before this one, each stored 0-20 days after
    its onset, up to yesterday (what arrives later is not in the store yet)."""
    today = dt.datetime.now(dt.UTC).date()
    monday = today - dt.timedelta(days=today.weekday()) - dt.timedelta(weeks=WEEKS)
    rng = np.random.default_rng(5)
    by_day: dict[dt.date, list] = {}
    for i in range(30 * WEEKS * len(REGIONS)):
        onset = monday + dt.timedelta(days=int(rng.integers(0, 7 * WEEKS)))
        stored = onset + dt.timedelta(days=int(min(rng.geometric(0.25) - 1, 20)))
        if stored < today:
            by_day.setdefault(stored, []).append((i, REGIONS[i % 3], onset))
    s = ParquetStore(str(tmp_path / "store")).open()
    for day, rows in sorted(by_day.items()):
        s.commit({"condition": _rows(rows)}, now=dt.datetime.combine(day, dt.time(12), dt.UTC))
    s.close()
    return tmp_path / "store"


def test_the_window_is_nowcast_before_the_model_reads_it(store: Path, tmp_path: Path, make_server,
                                                        capsys) -> None:
    from healthai_client import Client
    from healthai_client.cli import main as client_main

    repo = tmp_path / "models"
    write_forecast_version(repo, "forecast_tiny", 1, REGIONS, window=W, steps=S)
    opened = ParquetStore(str(store)).open()
    server = make_server(repo, surveillance=SurveillanceCounts(opened))
    stub = forecast_pb2_grpc.ForecastStub(server.channel)

    def forecast(**kw) -> forecast_pb2.ForecastResponse:
        request = forecast_pb2.ForecastRequest(model_name="forecast_tiny",
                                               stored=forecast_pb2.StoredHistory(**kw))
        return stub.Forecast(request, timeout=20)

    plain, corrected = forecast(), forecast(nowcast=True)
    observed = np.array(plain.stored_history).reshape(W, 3)
    window = np.array(corrected.stored_history).reshape(W, 3)
    expected = nowcast(opened, freq="W", as_of=dt.datetime.now(dt.UTC).date()).table
    wide = expected.pivot(index="period", columns="region", values="nowcast")[REGIONS].to_numpy()[-W:]
    np.testing.assert_allclose(window, wide, rtol=1e-5)  # what the model read: the nowcast
    assert (window[-1] > observed[-1]).all() and (window >= observed - 1e-3).all()
    added = [c.nowcast_added for c in corrected.coverage]
    np.testing.assert_allclose(added, (window - observed).sum(axis=0), rtol=1e-4)
    assert [c.cases_in_window for c in corrected.coverage] == [c.cases_in_window for c in plain.coverage]
    assert not np.allclose(np.array(corrected.point), np.array(plain.point))
    with Client(f"127.0.0.1:{server.port}") as c:
        r = c.forecast(model="forecast_tiny", stored=True, nowcast=True)
    assert r.coverage[0]["nowcast_added"] == pytest.approx(added[0])
    assert client_main(["forecast", "-m", "forecast_tiny", "--stored", "--nowcast", "--json",
                        "--address", f"127.0.0.1:{server.port}"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["region_ids"] == REGIONS and "cases not stored yet added" in err
    assert "ended on" not in err  # a store up to yesterday: horizon 1 is the week under way


def test_a_private_server_refuses_to_nowcast(store: Path, tmp_path: Path, make_server) -> None:
    repo = tmp_path / "models"
    write_forecast_version(repo, "forecast_tiny", 1, REGIONS, window=W, steps=S)
    server = make_server(repo, surveillance=ReleasedCounts(ParquetStore(str(store)).open()))
    stub = forecast_pb2_grpc.ForecastStub(server.channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.Forecast(forecast_pb2.ForecastRequest(
            model_name="forecast_tiny", stored=forecast_pb2.StoredHistory(nowcast=True)), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("stored.nowcast: this server answers from DP releases")


def test_a_nowcast_forecast_is_the_models_forecast_of_the_nowcast_window(store: Path, tmp_path: Path,
                                                                         make_server) -> None:
    """Point and quantiles are the model's on the nowcast window, as an explicit history of it gives
    them: the nowcast's own uncertainty is not mixed in (benchmarks/nowcast_forecast.py: no better
    calibrated at state-level counts, worse at small ones)."""
    repo = tmp_path / "models"
    write_forecast_version(repo, "forecast_tiny", 1, REGIONS, window=W, steps=S)
    server = make_server(repo, surveillance=SurveillanceCounts(ParquetStore(str(store)).open()))
    stub = forecast_pb2_grpc.ForecastStub(server.channel)
    got = stub.Forecast(forecast_pb2.ForecastRequest(
        model_name="forecast_tiny", stored=forecast_pb2.StoredHistory(nowcast=True)), timeout=20)
    window = np.array(got.stored_history, np.float32).reshape(W, 3)
    one = stub.Forecast(forecast_pb2.ForecastRequest(model_name="forecast_tiny", history=forecast_pb2.History(
        region_ids=REGIONS, counts=window.ravel().tolist())), timeout=20)
    np.testing.assert_allclose(got.point, one.point, rtol=1e-5)
    np.testing.assert_allclose(got.quantiles, one.quantiles, rtol=1e-5)
