"""``stored_counts = "private"``: Forecast --stored answers from the newest DP release in the store's
ledger (made by ``healthai counts --epsilon``), never from the exact counts (real Parquet store, real
OpenDP release, real gRPC server)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from healthai.app.main import build_plugins
from healthai.app.settings import Settings
from healthai.cli import main
from healthai.store import ParquetStore
from healthai.surveillance import SurveillanceCounts
from healthai.surveillance.released import ReleasedCounts
from healthai.v1 import forecast_pb2, forecast_pb2_grpc

from .tiny_models import forecast_factors, write_forecast_version

pytest.importorskip("opendp")
REGIONS = ["US-CT", "US-MA", "US-NY"]
W, S, WEEKS = 4, 3, 8
MONDAY = dt.date(2026, 1, 5)


def _conditions(n_per_week: np.ndarray) -> pa.Table:
    """n_per_week[w, j] influenza conditions, each its own patient, in week w of region j."""
    rows = [(REGIONS[j], MONDAY + dt.timedelta(days=7 * w + k % 7))
            for w in range(WEEKS) for j in range(len(REGIONS)) for k in range(int(n_per_week[w, j]))]
    ts = pa.timestamp("us", tz="UTC")
    return pa.table({
        "source": pa.array(["test"] * len(rows)),
        "record_key": pa.array([f"c{i}" for i in range(len(rows))]),
        "patient_id": pa.array([f"p{i}" for i in range(len(rows))]),
        "region": pa.array([r for r, _ in rows]),
        "icd10_code": pa.array(["J10.1"] * len(rows)),
        "snomed_code": pa.array([None] * len(rows), pa.string()),
        "onset": pa.array([dt.datetime.combine(d, dt.time(9), dt.UTC) for _, d in rows], ts),
        "recorded": pa.array([None] * len(rows), ts),
    })


@pytest.fixture
def store(tmp_path: Path) -> Path:
    exact = np.random.default_rng(4).integers(20, 60, size=(WEEKS, len(REGIONS)))
    s = ParquetStore(str(tmp_path / "store")).open()
    s.commit({"condition": _conditions(exact)})
    s.close()
    return tmp_path / "store"


def _release(store: Path, out: Path, end_week: int, *extra: str) -> pd.DataFrame:
    """A weekly region-level release through the CLI; the published table (period x region)."""
    end = MONDAY + dt.timedelta(days=7 * end_week + 6)
    argv = ["counts", "--store", str(store), "--epsilon", "1", "--regions", ",".join(REGIONS), "--step", "W",
            "--start", str(MONDAY), "--end", str(end), "--out", str(out), *extra]
    assert main(argv) == 0
    published = pd.read_csv(out).pivot(index="period", columns="region", values="count")
    return published[REGIONS]


def test_stored_forecasts_read_the_newest_release_not_the_exact_counts(store: Path, tmp_path: Path,
                                                                        make_server, capsys) -> None:
    repo = tmp_path / "models"
    write_forecast_version(repo, "forecast_tiny", 1, REGIONS, window=W, steps=S)
    older = _release(store, tmp_path / "older.csv", end_week=5)
    newer = _release(store, tmp_path / "newer.csv", end_week=WEEKS - 1)
    capsys.readouterr()
    opened = ParquetStore(str(store)).open()
    exact = SurveillanceCounts(opened).counts("ili", "W")[REGIONS].to_numpy(np.float32)
    server = make_server(repo, surveillance=ReleasedCounts(opened))
    stub = forecast_pb2_grpc.ForecastStub(server.channel)

    def forecast(end_date: str = "") -> forecast_pb2.ForecastResponse:
        stored = forecast_pb2.StoredHistory(end_date=end_date)
        request = forecast_pb2.ForecastRequest(model_name="forecast_tiny", stored=stored)
        return stub.Forecast(request, timeout=10)

    r = forecast()
    window = np.array(r.stored_history).reshape(W, 3)
    np.testing.assert_array_equal(window, newer.to_numpy(np.float32)[-W:])  # the published numbers
    assert not np.array_equal(window, exact[-W:])  # 12 cells all without noise: probability ~1e-11
    expected = window.mean(axis=0)[None, :] * forecast_factors(S)[:, 2:3]
    np.testing.assert_allclose(np.array(r.point).reshape(S, 3), expected, rtol=1e-5)
    assert r.first_forecast_period == str(MONDAY + dt.timedelta(weeks=WEEKS))
    # an end inside the newest release: its earlier weeks (the newest release, not the older one)
    mid = forecast(end_date=str(MONDAY + dt.timedelta(days=7 * 5 + 2)))
    np.testing.assert_array_equal(np.array(mid.stored_history).reshape(W, 3), newer.to_numpy()[2:6])
    assert not np.array_equal(newer.to_numpy()[:6], older.to_numpy())  # two releases, two noise draws
    with pytest.raises(grpc.RpcError) as err:  # past the newest release: refused, naming the field
        forecast(end_date=str(MONDAY + dt.timedelta(weeks=WEEKS + 2)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("stored.end_date: the newest private release")


def test_without_a_matching_release_stored_is_refused(store: Path, tmp_path: Path, make_server) -> None:
    repo = tmp_path / "models"
    write_forecast_version(repo, "forecast_tiny", 1, REGIONS, window=W, steps=S)
    _release(store, tmp_path / "sunday.csv", WEEKS - 2, "--week-start", "sunday")  # other weeks: no match
    server = make_server(repo, surveillance=ReleasedCounts(ParquetStore(str(store)).open()))
    stub = forecast_pb2_grpc.ForecastStub(server.channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.Forecast(forecast_pb2.ForecastRequest(model_name="forecast_tiny",
                                                   stored=forecast_pb2.StoredHistory()), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "answers from private releases only" in err.value.details()
    assert "weeks starting monday" in err.value.details()


def test_a_refused_release_keeps_no_table_and_the_setting_picks_the_source(store: Path, tmp_path: Path,
                                                                          capsys) -> None:
    _release(store, tmp_path / "one.csv", WEEKS - 1)
    argv = ["counts", "--store", str(store), "--epsilon", "1", "--regions", ",".join(REGIONS), "--step", "W",
            "--start", str(MONDAY), "--end", str(MONDAY + dt.timedelta(weeks=WEEKS - 1)), "--budget", "1.5"]
    assert main(argv) == 2 and "would pass the budget" in capsys.readouterr().err
    assert len(list((store / "privacy").glob("table-*.parquet"))) == 1  # the refused one left nothing
    for mode, kind in (("private", ReleasedCounts), ("exact", SurveillanceCounts)):
        settings = Settings(dev_mode=True, store_uri=str(store), stored_counts=mode)
        plugins = build_plugins(settings)
        assert isinstance(plugins[1].surveillance, kind)
        assert isinstance(plugins[2].servicer.surveillance, kind)  # Scenario's stored calibration too


def test_privacy_ledger_lists_each_release_and_the_total(store: Path, tmp_path: Path, capsys) -> None:
    _release(store, tmp_path / "one.csv", WEEKS - 1)
    _release(store, tmp_path / "two.csv", WEEKS - 1, "--keep-negative")
    capsys.readouterr()
    assert main(["privacy-ledger", "--store", str(store)]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith("entry\treleased_at\tuse") and len(lines) == 3
    assert lines[1].startswith("release-00000001.json") and "healthai counts" in lines[1]
    assert lines[2].endswith("\tyes") and "2 releases, epsilon 2 spent in all" in err
    assert main(["privacy-ledger", "--store", str(store), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["epsilon_spent"] == pytest.approx(2.0) and [r["entry"] for r in doc["releases"]] == [
        "release-00000001.json", "release-00000002.json"]
    assert doc["releases"][1]["nonnegative"] is False
    assert main(["privacy-ledger", "--store", str(tmp_path / "nowhere")]) == 2
