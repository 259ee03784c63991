"""Forecast over gRPC: explicit history, stored surveillance counts (real Parquet store), quantile
interpolation, the standard-opset fallback, and every bad-input status."""

from __future__ import annotations

import datetime as dt
import json
import logging

import grpc
import numpy as np
import pyarrow as pa
import pytest

from healthai.serving.runtime import onnx as runtime
from healthai.store import ParquetStore
from healthai.surveillance import SurveillanceCounts
from healthai.v1 import forecast_pb2, forecast_pb2_grpc

from .tiny_models import QUANTILES, forecast_factors, write_forecast_version

REGIONS = ["US-MA", "US-NY", "US-CT"]
W, S = 4, 3


@pytest.fixture
def repo(tmp_path):
    write_forecast_version(tmp_path / "models", "forecast_tiny", 1, REGIONS, window=W, steps=S)
    return tmp_path / "models"


@pytest.fixture
def stub(repo, make_server):
    server = make_server(repo, forecast_graphs={"tiny": "forecast_tiny"})
    return forecast_pb2_grpc.ForecastStub(server.channel)


def history(counts: np.ndarray, regions=REGIONS) -> forecast_pb2.History:
    values = np.asarray(counts, np.float32).reshape(-1).tolist()
    return forecast_pb2.History(region_ids=regions, counts=values)


def test_explicit_history_point_and_quantiles(stub):
    counts = np.arange(6 * 3, dtype=np.float32).reshape(6, 3)  # 6 steps; the last W=4 are used
    r = stub.Forecast(forecast_pb2.ForecastRequest(graph="tiny", history=history(counts),
                                                   quantile_levels=QUANTILES), timeout=10)  # float32 wire
    assert (r.model_name, r.model_version, r.step) == ("forecast_tiny", 1, "W")
    assert list(r.region_ids) == REGIONS and list(r.horizons) == [1, 2, 3]
    np.testing.assert_allclose(r.quantile_levels, QUANTILES, rtol=1e-6)
    mean = counts[-W:].mean(axis=0)  # [N]
    expected = mean[None, :, None] * forecast_factors(S)[:, None, :]  # [S, N, Q]
    np.testing.assert_allclose(np.array(r.quantiles).reshape(S, 3, 5), expected, rtol=1e-5)
    np.testing.assert_allclose(np.array(r.point).reshape(S, 3), expected[..., 2], rtol=1e-5)


def test_subsets_reordering_and_interpolated_levels(stub):
    counts = np.random.default_rng(0).uniform(0, 100, size=(W, 3)).astype(np.float32)
    order = [2, 0, 1]
    r = stub.Forecast(forecast_pb2.ForecastRequest(
        model_name="forecast_tiny", history=history(counts[:, order], [REGIONS[i] for i in order]),
        region_ids=["US-CT", "US-MA"], horizons=[3, 1], quantile_levels=[0.3, 0.9]), timeout=10)
    assert list(r.region_ids) == ["US-CT", "US-MA"] and list(r.horizons) == [3, 1]
    mean = counts.mean(axis=0)[[2, 0]]
    step = np.array([1.2, 1.0])[:, None, None]
    expected = mean[None, :, None] * step * (0.5 + np.array([0.3, 0.9]))[None, None, :]  # linear in level
    np.testing.assert_allclose(np.array(r.quantiles).reshape(2, 2, 2), expected, rtol=1e-5)


def _conditions(rows: list[tuple[str, str, dt.date]]) -> pa.Table:
    ts = pa.timestamp("us", tz="UTC")
    return pa.table({
        "source": pa.array(["test"] * len(rows)),
        "record_key": pa.array([f"c{i}" for i in range(len(rows))]),
        "patient_id": pa.array([f"p{i}" for i in range(len(rows))]),
        "region": pa.array([r for r, _, _ in rows]),
        "icd10_code": pa.array([c for _, c, _ in rows]),
        "snomed_code": pa.array([None] * len(rows), pa.string()),
        "onset": pa.array([dt.datetime.combine(d, dt.time(9), dt.UTC) for _, _, d in rows], ts),
        "recorded": pa.array([None] * len(rows), ts),
    })


@pytest.mark.parametrize("graph_ids", [REGIONS, ["Massachusetts", "New York", "Connecticut"]],
                         ids=["iso-codes", "state-names"])
def test_stored_surveillance_counts_weekly(tmp_path, make_server, graph_ids, capsys):
    repo = tmp_path / "models"  # stored counts are keyed by ISO 3166-2; graphs may name states instead
    write_forecast_version(repo, "forecast_tiny", 1, graph_ids, window=W, steps=S)
    monday = dt.date(2026, 1, 5)
    rows = []
    weekly = np.zeros((5, 3), np.float32)
    rng = np.random.default_rng(1)
    for week in range(5):
        for j, region in enumerate(REGIONS):
            for _ in range(int(rng.integers(0, 4))):
                rows.append((region, "J10.1", monday + dt.timedelta(days=7 * week + int(rng.integers(0, 7)))))
                weekly[week, j] += 1
    rows.append(("US-MA", "J06.9", monday))  # not ILI: not counted
    store = ParquetStore(str(tmp_path / "store")).open()
    store.commit({"condition": _conditions(rows)})
    server = make_server(repo, surveillance=SurveillanceCounts(store),
                         forecast_graphs={"tiny": "forecast_tiny"})
    stub = forecast_pb2_grpc.ForecastStub(server.channel)
    r = stub.Forecast(forecast_pb2.ForecastRequest(graph="tiny", stored=forecast_pb2.StoredHistory()),
                      timeout=10)
    expected = weekly[-W:].mean(axis=0)[None, :] * forecast_factors(S)[:, 2:3]
    np.testing.assert_allclose(np.array(r.point).reshape(S, 3), expected, rtol=1e-5)
    assert r.first_forecast_period == (monday + dt.timedelta(weeks=5)).isoformat()
    assert list(r.region_ids) == graph_ids
    from healthai_client.cli import main as client_main

    # a store of history forecasts from where its data stops, and the CLI says horizon 1 has ended
    address = f"127.0.0.1:{server.port}"
    assert client_main(["forecast", "--graph", "tiny", "--stored", "--address", address]) == 0
    err = capsys.readouterr().err
    assert f"warning: horizon 1 ({r.first_forecast_period}) ended on 2026-02-15, before today" in err
    other = tmp_path / "other"  # a graph none of whose regions has stored counts: refused, not zeros
    write_forecast_version(other, "forecast_tiny", 1, ["JP-col00", "JP-col01"], window=W, steps=S)
    other_server = make_server(other, surveillance=SurveillanceCounts(store))
    unmatched = forecast_pb2_grpc.ForecastStub(other_server.channel)
    with pytest.raises(grpc.RpcError) as err:
        unmatched.Forecast(forecast_pb2.ForecastRequest(model_name="forecast_tiny",
                                                        stored=forecast_pb2.StoredHistory()))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "none of the stored regions (e.g. ['US-CT', 'US-MA', 'US-NY'])" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:  # the window ending in week 2 has only 3 weeks before it
        stub.Forecast(forecast_pb2.ForecastRequest(
            graph="tiny", stored=forecast_pb2.StoredHistory(end_date=str(monday + dt.timedelta(days=15)))))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "stored: 3 W periods of stored counts; the model needs at least 4" in err.value.details()


