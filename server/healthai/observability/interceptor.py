"""One interceptor per server for audit, metrics and (optional) tracing of every RPC.

Place it first (outermost) so that calls refused by authentication or failed by the error mapper are
audited and counted too. Request ids: ``x-request-id`` metadata when it looks like an id
(``[A-Za-z0-9._:-]{1,128}``), else a new UUID; echoed in trailing metadata as ``x-request-id``.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc

from healthai.errors import HealthAIError
from healthai.observability import metrics
from healthai.observability.audit import AuditWriter
from healthai.observability.context import CallRecord, open_record
from healthai.security.handlers import wrap_handler
from healthai.security.identity import current_client

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
UNKNOWN_METHOD = "unknown/unknown"


def request_id_from(metadata: Sequence[tuple[str, Any]] | None) -> str:
    for key, value in metadata or ():
        if key == "x-request-id" and isinstance(value, str) and _REQUEST_ID.match(value):
            return value
    return uuid.uuid4().hex


def _client_cert(context: grpc.aio.ServicerContext) -> str | None:
    """The identity (subject CN / SAN) of the mTLS client certificate, when the caller presented one."""
    identities = context.peer_identities()
    if not identities:
        return None
    return identities[0].decode("utf-8", "replace")


def status_of(context: grpc.aio.ServicerContext, error: BaseException | None) -> grpc.StatusCode:
    """The status the client will see for a call that ended with ``error`` (None = returned)."""
    if error is None or isinstance(error, grpc.aio.AbortError):
        code = context.code()
        if isinstance(code, grpc.StatusCode):
            return code
        return grpc.StatusCode.OK if error is None else grpc.StatusCode.UNKNOWN
    if isinstance(error, HealthAIError):
        return error.code
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN  # what grpc.aio answers for an unhandled exception


class _CallHooks:
    __slots__ = ("interceptor", "metadata", "method", "method_label", "service_label")

    def __init__(self, interceptor: ObservabilityInterceptor, method: str, metadata: Any) -> None:
        self.interceptor = interceptor
        self.method = method.lstrip("/")
        self.metadata = metadata
        self.service_label, _, self.method_label = self.method.partition("/")

    def start(self, context: grpc.aio.ServicerContext) -> tuple[float, CallRecord, Any, str, str | None]:
        # The peer and its certificate are read now, while the call surely exists: finish() may run
        # when grpc has already released the call (reading it then crashed the server).
        peer, cert = context.peer(), _client_cert(context)
        record = CallRecord(method=self.method, request_id=request_id_from(self.metadata))
        open_record(record)
        context.set_trailing_metadata((("x-request-id", record.request_id),))
        if self.interceptor.metrics_enabled:
            started, in_flight = self.interceptor.rpc_children(self.service_label, self.method_label)
            started.inc()
            in_flight.inc()
        tracer = self.interceptor.tracer
        span = tracer.start(self.method, self.metadata, record.request_id) if tracer is not None else None
        return time.perf_counter(), record, span, peer, cert

    def finish(
        self,
        state: tuple[float, CallRecord, Any, str, str | None],
        context: grpc.aio.ServicerContext,
        error: BaseException | None,
    ) -> None:
        started, record, span, peer, cert = state
        latency = time.perf_counter() - started
        code = status_of(context, error)
        identity = current_client()
        caller = identity.client if identity is not None else "anonymous"
        interceptor = self.interceptor
        if interceptor.metrics_enabled:
            interceptor.rpc_children(self.service_label, self.method_label)[1].dec()
            handled, histogram = interceptor.status_children(self.service_label, self.method_label, code)
            handled.inc()
            histogram.observe(latency)
        if span is not None and interceptor.tracer is not None:
            interceptor.tracer.finish(*span, code, caller, error)
        if interceptor.audit is not None:
            interceptor.audit.submit(
                request_id=record.request_id,
                caller=caller,
                key_id=identity.key_id if identity is not None else None,
                client_cert=cert,
                peer=peer,
                rpc=self.method,
                status=code,
                latency_s=latency,
                counts=record.counts,
            )


class ObservabilityInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self,
        *,
        audit: AuditWriter | None,
        metrics_enabled: bool,
        tracer: Any | None = None,
    ) -> None:
        self.audit = audit
        self.metrics_enabled = metrics_enabled
        self.tracer = tracer  # healthai.observability.tracing.RpcTracer, or None when tracing is off
        # Metric children per registered method (and status): labels() costs more than inc().
        self._rpc_children: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._status_children: dict[tuple[str, str, grpc.StatusCode], tuple[Any, Any]] = {}

    def rpc_children(self, service: str, method: str) -> tuple[Any, Any]:
        """(started counter, in-flight gauge) for one RPC."""
        key = (service, method)
        children = self._rpc_children.get(key)
        if children is None:
            children = (metrics.RPC_STARTED.labels(*key), metrics.RPC_IN_FLIGHT.labels(*key))
            self._rpc_children[key] = children
        return children

    def status_children(self, service: str, method: str, code: grpc.StatusCode) -> tuple[Any, Any]:
        """(handled counter, latency histogram) for one RPC and status."""
        key = (service, method, code)
        children = self._status_children.get(key)
        if children is None:
            labels = (service, method, code.name)
            children = (metrics.RPC_HANDLED.labels(*labels), metrics.RPC_LATENCY.labels(*labels))
            self._status_children[key] = children
        return children

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:  # grpc answers UNIMPLEMENTED; the client-chosen name is not a label
            self._unknown_method(handler_call_details.invocation_metadata)
            return None
        return wrap_handler(
            handler,
            _CallHooks(self, handler_call_details.method, handler_call_details.invocation_metadata),
        )

    def _unknown_method(self, metadata: Any) -> None:
        service, method = UNKNOWN_METHOD.split("/")
        if self.metrics_enabled:
            metrics.RPC_STARTED.labels(service, method).inc()
            metrics.RPC_HANDLED.labels(service, method, grpc.StatusCode.UNIMPLEMENTED.name).inc()
        if self.audit is not None:
            self.audit.submit(
                request_id=request_id_from(metadata),
                caller="anonymous",
                key_id=None,
                peer="unknown",
                rpc=UNKNOWN_METHOD,
                status=grpc.StatusCode.UNIMPLEMENTED,
                latency_s=0.0,
                counts={},
            )
