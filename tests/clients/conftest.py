"""One real ``healthai serve`` subprocess for the client tests (tiny model repository with known
answers, its own store), plus the smallest Synthea bundle as FHIR input."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from healthai import security
from healthai.app.main import build_plugins
from healthai.app.server import RunningServer, build_server
from healthai.app.settings import Settings
from healthai.app.testing import start_server_process, stop_server_process
from healthai.serving.settings import ServingSettings

from .model_repo import write_repository
from .pki import Secure, make_pki


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_repository(tmp_path_factory.mktemp("client-models"))


@pytest.fixture(scope="session")
def server(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Address of a running server (Ingest, Risk, Forecast, Diagnostics) on 127.0.0.1."""
    store = tmp_path_factory.mktemp("client-store")
    env = {"HEALTHAI_SERVING__MODEL_REPOSITORY": str(model_repository),
           "HEALTHAI_SERVING__RELOAD_POLL_S": "0"}
    proc, port = start_server_process(["--dev", "--store-uri", str(store), "--log-level", "WARNING"], env)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        assert stop_server_process(proc) == 0


@pytest.fixture(scope="session")
def fhir_bundle(shared_data: Path) -> Path:
    """The smallest Synthea bundle (fast to send from every client)."""
    return min((shared_data / "fhir").glob("*.json"), key=lambda p: p.stat().st_size)


@pytest.fixture(scope="session")
def secure_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secure]:
    """An Ingest-only server on 127.0.0.1 requiring mutual TLS and API keys (the project's security
    module: TLS port + auth interceptor); keys: "ingest" (scope ingest), "score" (scope score)."""
    folder = tmp_path_factory.mktemp("client-tls")
    pki = make_pki(folder)
    ingest_key, ingest_entry = security.new_key("ehr-test", ["ingest"])
    score_key, score_entry = security.new_key("analytics", ["score"])
    (folder / "keys.json").write_text(json.dumps({"keys": [ingest_entry, score_entry]}))
    sec = security.SecuritySettings(tls_cert_file=pki["server.crt"], tls_key_file=pki["server.key"],
                                    tls_client_ca_file=pki["ca.crt"], require_client_cert=True,
                                    api_keys_file=folder / "keys.json")
    settings = Settings(host="127.0.0.1", port=0, dev_mode=True, store_uri=str(folder / "store"),
                        log_level="WARNING", serving=ServingSettings(enabled=False))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> RunningServer:
        running = build_server(settings, build_plugins(settings), interceptors=security.interceptors(sec),
                               add_port=lambda server, address: security.add_port(server, address, sec))
        await running.start()
        return running

    running = asyncio.run_coroutine_threadsafe(start(), loop).result(60)
    try:
        yield f"127.0.0.1:{running.port}", pki, {"ingest": ingest_key, "score": score_key}
    finally:
        asyncio.run_coroutine_threadsafe(running.stop(grace=0.5), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
