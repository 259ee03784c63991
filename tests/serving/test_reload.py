"""Hot reload of the model repository: new versions swap in without failing in-flight requests;
corrupt or incompatible versions are refused with a clear log line while the previous one serves."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import onnx
import pytest
import tritonclient.grpc as triton

from healthai.v1 import risk_pb2, risk_pb2_grpc

from .tiny_models import logistic_model, write_risk_version

X = np.array([[1.0, 1.0, 1.0, 1.0]], np.float32)


def score(stub, version: int = 0) -> risk_pb2.ScoreResponse:
    return stub.Score(risk_pb2.ScoreRequest(model_name="risk_tiny", model_version=version,
                                            features=X.reshape(-1).tolist(), top_features=0), timeout=10)


def sigmoid(z: float) -> float:
    return 1 / (1 + np.exp(-z))


def test_new_version_swaps_in_without_failing_in_flight_requests(risk_repo, make_server):
    server = make_server(risk_repo)
    stub = risk_pb2_grpc.RiskStub(server.channel)
    assert score(stub).probability[0] == pytest.approx(sigmoid(2.25), rel=1e-5)
    stop = False

    def hammer() -> list[int]:
        versions = []
        while not stop:
            versions.append(score(stub).model_version)  # raises (fails the test) on any error
        return versions

    with ThreadPoolExecutor(4) as pool:
        loads = [pool.submit(hammer) for _ in range(4)]
        write_risk_version(risk_repo, "risk_tiny", 2, np.array([0.0, 0.0, 0.0, 1.0]), bias=0.0)
        server.poll()
        after = time.monotonic() + 0.3
        while time.monotonic() < after:
            score(stub)
        stop = True
        seen = [v for f in loads for v in f.result()]
    assert set(seen) == {1, 2} and seen.count(2) > 0
    r = score(stub)
    assert r.model_version == 2 and r.probability[0] == pytest.approx(sigmoid(1.0), rel=1e-5)
    assert score(stub, version=1).probability[0] == pytest.approx(sigmoid(2.25), rel=1e-5)  # pinned


@pytest.mark.parametrize("kind", ["corrupt", "incompatible", "missing-card"])
def test_bad_version_is_refused_and_previous_keeps_serving(risk_repo, make_server, caplog, kind):
    server = make_server(risk_repo)
    stub = risk_pb2_grpc.RiskStub(server.channel)
    vdir = risk_repo / "risk_tiny" / "2"
    if kind == "incompatible":  # 5 features where config.pbtxt says 4
        write_risk_version(risk_repo, "risk_tiny", 2, np.ones(5))
        expected = "has dims [5] in the model but [4] in config.pbtxt"
    elif kind == "missing-card":
        write_risk_version(risk_repo, "risk_tiny", 2, np.ones(4))
        (vdir / "model_card.json").unlink()
        expected = "model card has no 'features' list"
    else:
        vdir.mkdir()
        (vdir / "model.onnx").write_bytes(b"\x08\x07garbage" * 10)
        expected = "not a valid ONNX model"
    with caplog.at_level(logging.ERROR, logger="healthai.serving.runtime.manager"):
        server.poll()
    lines = [r.getMessage() for r in caplog.records if "REFUSED" in r.getMessage()]
    assert len(lines) == 1 and "model risk_tiny version 2 REFUSED" in lines[0] and expected in lines[0]
    assert "still serving version(s) [1]" in lines[0]
    assert score(stub).model_version == 1
    with pytest.raises(grpc.RpcError) as err:
        score(stub, version=2)
    # refused at load: FAILED_PRECONDITION (clients retry only UNAVAILABLE), the reason without server paths
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and expected in err.value.details()
    assert str(risk_repo) not in err.value.details()
    with triton.InferenceServerClient(f"127.0.0.1:{server.port}") as client:
        index = client.get_model_repository_index(as_json=True)["models"]
    assert [(m["version"], m["state"]) for m in index] == [("1", "READY"), ("2", "UNAVAILABLE")]
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="healthai.serving.runtime.manager"):
        server.poll()  # unchanged: not retried, not logged again
    assert not caplog.records


def test_fixed_version_and_in_place_change_are_picked_up_by_the_watcher(risk_repo, make_server):
    server = make_server(risk_repo, reload_poll_s=0.05)
    stub = risk_pb2_grpc.RiskStub(server.channel)
    model_file = risk_repo / "risk_tiny" / "1" / "model.onnx"
    onnx.save(logistic_model(np.array([0.0, 0.0, 0.0, 0.0], np.float32), 0.0), str(model_file))
    deadline = time.monotonic() + 20
    while score(stub).probability[0] != pytest.approx(0.5):  # the watcher swaps within a few polls
        assert time.monotonic() < deadline, "in-place change not picked up"
    removed = risk_repo / "risk_tiny"
    write_risk_version(risk_repo, "risk_tiny", 3, np.ones(4))
    while score(stub).model_version != 3:
        assert time.monotonic() < deadline, "new version not picked up"
    for f in sorted((removed / "3").iterdir()):
        f.unlink()
    (removed / "3").rmdir()
    while score(stub).model_version != 1:  # removing the newest falls back to the previous
        assert time.monotonic() < deadline, "removal not picked up"


def test_a_version_corrupted_in_place_keeps_its_previous_load_and_the_index_says_why(risk_repo, make_server):
    server = make_server(risk_repo)
    stub = risk_pb2_grpc.RiskStub(server.channel)
    (risk_repo / "risk_tiny" / "1" / "model.onnx").write_bytes(b"\x08\x07garbage" * 10)
    server.poll()
    assert score(stub).model_version == 1  # still the earlier, good session
    with triton.InferenceServerClient(f"127.0.0.1:{server.port}") as client:
        (entry,) = client.get_model_repository_index(as_json=True)["models"]
    assert entry["state"] == "READY"
    assert "serving its previous load; the changed files were refused" in entry["reason"]
    assert "not a valid ONNX model" in entry["reason"]
