"""OpenTelemetry spans per RPC — only imported when ``tracing_enabled``; off means no OTel code runs.

Each RPC gets a SERVER span named ``pkg.Service/Method``, continuing the caller's W3C
``traceparent`` when sent, with ``rpc.*`` attributes, the request id and the calling client's name.
The span is current while the servicer runs, so its own spans nest below. Exception messages are not
recorded (they could quote input); only the status code and the exception type are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from healthai.observability.settings import ObservabilitySettings

# Server-side codes that mean the server failed (OpenTelemetry semantic conventions for gRPC).
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


def build_tracer_provider(settings: ObservabilitySettings) -> tuple[trace.TracerProvider, bool]:
    """(provider, owned): ``owned`` means we made it and must shut it down (flushing spans)."""
    if settings.tracing_exporter == "global":
        return trace.get_tracer_provider(), False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": settings.tracing_service_name}))
    exporter: SpanExporter
    if settings.tracing_exporter == "console":
        exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(
            endpoint=settings.tracing_otlp_endpoint, insecure=settings.tracing_otlp_insecure
        )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(provider)  # servicers' own spans (trace.get_tracer) join ours
    return provider, True


class RpcTracer:
    def __init__(self, provider: trace.TracerProvider) -> None:
        self._tracer = provider.get_tracer("healthai.observability")

    def start(
        self, method: str, metadata: Sequence[tuple[str, Any]] | None, request_id: str
    ) -> tuple[trace.Span, object]:
        """Start the span and make it current; returns (span, token for ``finish``)."""
        carrier = {key: value for key, value in metadata or () if isinstance(value, str)}
        parent = propagate.extract(carrier)
        service, _, name = method.lstrip("/").partition("/")
        span = self._tracer.start_span(
            f"{service}/{name}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "rpc.system": "grpc",
                "rpc.service": service,
                "rpc.method": name,
                "healthai.request_id": request_id,
            },
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        return span, token

    def finish(
        self,
        span: trace.Span,
        token: object,
        code: grpc.StatusCode,
        caller: str,
        error: BaseException | None,
    ) -> None:
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        span.set_attribute("healthai.client", caller)
        if error is not None:
            span.set_attribute("error.type", type(error).__name__)
        if code in _SERVER_ERRORS:
            span.set_status(Status(StatusCode.ERROR, code.name))
        span.end()
        otel_context.detach(token)  # type: ignore[arg-type]
