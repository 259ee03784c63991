"""Real ``healthai serve`` subprocesses for the client tests — one plain, one requiring mutual TLS and
API keys — serving a tiny model repository with known answers, each with its own store; plus the
smallest Synthea bundle as FHIR input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from healthai import security
from healthai.app.testing import start_server_process, stop_server_process
from tests.conftest import free_port

from .model_repo import write_repository
from .pki import Secure, make_pki


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_repository(tmp_path_factory.mktemp("client-models"))


def _serving_env(model_repository: Path) -> dict[str, str]:
    return {"HEALTHAI_SERVING__MODEL_REPOSITORY": str(model_repository),
            "HEALTHAI_SERVING__RELOAD_POLL_S": "0"}


@pytest.fixture(scope="session")
def server(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Address of a running server (Ingest, Risk, Forecast, Diagnostics) on 127.0.0.1, plaintext."""
    store = tmp_path_factory.mktemp("client-store")
    proc, port = start_server_process(["--dev", "--store-uri", str(store), "--log-level", "WARNING"],
                                      _serving_env(model_repository))
    try:
        yield f"127.0.0.1:{port}"
    finally:
        assert stop_server_process(proc) == 0


@pytest.fixture(scope="session")
def secure_server(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secure]:
    """The same server requiring mutual TLS and API keys, configured through its settings
    (``HEALTHAI_SECURITY__*``). Keys: "all" (ingest, score, forecast) and "score" (score only)."""
    folder = tmp_path_factory.mktemp("client-tls")
    pki = make_pki(folder)
    all_key, all_entry = security.new_key("ehr-test", ["ingest", "score", "forecast"])
    score_key, score_entry = security.new_key("analytics", ["score"])
    (folder / "keys.json").write_text(json.dumps({"keys": [all_entry, score_entry]}))
    env = {**os.environ, **_serving_env(model_repository),
           "HEALTHAI_SECURITY__TLS_CERT_FILE": str(pki["server.crt"]),
           "HEALTHAI_SECURITY__TLS_KEY_FILE": str(pki["server.key"]),
           "HEALTHAI_SECURITY__TLS_CLIENT_CA_FILE": str(pki["ca.crt"]),
           "HEALTHAI_SECURITY__REQUIRE_CLIENT_CERT": "true",
           "HEALTHAI_SECURITY__API_KEYS_FILE": str(folder / "keys.json")}
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "healthai.cli", "serve", "--dev", "--port", str(port),
                             "--store-uri", str(folder / "store"), "--log-level", "WARNING"],
                            env=env, stdout=subprocess.DEVNULL)
    try:
        credentials = grpc.ssl_channel_credentials(pki["ca.crt"].read_bytes(), pki["client.key"].read_bytes(),
                                                   pki["client.crt"].read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
            # waits for the TLS handshake to succeed (no polling); health is open without a key
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=60,
                                                              wait_for_ready=True)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        yield f"127.0.0.1:{port}", pki, {"all": all_key, "score": score_key}
    finally:
        assert stop_server_process(proc) == 0


@pytest.fixture(scope="session")
def fhir_bundle(shared_data: Path) -> Path:
    """The smallest Synthea bundle (fast to send from every client)."""
    return min((shared_data / "fhir").glob("*.json"), key=lambda p: p.stat().st_size)