@pytest.mark.parametrize("library", [None, "/nonexistent/libhealthai_ort_ops.so"])
def test_standard_variant_serves_when_the_op_library_is_missing(tmp_path, make_server, monkeypatch, caplog,
                                                                 library):
    """The op library not built (ort_library_path() is None) or gone: the real lookup, not mocked past."""
    from healthai import ops

    write_forecast_version(tmp_path / "m", "forecast_tiny", 1, REGIONS, window=W, steps=S,
                           custom_variant=True)
    monkeypatch.setattr(ops, "ort_library_path", lambda: library)
    with caplog.at_level(logging.WARNING, logger="healthai.serving.runtime.onnx"):
        server = make_server(tmp_path / "m")
    assert any("custom-op library not available; serving the standard-opset variant model.standard.onnx"
               in r.getMessage() for r in caplog.records)
    stub = forecast_pb2_grpc.ForecastStub(server.channel)
    r = stub.Forecast(forecast_pb2.ForecastRequest(model_name="forecast_tiny",
                                                   history=history(np.ones((W, 3)))))
    np.testing.assert_allclose(np.array(r.point).reshape(S, 3)[:, 0], [1.0, 1.1, 1.2], rtol=1e-5)
    loaded = server.plugin.manager.resolve("forecast_tiny")
    assert loaded.runtime.model_file.name == "model.standard.onnx" and not loaded.runtime.uses_custom_ops


def test_custom_op_variant_runs_in_our_kernel_when_the_library_is_present(tmp_path, make_server):
    if runtime.custom_ops_library() is None:
        pytest.fail("the healthai ONNX Runtime op library is not built (pip install -e . builds it)")
    weights = np.array([1.0, 0.5, 2.0], np.float32)
    path_graph = np.array([[1, 1, 0], [1, 1, 1], [0, 1, 1]], np.float32) * weights
    write_forecast_version(tmp_path / "m", "forecast_tiny", 1, REGIONS, window=W, steps=S,
                           custom_variant=True, adjacency=path_graph)
    server = make_server(tmp_path / "m")
    loaded = server.plugin.manager.resolve("forecast_tiny")
    assert loaded.runtime.model_file.name == "model.onnx" and loaded.runtime.uses_custom_ops
    counts = np.random.default_rng(2).uniform(0, 50, size=(W, 3)).astype(np.float32)
    r = forecast_pb2_grpc.ForecastStub(server.channel).Forecast(
        forecast_pb2.ForecastRequest(model_name="forecast_tiny", history=history(counts)), timeout=10)
    expected = (counts @ path_graph.T).mean(axis=0)[None, :] * forecast_factors(S)[:, 2:3]
    np.testing.assert_allclose(np.array(r.point).reshape(S, 3), expected, rtol=1e-5)


OK = np.ones((W, 3))

INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(("kw", "code", "message"), [
    ({"graph": "mars", "history": history(OK)}, NOT_FOUND, "graph 'mars' is not served"),
    ({"model_name": "forecast_x", "history": history(OK)}, NOT_FOUND, "'forecast_x'"),
    ({"graph": "tiny", "model_version": 9, "history": history(OK)}, NOT_FOUND, "no version 9"),
    ({"history": history(OK)}, INVALID, "graph or model_name: one is required"),
    ({"graph": "tiny"}, INVALID, "history or stored: one is required"),
    ({"graph": "tiny", "history": history(np.ones((3, 3)))}, INVALID,
     "history.counts: 3 steps of history; the model needs at least 4"),
    ({"graph": "tiny", "history": history(np.ones(13))}, INVALID,
     "history.counts: 13 values is not a multiple of 3 regions"),
    ({"graph": "tiny", "history": history(OK, ["US-MA", "US-XX", "US-CT"])}, INVALID,
     "history.region_ids[1]: unknown region 'US-XX'"),
    ({"graph": "tiny", "history": history(np.ones((W, 2)), ["US-MA", "US-CT"])},
     INVALID, "history.region_ids: missing 1 of the graph's regions, e.g. ['US-NY']"),
    ({"graph": "tiny", "history": history(np.where(np.eye(W, 3) > 0, np.nan, 1))},
     INVALID, "history.counts[0][US-MA]: value nan is not a finite count"),
    ({"graph": "tiny", "history": history(-OK)}, INVALID, "value -1.0 is not a finite"),
    ({"graph": "tiny", "history": history(OK), "region_ids": ["US-TX"]}, INVALID,
     "region_ids[0]: unknown region 'US-TX'"),
    ({"graph": "tiny", "history": history(OK), "quantile_levels": [0.5, 1.5]}, INVALID,
     "quantile_levels[1]: 1.5 is outside (0, 1)"),
    ({"graph": "tiny", "history": history(OK), "quantile_levels": [0.0]}, INVALID,
     "quantile_levels[0]: 0 is outside (0, 1)"),
    ({"graph": "tiny", "history": history(OK), "quantile_levels": [0.05]}, INVALID,
     "outside the model's range [0.1, 0.9]"),
    ({"graph": "tiny", "history": history(OK), "horizons": [4]}, INVALID,
     "horizons[0]: 4 is not one of the model's horizons [1, 2, 3]"),
    ({"graph": "tiny", "stored": forecast_pb2.StoredHistory()}, INVALID,
     "stored: this server keeps no surveillance counts"),
], ids=["unknown-graph", "unknown-model", "unknown-version", "no-model", "no-history", "too-few-steps",
        "ragged", "unknown-history-region", "missing-region", "nan", "negative", "unknown-region",
        "level-above-1", "level-0", "level-out-of-model-range", "unknown-horizon", "no-store"])
