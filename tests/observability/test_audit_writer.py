"""The audit writer keeps the event loop free: a bounded queue and one writer thread, lines dropped
(and counted) rather than blocking when the sink stalls; the mTLS client identity in the line."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from healthai import observability, security
from healthai.observability import AUDIT_LOGGER_NAME, REGISTRY, ObservabilitySettings
from healthai.observability.audit import AuditWriter
from healthai.security import SecuritySettings
from tests.security.certs import CertificateAuthority


class _StalledSink(logging.Handler):
    """A sink that blocks until released (a full disk, a stuck NFS mount), noting its thread."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.lines: list[str] = []
        self.threads: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        self.threads.add(threading.current_thread().name)
        self.entered.set()
        self.release.wait(30)
        self.lines.append(record.getMessage())


def _fields(n: int) -> dict:
    return {"request_id": f"r{n}", "caller": "anonymous", "key_id": None, "peer": "ipv4:127.0.0.1:1",
            "rpc": "healthai.v1.Risk/Score", "status": grpc.StatusCode.OK, "latency_s": 0.001,
            "counts": {"patients": n}}


def _dropped_total() -> float:
    return REGISTRY.get_sample_value("healthai_audit_dropped_lines_total") or 0.0


def test_a_stalled_sink_never_blocks_callers_and_drops_are_counted() -> None:
    logger = logging.getLogger("healthai.audit.test-stalled")
    logger.propagate = False
    sink = _StalledSink()
    logger.addHandler(sink)
    writer = AuditWriter(logger, max_pending=50)
    before = _dropped_total()
    try:
        writer.submit(**_fields(0))
        assert sink.entered.wait(10), "the writer never reached the sink"  # now stuck inside it
        started = time.perf_counter()
        for n in range(1, 501):
            writer.submit(**_fields(n))
        elapsed = time.perf_counter() - started
        assert elapsed < 1.0, f"submitting 500 lines to a stalled sink took {elapsed:.2f} s"
        # One line is stuck in the sink; max_pending wait; the rest were dropped, and counted.
        assert writer.dropped == 500 - 50
        assert _dropped_total() - before == writer.dropped
    finally:
        sink.release.set()
        writer.close()
        logger.removeHandler(sink)
    assert len(sink.lines) == 501 - writer.dropped
    assert sink.threads == {"healthai-audit"}, "lines are formatted and written off the caller's thread"
    first = json.loads(sink.lines[0])
    assert first["request_id"] == "r0" and first["counts"] == {"patients": 0} and first["ts"].endswith("Z")


def test_close_writes_everything_queued(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    obs = observability.setup(ObservabilitySettings(audit_log_file=path, metrics_port=None))
    assert obs.audit is not None
    for n in range(1000):
        obs.audit.submit(**_fields(n))
    obs.close()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["request_id"] for x in lines] == [f"r{n}" for n in range(1000)]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | object]:
    folder = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority("healthai test CA")
    (folder / "ca.crt").write_bytes(ca.cert_pem)
    cert, key = ca.issue("healthai server", server=True).write(folder, "server")
    return {"ca": ca, "ca_file": folder / "ca.crt", "cert": cert, "key": key,
            "client": ca.issue("ehr-north-gateway", server=False)}


def test_mtls_client_identity_is_in_the_audit_line(pki: dict, tmp_path: Path, port: int) -> None:
    audit_file = tmp_path / "audit.log"
    sec = SecuritySettings(tls_cert_file=pki["cert"], tls_key_file=pki["key"],
                           tls_client_ca_file=pki["ca_file"], require_client_cert=True)

    async def scenario() -> None:
        obs = observability.setup(ObservabilitySettings(audit_log_file=audit_file, metrics_port=None))
        server = grpc.aio.server(interceptors=[*obs.interceptors, *security.interceptors(sec)])
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        bound = security.add_port(server, f"127.0.0.1:{port}", sec)
        await server.start()
        client = pki["client"]
        creds = grpc.ssl_channel_credentials(root_certificates=pki["ca"].cert_pem,
                                             private_key=client.key, certificate_chain=client.cert)
        try:
            async with grpc.aio.secure_channel(f"127.0.0.1:{bound}", creds) as channel:
                await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        finally:
            await server.stop(0)
            obs.close()

    asyncio.run(scenario())
    (line,) = [json.loads(x) for x in audit_file.read_text().splitlines()]
    assert line["rpc"] == "grpc.health.v1.Health/Check" and line["status"] == "OK"
    assert "ehr-north-gateway" in line["client_cert"]


def test_plaintext_calls_have_no_client_cert(tmp_path: Path, port: int) -> None:
    from .obs_testkit import read_audit, serving, unary

    audit_file = tmp_path / "audit.log"

    async def scenario() -> None:
        obs = ObservabilitySettings(audit_log_file=audit_file, metrics_port=None)
        async with serving(port, obs) as (address, _), grpc.aio.insecure_channel(address) as channel:
            await unary(channel, "/healthai.v1.Risk/Score", {})

    asyncio.run(scenario())
    (line,) = read_audit(audit_file)
    assert line["client_cert"] is None and line["caller"] == "anonymous"
    assert logging.getLogger(AUDIT_LOGGER_NAME).propagate is False
