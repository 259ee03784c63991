"""``healthai serve`` (a real subprocess, the CLI's own settings path) on the package's default model
repository answers Risk, Forecast and KServe v2 calls for every default model."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton

from healthai.app.testing import start_server_process, stop_server_process
from healthai.serving.risk.card import parse_risk_card
from healthai.serving.settings import DEFAULT_MODEL_REPOSITORY, newest_version_dir
from healthai.v1 import forecast_pb2, forecast_pb2_grpc, risk_pb2, risk_pb2_grpc

RISK_MODELS = ["risk_readmission", "risk_heart"]
FORECAST_GRAPHS = {"japan": "forecast_japan", "us_states": "forecast_us_states"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc, port = start_server_process(["--dev", "--store-uri", str(tmp_path_factory.mktemp("store"))],
                                      env={"HEALTHAI_LOG_LEVEL": "WARNING"}, timeout=120)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield port, channel
    channel.close()
    assert stop_server_process(proc) == 0


def _card(name: str) -> dict:
    path = newest_version_dir(name) / "model_card.json"
    if not path.is_file():
        pytest.fail(f"default model {name} is missing from {DEFAULT_MODEL_REPOSITORY}")
    return json.loads(path.read_text())


@pytest.mark.parametrize("name", RISK_MODELS)
def test_risk_and_kserve_on_default_models(server, name):
    port, channel = server
    card = parse_risk_card(_card(name), n_inputs=0, where=name)
    assert card.domains is not None, f"the default {name} card has no feature domains"
    d = card.domains
    x = np.repeat(d.typical_patient(card.baseline), 2, axis=0)  # two valid, different patients
    derived = {v.column for v in d.derived}
    ranged = [j for j in range(card.n_features) if not d.binary[j] and j not in derived]
    mid = d.lo + 0.7 * (d.hi - d.lo)  # not the midpoint: a DP card's baseline may be just that
    x[1, ranged] = np.where(d.integer, np.floor(mid), mid)[ranged]
    for v in d.derived:
        x[:, v.column] = v.fn(x[:, v.sources].astype(np.float64))
    assert not np.array_equal(x[0], x[1])
    r = risk_pb2_grpc.RiskStub(channel).Score(
        risk_pb2.ScoreRequest(model_name=name, features=x.reshape(-1).tolist()), timeout=30)
    assert r.model_name == name and r.model_version >= 1
    assert len(r.probability) == 2 and all(0 <= p <= 1 for p in r.probability)
    assert len(r.risk_band) == 2 and len(r.top_feature_name) == 2 * r.top_k == 6
    with triton.InferenceServerClient(f"127.0.0.1:{port}") as client:
        assert client.is_model_ready(name)
        inp = triton.InferInput("features", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        got = client.infer(name, [inp]).as_numpy("probability")
    np.testing.assert_allclose(got.reshape(-1), r.probability, rtol=1e-5)


@pytest.mark.parametrize("graph", sorted(FORECAST_GRAPHS))
def test_forecast_on_default_models(server, graph):
    _, channel = server
    name = FORECAST_GRAPHS[graph]
    card = _card(name)
    regions = json.loads((newest_version_dir(name) / "graph.json").read_text())["region_ids"]
    counts = np.random.default_rng(0).uniform(0, 300, size=(card["window"], len(regions)))
    r = forecast_pb2_grpc.ForecastStub(channel).Forecast(forecast_pb2.ForecastRequest(
        graph=graph, history=forecast_pb2.History(region_ids=regions, counts=counts.reshape(-1).tolist())),
        timeout=30)
    h, n, q = len(r.horizons), len(r.region_ids), len(r.quantile_levels)
    assert (r.model_name, n, q) == (name, len(regions), len(card["quantile_levels"]))
    quantiles = np.array(r.quantiles).reshape(h, n, q)
    assert np.isfinite(quantiles).all() and (np.diff(quantiles, axis=-1) >= 0).all()