def test_bad_input_status(stub, kw, code, message):
    with pytest.raises(grpc.RpcError) as err:
        stub.Forecast(forecast_pb2.ForecastRequest(**kw), timeout=10)
    assert err.value.code() == code
    assert message in err.value.details()


def test_a_model_trained_on_kept_negatives_takes_them(tmp_path, make_server) -> None:
    """``train forecast --negatives keep`` (reporting corrections as negative counts): its card says so,
    and its own series, corrections included, is a history it takes; other models refuse them."""
    repo = tmp_path / "models"
    vdir = write_forecast_version(repo, "forecast_kept", 1, REGIONS, window=W, steps=S)
    card = json.loads((vdir / "model_card.json").read_text())
    (vdir / "model_card.json").write_text(json.dumps({**card, "data": {"negatives": "keep",
                                                                        "negative_counts": 2}}))
    stub = forecast_pb2_grpc.ForecastStub(make_server(repo).channel)
    counts = np.ones((W, 3), np.float32)
    counts[1, 2] = -2.0
    history = forecast_pb2.History(region_ids=REGIONS, counts=counts.ravel().tolist())
    r = stub.Forecast(forecast_pb2.ForecastRequest(model_name="forecast_kept", history=history), timeout=10)
    expected = counts.mean(axis=0)[None, :] * forecast_factors(S)[:, 2:3]
    np.testing.assert_allclose(np.array(r.point).reshape(S, 3), expected, rtol=1e-5)
    counts[1, 2] = np.nan  # still a count: not NaN
    with pytest.raises(grpc.RpcError) as err:
        stub.Forecast(forecast_pb2.ForecastRequest(model_name="forecast_kept", history=forecast_pb2.History(
            region_ids=REGIONS, counts=counts.ravel().tolist())), timeout=10)
    assert "value nan is not a finite count" in err.value.details()


def test_kserve_infer_on_a_forecaster_takes_the_counts_forecast_takes(tmp_path, repo, make_server) -> None:
    """ModelInfer on a forecaster checks its counts as Forecast does: negatives are refused, naming the
    tensor cell and region, unless the model was trained with them kept."""
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException

    vdir = write_forecast_version(repo, "forecast_kept", 1, REGIONS, window=W, steps=S)
    card = json.loads((vdir / "model_card.json").read_text())
    (vdir / "model_card.json").write_text(json.dumps({**card, "data": {"negatives": "keep"}}))
    server = make_server(repo)
    counts = np.ones((1, W, 3), np.float32)
    counts[0, 2, 1] = -3.0

    def infer(model: str) -> np.ndarray:
        tensor = triton.InferInput("history", list(counts.shape), "FP32")
        tensor.set_data_from_numpy(counts)
        with triton.InferenceServerClient(f"127.0.0.1:{server.port}") as client:
            return client.infer(model, [tensor]).as_numpy("forecast")

    with pytest.raises(InferenceServerException) as err:
        infer("forecast_tiny")
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "history[0][2][1] (region US-NY): value -3.0 is not a finite count >= 0" in err.value.message()
    assert infer("forecast_kept").shape == (1, S, 3, len(QUANTILES))
