"""Observability settings (audit log, Prometheus endpoint, tracing) — nested as ``Settings.observability``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ObservabilitySettings(BaseModel):
    """Audit and metrics are on by default; tracing is off (and then costs nothing).

    ``metrics_port``: the Prometheus ``/metrics`` HTTP port on ``metrics_host``. None (the default,
    so that several servers on one host never collide) collects metrics but serves no endpoint;
    deployments set it, e.g. ``HEALTHAI_OBSERVABILITY__METRICS_PORT=9464``; 0 picks a free port.
    ``tracing_exporter``: ``otlp`` sends spans to an OpenTelemetry collector at
    ``tracing_otlp_endpoint`` (gRPC); ``console`` prints them (debugging); ``global`` uses whatever
    tracer provider the host process installed (e.g. ``opentelemetry-instrument``).
    """

    model_config = ConfigDict(extra="forbid")  # a misspelt key is refused, never ignored

    audit_enabled: bool = True
    audit_log_file: Path | None = None  # None → stdout (application logs go to stderr)
    audit_max_pending: int = Field(default=10_000, ge=1)  # queued lines beyond this are dropped, counted
    metrics_enabled: bool = True
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    tracing_enabled: bool = False
    tracing_exporter: Literal["otlp", "console", "global"] = "otlp"
    tracing_otlp_endpoint: str = "http://127.0.0.1:4317"
    tracing_otlp_insecure: bool = True
    tracing_service_name: str = "healthai"
