"""The Prometheus endpoint, scraped over HTTP after real RPCs; the servicer-facing helpers."""

from __future__ import annotations

import asyncio
import urllib.request

import grpc
import pytest
from conftest import free_port
from prometheus_client.parser import text_string_to_metric_families

from healthai.observability import (
    ObservabilitySettings,
    count_ingest_records,
    observe_batch_size,
    set_model_loaded,
    set_queue_depth,
    track_queue_depth,
)

from .obs_testkit import serving, unary


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def settled_scrape(url: str, service: str, method: str) -> dict:
    """Scrape once no call of ``service/method`` is in flight.

    ``context.abort`` sends the status before the handler unwinds, so a client can see its error a
    moment before the interceptor records it; yielding to the loop lets that finish.
    """
    key = ("healthai_grpc_server_in_flight", (("grpc_method", method), ("grpc_service", service)))
    for _ in range(100):
        sample = await asyncio.to_thread(scrape, url)
        if sample.get(key) == 0:
            return sample
    raise AssertionError(f"{service}/{method} still in flight: {sample.get(key)}")


def rpc(name: str, method: str, code: str | None = None, **extra: str) -> tuple:
    labels = {"grpc_service": "healthai.v1.Risk", "grpc_method": method, **extra}
    if code is not None:
        labels["grpc_code"] = code
    return (name, tuple(sorted(labels.items())))


def test_counts_and_latency_per_rpc_and_status(port: int) -> None:
    settings = ObservabilitySettings(audit_enabled=False, metrics_port=free_port())

    async def scenario() -> tuple[dict, dict]:
        async with serving(port, settings) as (address, obs):
            assert obs.metrics_server is not None
            before = scrape(obs.metrics_server.url)
            async with grpc.aio.insecure_channel(address) as channel:
                for _ in range(5):
                    assert (await unary(channel, "/healthai.v1.Risk/Score", {}))[0] == grpc.StatusCode.OK
                for _ in range(2):
                    code = (await unary(channel, "/healthai.v1.Risk/Score", {"fail": "invalid"}))[0]
                    assert code == grpc.StatusCode.INVALID_ARGUMENT
            return before, await settled_scrape(obs.metrics_server.url, "healthai.v1.Risk", "Score")

    before, after = asyncio.run(scenario())

    def delta(key: tuple) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    handled = "healthai_grpc_server_handled_total"
    assert delta(rpc(handled, "Score", "OK")) == 5
    assert delta(rpc(handled, "Score", "INVALID_ARGUMENT")) == 2
    assert delta(rpc("healthai_grpc_server_started_total", "Score")) == 7
    assert after[rpc("healthai_grpc_server_in_flight", "Score")] == 0
    latency = "healthai_grpc_server_handling_seconds"
    assert delta(rpc(f"{latency}_count", "Score", "OK")) == 5
    assert delta(rpc(f"{latency}_bucket", "Score", "OK", le="+Inf")) == 5
    assert 0 < delta(rpc(f"{latency}_sum", "Score", "OK")) < 5
    assert delta(rpc(f"{latency}_count", "Score", "INVALID_ARGUMENT")) == 2


def test_servicer_helpers_show_up_in_the_scrape() -> None:
    settings = ObservabilitySettings(audit_enabled=False, metrics_port=0)
    from healthai import observability

    obs = observability.setup(settings)
    try:
        assert obs.metrics_server is not None and obs.metrics_server.port > 0
        observe_batch_size("risk", 3)
        observe_batch_size("risk", 100)
        set_queue_depth("risk-batcher", 7)
        depth = [11]
        track_queue_depth("forecast-batcher", lambda: depth[0])
        set_model_loaded("risk", 2)
        set_model_loaded("risk", 1)
        set_model_loaded("risk", 1, loaded=False)
        count_ingest_records("fhir", "accepted", 40)
        count_ingest_records("fhir", "rejected", 2)
        first = scrape(obs.metrics_server.url)
        depth[0] = 4
        second = scrape(obs.metrics_server.url)
    finally:
        obs.close()
    assert first[("healthai_batch_size_count", (("model", "risk"),))] >= 2
    assert first[("healthai_batch_size_bucket", (("le", "4.0"), ("model", "risk")))] >= 1
    assert first[("healthai_queue_depth", (("queue", "risk-batcher"),))] == 7
    assert (
        first[("healthai_queue_depth", (("queue", "forecast-batcher"),))],
        second[("healthai_queue_depth", (("queue", "forecast-batcher"),))],
    ) == (11, 4)
    assert first[("healthai_model_version_loaded", (("model", "risk"), ("version", "2")))] == 1
    assert ("healthai_model_version_loaded", (("model", "risk"), ("version", "1"))) not in first
    assert first[("healthai_ingest_records_total", (("format", "fhir"), ("outcome", "accepted")))] >= 40
    assert first[("healthai_ingest_records_total", (("format", "fhir"), ("outcome", "rejected")))] >= 2
    assert "process_resident_memory_bytes" in {name for name, _ in first}


def test_free_text_cannot_become_a_label() -> None:
    with pytest.raises(ValueError, match=r"metric label outcome='rejected: Jane Doe' must match"):
        count_ingest_records("fhir", "rejected: Jane Doe")
    with pytest.raises(ValueError, match=r"metric label model='' must match"):
        observe_batch_size("", 1)


def test_metrics_port_none_serves_nothing() -> None:
    from healthai import observability

    obs = observability.setup(ObservabilitySettings(audit_enabled=False, metrics_port=None))
    assert obs.metrics_server is None and len(obs.interceptors) == 1
    obs.close()
