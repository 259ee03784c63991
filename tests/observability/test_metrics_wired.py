"""The documented model metrics get samples from a real server: healthai_model_version_loaded follows
loads, reloads, removals and unloads; healthai_batch_size counts executed rows; healthai_queue_depth
has a series per served version while it serves. Risk.Score, ModelInfer and Forecast put their
counts on the audit line. A metrics port in use is a clean start-up refusal."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from healthai import observability
from healthai.app.server import build_server
from healthai.app.settings import Settings
from healthai.errors import InvalidInput
from healthai.observability import REGISTRY, ObservabilitySettings
from healthai.observability.audit import AUDIT_LOGGER_NAME
from healthai.serving.plugin import plugin
from healthai.serving.settings import ServingSettings
from healthai.v1 import forecast_pb2, forecast_pb2_grpc, risk_pb2, risk_pb2_grpc
from tests.serving.conftest import ServerThread
from tests.serving.tiny_models import write_forecast_version, write_risk_version

MODEL = "risk_wired"  # REGISTRY is process-wide: a name no other test uses
WEIGHTS = np.array([1.0, 0.5, -0.25, 2.0])


def _loaded(version: int) -> float | None:
    labels = {"model": MODEL, "version": str(version)}
    return REGISTRY.get_sample_value("healthai_model_version_loaded", labels)


def _depth(version: int) -> float | None:
    return REGISTRY.get_sample_value("healthai_queue_depth", {"queue": f"{MODEL}-v{version}"})


def _batches() -> tuple[float, float]:
    count = REGISTRY.get_sample_value("healthai_batch_size_count", {"model": MODEL}) or 0.0
    rows = REGISTRY.get_sample_value("healthai_batch_size_sum", {"model": MODEL}) or 0.0
    return count, rows


def test_model_metrics_follow_the_served_versions(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    write_risk_version(repo, MODEL, 1, WEIGHTS)
    server = ServerThread(ServingSettings(model_repository=repo, reload_poll_s=0.0))
    try:
        assert _loaded(1) == 1.0 and _depth(1) == 0.0
        count, rows = _batches()
        stub = risk_pb2_grpc.RiskStub(server.channel)
        stub.Score(risk_pb2.ScoreRequest(model_name=MODEL, features=[0.1] * 12, top_features=0), timeout=10)
        assert _batches() == (count + 1, rows + 3)  # one execution of 3 patients

        write_risk_version(repo, MODEL, 2, WEIGHTS)
        server.poll()
        assert _loaded(1) == 1.0 and _loaded(2) == 1.0 and _depth(2) == 0.0
        model_file = repo / MODEL / "2" / "model.onnx"  # changed files: version 2 reloads
        os.utime(model_file, ns=(model_file.stat().st_atime_ns, model_file.stat().st_mtime_ns + 10**9))
        server.poll()
        server.run(_settle())
        assert _loaded(2) == 1.0 and _depth(2) == 0.0, "closing the replaced load dropped the new series"

        shutil.rmtree(repo / MODEL / "1")
        server.poll()
        server.run(_settle())
        assert _loaded(1) is None and _depth(1) is None and _loaded(2) == 1.0

        server.run(server.plugin.manager.unload_model(MODEL))
        server.run(_settle())
        assert _loaded(2) is None and _depth(2) is None
        server.run(server.plugin.manager.load_model(MODEL))
        assert _loaded(2) == 1.0
    finally:
        server.close()
    assert _loaded(2) is None and _depth(2) is None


async def _settle() -> None:
    """Let retiring versions finish closing (their scheduler drains, then drops its series)."""
    for _ in range(100):
        await asyncio.sleep(0.01)


def test_serving_rpcs_note_counts_on_the_audit_line(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    write_risk_version(repo, "risk_tiny", 1, WEIGHTS)
    write_forecast_version(repo, "forecast_tiny", 1, ["US-MA", "US-NY", "US-CT"], window=4, steps=3)
    audit_file = tmp_path / "audit.log"

    async def scenario() -> None:
        obs = observability.setup(ObservabilitySettings(audit_log_file=audit_file, metrics_port=None))
        settings = Settings(port=0, dev_mode=True, serving={
            "model_repository": repo, "reload_poll_s": 0, "forecast_graphs": {"tiny": "forecast_tiny"}})
        running = build_server(settings, [plugin(settings=settings)], interceptors=obs.interceptors)
        await running.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as ch:
                await risk_pb2_grpc.RiskStub(ch).Score(risk_pb2.ScoreRequest(
                    model_name="risk_tiny", features=[0.1] * 20, top_features=0), timeout=10)
                request = service_pb2.ModelInferRequest(model_name="risk_tiny")
                request.inputs.add(name="features", datatype="FP32", shape=[2, 4]).contents.fp32_contents \
                    .extend([0.5] * 8)
                await service_pb2_grpc.GRPCInferenceServiceStub(ch).ModelInfer(request, timeout=10)
                history = forecast_pb2.History(region_ids=["US-MA", "US-NY", "US-CT"], counts=[1.0] * 12)
                await forecast_pb2_grpc.ForecastStub(ch).Forecast(forecast_pb2.ForecastRequest(
                    graph="tiny", history=history, region_ids=["US-NY"], horizons=[1, 3]), timeout=10)
        finally:
            await running.stop(0)
            obs.close()

    asyncio.run(scenario())
    counts = {line["rpc"]: line["counts"] for line in map(json.loads, audit_file.read_text().splitlines())}
    assert counts["healthai.v1.Risk/Score"] == {"patients": 5}
    assert counts["inference.GRPCInferenceService/ModelInfer"] == {"rows": 2, "inputs": 1}
    assert counts["healthai.v1.Forecast/Forecast"] == {"regions": 1, "horizons": 2}


def _busy_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_metrics_port_in_use_is_invalid_input_naming_the_setting(tmp_path: Path) -> None:
    with _busy_port() as sock:
        port = sock.getsockname()[1]
        with pytest.raises(InvalidInput, match=f"metrics_port 127.0.0.1:{port}") as refused:
            observability.setup(ObservabilitySettings(audit_log_file=tmp_path / "a.log", metrics_port=port))
    assert refused.value.field == "metrics_port"
    # what setup had started (the audit sink) is closed again
    handlers = logging.getLogger(AUDIT_LOGGER_NAME).handlers
    assert not [h for h in handlers if getattr(h, "_healthai_audit_handler", False)]


def test_serve_with_the_metrics_port_in_use_prints_one_cannot_start_line(tmp_path: Path) -> None:
    with _busy_port() as sock:
        port = sock.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "healthai.app", "serve", "--dev", "--no-serving", "--port", "0",
             "--store-uri", str(tmp_path / "store"), "--metrics-port", str(port)],
            capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert f"cannot start: cannot bind metrics_port 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr
