"""Audit log, Prometheus metrics and OpenTelemetry tracing for the gRPC server.

Wiring (in ``healthai.app.main.run``)::

    obs = observability.setup(settings.observability)   # audit logger, /metrics port, tracer
    running = build_server(
        settings, plugins,
        interceptors=[*obs.interceptors, *security.interceptors(settings.security)],
        add_port=lambda server, address: security.add_port(server, address, settings.security))
    ...
    await running.stop()
    obs.close()                                          # flush audit file and spans, close the port

Servicers add counts to the audit line with ``observability.note(records=..., patients=...)`` and
report their internals with ``observe_batch_size``, ``set_queue_depth``/``track_queue_depth``,
``set_model_loaded`` and ``count_ingest_records`` (the model manager and its schedulers report loaded
versions, batch sizes and queue depths this way).
"""

from __future__ import annotations

import logging
from typing import Any

import grpc

from healthai.observability.audit import (
    AUDIT_LOGGER_NAME,
    AuditWriter,
    close_audit_handlers,
    configure_audit_logger,
)
from healthai.observability.context import note, request_id
from healthai.observability.interceptor import ObservabilityInterceptor
from healthai.observability.metrics import (
    REGISTRY,
    MetricsServer,
    count_ingest_records,
    observe_batch_size,
    set_model_loaded,
    set_queue_depth,
    track_queue_depth,
)
from healthai.observability.settings import ObservabilitySettings

log = logging.getLogger(__name__)


class Observability:
    """What ``setup`` started; ``interceptors`` go first in the server's interceptor list."""

    def __init__(self, settings: ObservabilitySettings, *, tracer_provider: Any | None = None) -> None:
        self.settings = settings
        self.metrics_server: MetricsServer | None = None
        self._provider: Any | None = None
        self.audit: AuditWriter | None = None
        if settings.audit_enabled:
            self.audit = AuditWriter(configure_audit_logger(settings.audit_log_file),
                                     max_pending=settings.audit_max_pending)
        tracer = None
        if settings.tracing_enabled:  # the only place OpenTelemetry gets imported
            try:
                from healthai.observability.tracing import RpcTracer, build_tracer_provider

                if tracer_provider is None:
                    tracer_provider, owned = build_tracer_provider(settings)
                    self._provider = tracer_provider if owned else None
            except ImportError as exc:
                raise ValueError(
                    "tracing_enabled=true needs opentelemetry-api and opentelemetry-sdk "
                    f"(and opentelemetry-exporter-otlp-proto-grpc for tracing_exporter='otlp'): {exc}"
                ) from exc
            tracer = RpcTracer(tracer_provider)
        self.interceptors: list[grpc.aio.ServerInterceptor] = [
            ObservabilityInterceptor(
                audit=self.audit, metrics_enabled=settings.metrics_enabled, tracer=tracer
            )
        ]
        if settings.metrics_enabled and settings.metrics_port is not None:
            try:  # a busy port is InvalidInput(field="metrics_port"): stop what started above first
                self.metrics_server = MetricsServer(settings.metrics_host, settings.metrics_port)
            except BaseException:
                self.close()
                raise
            log.info("metrics on %s", self.metrics_server.url)

    def close(self) -> None:
        """Stop the metrics endpoint, flush and close the audit file, flush spans. Idempotent."""
        if self.audit is not None:
            self.audit.close()  # writes what is queued
            self.audit = None
            close_audit_handlers()
        if self.metrics_server is not None:
            self.metrics_server.stop()
            self.metrics_server = None
        if self._provider is not None:
            self._provider.shutdown()
            self._provider = None


def setup(settings: ObservabilitySettings, *, tracer_provider: Any | None = None) -> Observability:
    """Configure the audit logger, start the metrics endpoint and tracer per ``settings``.

    ``tracer_provider`` (tests, or a host that manages OpenTelemetry itself) overrides the exporter
    settings when tracing is enabled.
    """
    return Observability(settings, tracer_provider=tracer_provider)


__all__ = [
    "AUDIT_LOGGER_NAME",
    "REGISTRY",
    "MetricsServer",
    "Observability",
    "ObservabilityInterceptor",
    "ObservabilitySettings",
    "count_ingest_records",
    "note",
    "observe_batch_size",
    "request_id",
    "set_model_loaded",
    "set_queue_depth",
    "setup",
    "track_queue_depth",
]
