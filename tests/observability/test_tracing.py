"""OpenTelemetry tracing: off by default and then never touched; on → one SERVER span per RPC."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from concurrent import futures

import grpc
import pytest
from conftest import free_port

from healthai.observability import ObservabilitySettings

from .obs_testkit import serving, unary

pytest.importorskip("opentelemetry.sdk", reason="opentelemetry-sdk not installed (requirements-runtime.txt)")

from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def _span_probe(provider: TracerProvider | None) -> grpc.GenericRpcHandler:
    """Answers with the trace id and span id current inside the servicer, after a child span."""

    async def probe(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        tracer = (provider or trace.get_tracer_provider()).get_tracer("servicer")
        with tracer.start_as_current_span("child"):
            pass
        span_context = trace.get_current_span().get_span_context()
        return f"{span_context.trace_id:032x}/{span_context.span_id:016x}".encode()

    return grpc.method_handlers_generic_handler(
        "healthai.v1.Forecast", {"Forecast": grpc.unary_unary_rpc_method_handler(probe)}
    )


def _provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _calls(port: int, settings: ObservabilitySettings, provider: TracerProvider | None) -> list:
    async def scenario() -> list:
        async with (
            serving(port, settings, tracer_provider=provider, extra_handlers=(_span_probe(provider),)) as (
                address,
                _,
            ),
            grpc.aio.insecure_channel(address) as channel,
        ):
            return [
                await unary(channel, "/healthai.v1.Risk/Score", {}, (("x-request-id", "req-7"),)),
                await unary(channel, "/healthai.v1.Risk/Score", {"fail": "crash"}),
                await unary(channel, "/healthai.v1.Forecast/Forecast", {}, (("traceparent", TRACEPARENT),)),
            ]

    return asyncio.run(scenario())


def test_tracing_off_records_nothing(port: int) -> None:
    provider, exporter = _provider()
    _calls(port, ObservabilitySettings(audit_enabled=False, metrics_port=None), provider)
    (only,) = exporter.get_finished_spans()  # the servicer's own span, with no RPC span above it
    assert only.name == "child" and only.parent is None


def test_tracing_off_never_imports_opentelemetry() -> None:
    probe = (
        "import asyncio, sys, grpc\n"
        "from healthai import observability\n"
        "settings = observability.ObservabilitySettings(audit_enabled=False, metrics_port=None)\n"
        "obs = observability.setup(settings)\n"
        "async def main():\n"
        "    server = grpc.aio.server(interceptors=obs.interceptors)\n"
        "    port = server.add_insecure_port('127.0.0.1:0')\n"
        "    await server.start()\n"
        "    async with grpc.aio.insecure_channel(f'127.0.0.1:{port}') as ch:\n"
        "        try:\n"
        "            await ch.unary_unary('/x.Y/Z')(b'', timeout=5)\n"
        "        except grpc.aio.AioRpcError as exc:\n"
        "            assert exc.code() == grpc.StatusCode.UNIMPLEMENTED\n"
        "    await server.stop(0)\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_tracing_on_records_a_server_span_per_rpc(port: int) -> None:
    provider, exporter = _provider()
    settings = ObservabilitySettings(audit_enabled=False, metrics_port=None, tracing_enabled=True)
    ok, crash, probe = _calls(port, settings, provider)
    assert ok[0] == grpc.StatusCode.OK and crash[0] == grpc.StatusCode.UNKNOWN
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert set(spans) == {"healthai.v1.Risk/Score", "healthai.v1.Forecast/Forecast", "child"}
    rpc_spans = [s for s in exporter.get_finished_spans() if s.name == "healthai.v1.Risk/Score"]
    first, failed = rpc_spans
    assert first.kind == trace.SpanKind.SERVER
    assert first.attributes["rpc.system"] == "grpc" and first.attributes["rpc.method"] == "Score"
    assert (
        first.attributes["healthai.request_id"] == "req-7" and first.attributes["rpc.grpc.status_code"] == 0
    )
    assert first.status.status_code == trace.StatusCode.UNSET
    assert failed.attributes["rpc.grpc.status_code"] == grpc.StatusCode.UNKNOWN.value[0]
    assert failed.status.status_code == trace.StatusCode.ERROR
    assert failed.attributes["error.type"] == "RuntimeError"
    assert "crashed" not in str(failed.to_json())  # exception messages stay out of spans
    forecast, child = spans["healthai.v1.Forecast/Forecast"], spans["child"]
    assert f"{forecast.context.trace_id:032x}" == TRACE_ID  # continues the caller's trace
    assert probe[1] == f"{TRACE_ID}/{forecast.context.span_id:016x}"  # current inside the servicer
    assert child.parent is not None and child.parent.span_id == forecast.context.span_id


class _Collector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.names: list[str] = []
        self.received = threading.Event()

    def Export(self, request, context):
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                self.names += [span.name for span in scope_spans.spans]
        self.received.set()
        return trace_service_pb2.ExportTraceServiceResponse()


def test_otlp_exporter_delivers_spans_to_a_collector(port: int) -> None:
    collector = _Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    collector_port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
    server.start()
    try:
        settings = ObservabilitySettings(
            audit_enabled=False,
            metrics_port=None,
            tracing_enabled=True,
            tracing_exporter="otlp",
            tracing_otlp_endpoint=f"http://127.0.0.1:{collector_port}",
        )
        _calls(port, settings, None)  # serving() closes Observability → the provider flushes
        assert collector.received.wait(10)
    finally:
        server.stop(0)
    assert collector.names.count("healthai.v1.Risk/Score") == 2
    assert "healthai.v1.Forecast/Forecast" in collector.names
