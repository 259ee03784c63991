"""Per-service health is readiness: Risk / Forecast / KServe are NOT_SERVING while none of their models
is loaded, Ingest while its store cannot be written; the whole server ("", what the k8s probes ask)
stays SERVING. Each transition is logged once. Real server, real model repository, real store files."""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from healthai.app.server import OVERALL
from healthai.app.settings import Settings
from healthai.app.testing import serve_in_thread
from healthai.ingest.plugin import IngestPlugin
from healthai.normalize.context import NormalizeContext
from healthai.serving.plugin import plugin as serving_plugin
from healthai.serving.settings import ServingSettings
from healthai.v1 import ingest_pb2, ingest_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
RISK, FORECAST, KSERVE = "healthai.v1.Risk", "healthai.v1.Forecast", "inference.GRPCInferenceService"
DIAGNOSTICS, INGEST = "healthai.v1.Diagnostics", "healthai.v1.Ingest"
MODELS = Path(__file__).resolve().parents[2] / "server" / "healthai" / "data" / "models"


def _request() -> ingest_pb2.IngestRequest:
    entries = [{"resource": {"resourceType": "Patient", "id": "p0", "gender": "female",
                             "birthDate": "1980-02-03"}}]
    payload = ingest_pb2.FhirPayload(json=json.dumps({"resourceType": "Bundle", "type": "collection",
                                                      "entry": entries}).encode())
    return ingest_pb2.IngestRequest(source="hospital-a", fhir=payload)


def _block(store: Path) -> Path:
    """Today's patient partition taken by a regular file: writing there fails with EEXIST."""
    kind_dir = store / "kind=patient"
    kind_dir.mkdir(parents=True, exist_ok=True)
    blocker = kind_dir / f"ingest_date={dt.datetime.now(dt.UTC).date().isoformat()}"
    blocker.write_text("not a directory")
    return blocker


def _status(channel: grpc.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status


def _until(channel: grpc.Channel, expected: dict[str, int], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        seen = {name: _status(channel, name) for name in expected}
        if seen == expected or time.monotonic() > deadline:
            assert seen == expected
            return
        time.sleep(0.05)


def _transitions(caplog: pytest.LogCaptureFixture, service: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "healthai.app.server" and r.getMessage().startswith(f"health: {service} ")]


def test_serving_services_follow_their_loaded_models(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    repo = tmp_path / "models"
    repo.mkdir()  # an empty repository volume: the server starts, its inference services are not ready
    settings = Settings(port=0, health_port=0, dev_mode=True,
                        serving=ServingSettings(model_repository=repo, reload_poll_s=0.1))
    plugins = [serving_plugin(settings=settings)]
    with caplog.at_level(logging.INFO), serve_in_thread(settings, plugins) as running, \
            grpc.insecure_channel(f"127.0.0.1:{running.health_port}") as probe:
        _until(probe, {OVERALL: SERVING, DIAGNOSTICS: SERVING,
                       RISK: NOT_SERVING, FORECAST: NOT_SERVING, KSERVE: NOT_SERVING})
        shutil.copytree(MODELS / "risk_heart", repo / "risk_heart")
        _until(probe, {RISK: SERVING, KSERVE: SERVING, FORECAST: NOT_SERVING, OVERALL: SERVING})
        shutil.copytree(MODELS / "forecast_japan", repo / "forecast_japan")
        _until(probe, {RISK: SERVING, KSERVE: SERVING, FORECAST: SERVING})
        shutil.rmtree(repo / "risk_heart")
        _until(probe, {RISK: NOT_SERVING, KSERVE: SERVING, FORECAST: SERVING, OVERALL: SERVING})
        shutil.rmtree(repo / "forecast_japan")
        _until(probe, {RISK: NOT_SERVING, KSERVE: NOT_SERVING, FORECAST: NOT_SERVING, OVERALL: SERVING})
        time.sleep(0.5)  # several more scans: nothing changes, nothing more is logged
    risk = _transitions(caplog, RISK)
    assert len(risk) == 3, risk  # not ready, ready, not ready: once each, not once per scan
    assert "NOT_SERVING: no risk model is loaded" in risk[0] and "SERVING again" in risk[1]
    assert len(_transitions(caplog, KSERVE)) == 3 and len(_transitions(caplog, FORECAST)) == 3
    assert not _transitions(caplog, DIAGNOSTICS)


def test_ingest_is_not_serving_from_a_store_write_error_until_a_commit_succeeds(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = tmp_path / "store"
    settings = Settings(port=0, store_uri=str(store), dev_mode=True)
    ctx = NormalizeContext.create(key=bytes(range(32)), reference_date=dt.date(2026, 6, 1))
    with caplog.at_level(logging.INFO), serve_in_thread(settings, [IngestPlugin(settings, ctx=ctx)]) \
            as running, grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = ingest_pb2_grpc.IngestStub(channel)
        _until(channel, {INGEST: SERVING, OVERALL: SERVING})
        blocker = _block(store)
        call: Callable[[], object] = lambda: stub.IngestBatch(_request(), timeout=60)  # noqa: E731
        for _ in range(2):  # the second failure changes nothing (and logs no second transition)
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        _until(channel, {INGEST: NOT_SERVING, OVERALL: SERVING})
        blocker.unlink()
        assert dict(stub.IngestBatch(_request(), timeout=60).receipt.stored) == {"patient": 1}
        _until(channel, {INGEST: SERVING, OVERALL: SERVING})
    logged = _transitions(caplog, INGEST)
    assert len(logged) == 2, logged
    assert "NOT_SERVING: the store cannot be written (EEXIST: File exists)" in logged[0]
    assert str(store) not in logged[0]
    assert "SERVING again" in logged[1]
