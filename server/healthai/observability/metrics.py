"""Prometheus metrics: per-RPC counts and latency (recorded by the interceptor) and helpers the
servicers call for batch sizes, queue depth, loaded model versions and ingest outcomes.

All metrics live in ``REGISTRY`` (ours, not prometheus_client's global one) and are served by
``MetricsServer`` on their own HTTP port (a port it cannot bind is ``InvalidInput`` naming
``metrics_port``, like the gRPC port: ``healthai serve`` prints ``cannot start: ...``). Label values
are checked against a strict pattern, so free text — and with it any patient data — cannot become a
label.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

from healthai.errors import InvalidInput

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

_RPC = ("grpc_service", "grpc_method")
LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)

RPC_STARTED = Counter("healthai_grpc_server_started", "RPCs started on the server.", _RPC, registry=REGISTRY)
RPC_HANDLED = Counter(
    "healthai_grpc_server_handled", "RPCs completed, by status code.", (*_RPC, "grpc_code"), registry=REGISTRY
)
RPC_LATENCY = Histogram(
    "healthai_grpc_server_handling_seconds",
    "Time from the RPC reaching the servicer to its status, by status code.",
    (*_RPC, "grpc_code"),
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
RPC_SHED = Counter(
    "healthai_grpc_server_shed",
    "RPCs refused RESOURCE_EXHAUSTED by the max_concurrent_rpcs limit (also in handled_total).",
    _RPC, registry=REGISTRY)
RPC_IN_FLIGHT = Gauge("healthai_grpc_server_in_flight", "RPCs being handled now.", _RPC, registry=REGISTRY)
BATCH_SIZE = Histogram(
    "healthai_batch_size",
    "Items per executed model batch.",
    ("model",),
    buckets=SIZE_BUCKETS,
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge("healthai_queue_depth", "Items waiting in a queue.", ("queue",), registry=REGISTRY)
AUDIT_DROPPED = Counter(
    "healthai_audit_dropped_lines", "Audit lines dropped because the audit writer's queue was full.",
    registry=REGISTRY)
MODEL_VERSION_LOADED = Gauge(
    "healthai_model_version_loaded",
    "1 for each loaded model version.",
    ("model", "version"),
    registry=REGISTRY,
)
INGEST_RECORDS = Counter(
    "healthai_ingest_records",
    "Ingested records by input format and outcome.",
    ("format", "outcome"),
    registry=REGISTRY,
)

_LABEL = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")


def _label(name: str, value: str) -> str:
    if not isinstance(value, str) or not _LABEL.match(value):
        raise ValueError(f"metric label {name}={value!r} must match {_LABEL.pattern}")
    return value


def observe_batch_size(model: str, size: int) -> None:
    """One executed batch of ``size`` items for ``model``."""
    BATCH_SIZE.labels(_label("model", model)).observe(size)


def batch_size_observer(model: str) -> Callable[[float], None]:
    """``observe_batch_size`` for one model with its label looked up once (a scheduler's hot path)."""
    return BATCH_SIZE.labels(_label("model", model)).observe


def set_queue_depth(queue: str, depth: int) -> None:
    QUEUE_DEPTH.labels(_label("queue", queue)).set(depth)


_TRACKED: dict[str, Callable[[], float]] = {}  # queue -> the function its series reads now


def track_queue_depth(queue: str, depth: Callable[[], float]) -> None:
    """Read ``depth()`` at every scrape instead of pushing updates (e.g. ``lambda: q.qsize()``)."""
    QUEUE_DEPTH.labels(_label("queue", queue)).set_function(depth)
    _TRACKED[queue] = depth


def untrack_queue_depth(queue: str, depth: Callable[[], float]) -> None:
    """Drop the series of ``queue`` if ``depth`` still feeds it (a replacement that tracks the same
    queue name meanwhile keeps its series)."""
    if _TRACKED.get(queue) is depth:
        del _TRACKED[queue]
        QUEUE_DEPTH.remove(queue)


def set_model_loaded(model: str, version: str | int, loaded: bool = True) -> None:
    """Mark a model version loaded (1) or drop its series when unloaded."""
    labels = (_label("model", model), _label("version", str(version)))
    if loaded:
        MODEL_VERSION_LOADED.labels(*labels).set(1)
    else:
        MODEL_VERSION_LOADED.remove(*labels)  # no-op when absent


def count_ingest_records(fmt: str, outcome: str, count: int = 1) -> None:
    """``count`` records of input format ``fmt`` (fhir/flat/arrow) ended as ``outcome``."""
    if count:
        INGEST_RECORDS.labels(_label("format", fmt), _label("outcome", outcome)).inc(count)


class MetricsServer:
    """The ``/metrics`` HTTP endpoint in a daemon thread; ``stop()`` closes the socket."""

    def __init__(self, host: str, port: int) -> None:
        self._httpd: WSGIServer
        self._thread: threading.Thread
        try:
            self._httpd, self._thread = start_http_server(port, addr=host, registry=REGISTRY)
        except OSError as e:  # port in use, address not on this host: a start-up error naming the setting
            raise InvalidInput(f"cannot bind metrics_port {host}:{port}: {e.strerror or e}",
                               field="metrics_port") from e
        self.host = host
        self.port = int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
