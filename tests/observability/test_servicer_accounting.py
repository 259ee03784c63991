"""The servicers feed the audit line's counts and the Prometheus counters (real assembled server)."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import grpc
from conftest import free_port

from healthai import observability
from healthai.app.server import build_server
from healthai.app.settings import Settings
from healthai.ingest.plugin import IngestPlugin
from healthai.observability import ObservabilitySettings
from healthai.v1 import ingest_pb2, ingest_pb2_grpc


async def _ingest_one_bundle(bundle: bytes, settings: Settings, obs_settings: ObservabilitySettings) -> str:
    obs = observability.setup(obs_settings)
    running = build_server(settings, [IngestPlugin(settings)], interceptors=obs.interceptors)
    await running.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = ingest_pb2_grpc.IngestStub(channel)
            request = ingest_pb2.IngestRequest(source="hospital-a", fhir=ingest_pb2.FhirPayload(json=bundle))
            response = await stub.IngestBatch(request, timeout=60)
            assert response.accepted > 0
        assert obs.metrics_server is not None
        url = obs.metrics_server.url
        return await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read().decode())
    finally:
        await running.stop(0)
        obs.close()


def test_ingest_counts_reach_audit_line_and_metrics(shared_data: Path, tmp_path: Path) -> None:
    bundle = sorted((shared_data / "fhir").glob("Andy_*.json"))[0].read_bytes()
    audit_file = tmp_path / "audit.log"
    settings = Settings(port=free_port(), store_uri=str(tmp_path / "store"), dev_mode=True,
                        serving={"enabled": False})
    metrics = asyncio.run(_ingest_one_bundle(
        bundle, settings, ObservabilitySettings(audit_log_file=audit_file, metrics_port=0)))

    lines = [json.loads(line) for line in audit_file.read_text().splitlines()]
    ingest_lines = [line for line in lines if line["rpc"].endswith("Ingest/IngestBatch")]
    assert len(ingest_lines) == 1
    counts = ingest_lines[0]["counts"]
    entries = len(json.loads(bundle)["entry"])
    assert counts["records"] == entries
    assert counts["accepted"] + counts["rejected"] == entries
    assert counts["patients"] == 1
    assert counts["stored"] > 0
    accepted_line = [m for m in metrics.splitlines()
                     if m.startswith("healthai_ingest_records_total{") and 'format="fhir"' in m
                     and 'outcome="accepted"' in m]
    assert accepted_line and float(accepted_line[0].rsplit(" ", 1)[1]) > 0
