"""Assemble the grpc.aio server: plugins, the error-mapping interceptor, health and reflection.

A plugin is anything with ``service_names``, ``add_to_server(server)`` and async ``start``/``stop``
(the Ingest service here; Risk/Forecast/KServe from ``healthai.serving``). Life cycle::

    running = build_server(settings, plugins)   # creates, registers, binds -> running.port
    await running.start()                        # plugins start, server starts, health SERVING
    await running.stop()                         # health NOT_SERVING, drain (grace), plugins stop

Per-service health is readiness: a plugin with ``bind_health(health: ServiceHealth)`` is given, at build
time, the setter of its own services' statuses (``health.set_ready(name, ready, reason)``, callable from
any thread, each transition logged once): Risk/Forecast/KServe are NOT_SERVING while no model of theirs
is loaded, Ingest while the store cannot be written. The whole-server status (service ``""``, what the
k8s probes query) stays SERVING from start to stop: it means the process is up, and missing models must
not get a pod restarted.

Admission control (``settings.max_concurrent_rpcs``) is our own interceptor, not grpc.aio's
``maximum_concurrent_rpcs``: that one also refused health checks (kubelet restarted a busy pod) and
refused calls before any interceptor saw them (no metric, no audit line, no log). Ours exempts
grpc.health.v1 and reflection; a refused call is RESOURCE_EXHAUSTED, counted
(``healthai_grpc_server_handled_total``, ``healthai_grpc_server_shed_total``), audited, and logged
(one WARNING per ``SHED_LOG_INTERVAL_S`` with the number refused).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from healthai.app.interceptors import ErrorMappingInterceptor
from healthai.app.settings import Settings
from healthai.errors import InvalidInput, Overloaded
from healthai.observability.metrics import RPC_SHED
from healthai.security.handlers import aborting_handler, handler_kind, wrap_handler

log = logging.getLogger(__name__)

OVERALL = ""  # the health service name that stands for the whole server
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
# never refused by the concurrency limit: probes and tooling must get an answer from a busy server
UNLIMITED_SERVICES = frozenset({"grpc.health.v1.Health", reflection.SERVICE_NAME, REFLECTION_V1})
SHED_LOG_INTERVAL_S = 10.0


class HealthServicer(health_aio.HealthServicer):
    """grpc.health.v1 that names what it does not know (the stock one answers NOT_FOUND, no message)."""

    async def Check(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
                    ) -> health_pb2.HealthCheckResponse:
        if request.service not in self._server_status:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"service: no health status for {request.service!r} (this server has "
                                f"{', '.join(repr(s) for s in sorted(self._server_status))})")
        return await super().Check(request, context)


class _Slot:
    """wrap_handler hooks: one call in progress for the limit (taken at start, given back at the end)."""

    __slots__ = ("limiter",)

    def __init__(self, limiter: ConcurrencyLimit) -> None:
        self.limiter = limiter

    def start(self, context: grpc.aio.ServicerContext) -> None:
        self.limiter.active += 1

    def finish(self, state: None, context: grpc.aio.ServicerContext, error: BaseException | None) -> None:
        self.limiter.active -= 1


class ConcurrencyLimit(grpc.aio.ServerInterceptor):
    """``max_concurrent_rpcs``: a call that finds ``limit`` calls in progress is refused at once with
    RESOURCE_EXHAUSTED (a client stream is drained first, see ``aborting_handler``). Health and
    reflection are never limited nor counted. The innermost interceptor: it aborts by itself, and the
    observability interceptor outside it counts and audits the refusal like any other status."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0  # calls in progress (the event loop's own counter: no lock needed)
        self.shed = 0  # calls refused since the last WARNING
        self._logged_at = -SHED_LOG_INTERVAL_S
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}  # per method: built once

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        limited = self._handlers.get(method)
        if limited is not None:
            return limited
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        service, _, name = method.lstrip("/").partition("/")
        limited = handler if service in UNLIMITED_SERVICES else self._limited(handler, service, name)
        self._handlers[method] = limited
        return limited

    def _limited(self, handler: grpc.RpcMethodHandler, service: str, name: str) -> grpc.RpcMethodHandler:
        kind, _ = handler_kind(handler)
        _, admitted = handler_kind(wrap_handler(handler, _Slot(self)))  # coroutines, all four shapes
        error = Overloaded(f"server busy: its limit of {self.limit} calls in progress (max_concurrent_rpcs) "
                           "is reached; retry with backoff")
        _, refused = handler_kind(aborting_handler(handler, error))
        shed_counter = RPC_SHED.labels(service, name)

        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if self.active >= self.limit:  # checked and taken in one step of the loop: no overshoot
                shed_counter.inc()
                self._note_shed()
                return await refused(request, context)
            return await admitted(request, context)

        factory = {"unary_unary": grpc.unary_unary_rpc_method_handler,
                   "unary_stream": grpc.unary_stream_rpc_method_handler,
                   "stream_unary": grpc.stream_unary_rpc_method_handler,
                   "stream_stream": grpc.stream_stream_rpc_method_handler}[kind]
        return factory(behavior, request_deserializer=handler.request_deserializer,
                       response_serializer=handler.response_serializer)

    def _note_shed(self) -> None:
        self.shed += 1
        now = time.monotonic()
        if now - self._logged_at >= SHED_LOG_INTERVAL_S:
            log.warning("max_concurrent_rpcs (%d) reached: %d call(s) refused RESOURCE_EXHAUSTED since the "
                        "last report (at most one report per %.0f s)", self.limit, self.shed,
                        SHED_LOG_INTERVAL_S)
            self._logged_at, self.shed = now, 0


class ServiceHealth:
    """The plugins' side of the health servicer: readiness of their own services (never ``""``).

    ``set_ready`` records the state at once; the health servicer shows it while the server runs (from
    ``RunningServer.start``, which publishes what was recorded before, to ``stop``, which turns every
    service NOT_SERVING). Thread-safe: a call off the event loop is handed to it."""

    def __init__(self, health: health_aio.HealthServicer) -> None:
        self._health = health
        self._ready: dict[str, bool] = {}
        self._names: set[str] = set()  # the services plugins may set (registered by build_server)
        self._live = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dirty: set[str] = set()
        self._pusher: asyncio.Task[None] | None = None

    def add_services(self, names: Sequence[str]) -> None:
        self._names.update(names)

    def ready(self, name: str) -> bool:
        return self._ready.get(name, True)

    def set_ready(self, name: str, ready: bool, reason: str = "") -> None:
        """SERVING (``ready``) or NOT_SERVING for ``name``, a service of the calling plugin; ``reason``
        (why not ready, or what made it ready) goes to the log line of the transition."""
        if name not in self._names:
            raise ValueError(f"health: {name!r} is not a service of this server's plugins")
        if self._loop is not None and _running_loop() is not self._loop:  # e.g. a worker thread
            self._loop.call_soon_threadsafe(self.set_ready, name, ready, reason)
            return
        if self.ready(name) == ready:
            return
        self._ready[name] = ready
        # INFO: the cause (a refused model, a store write error) is logged at WARNING/ERROR by its owner
        if ready:
            log.info("health: %s SERVING again%s", name, f" ({reason})" if reason else "")
        else:
            log.info("health: %s NOT_SERVING: %s", name, reason or "not ready")
        if self._live:
            self._dirty.add(name)
            if self._pusher is None or self._pusher.done():
                self._pusher = asyncio.get_running_loop().create_task(self._push())

    async def _push(self) -> None:
        while self._dirty and self._live:
            name = self._dirty.pop()
            await self._health.set(name, SERVING if self.ready(name) else NOT_SERVING)

    async def publish(self, names: Sequence[str]) -> None:
        """At start: every service as recorded (SERVING unless a plugin said otherwise)."""
        self._loop = asyncio.get_running_loop()
        self._live = True
        for name in names:
            await self._health.set(name, SERVING if self.ready(name) else NOT_SERVING)

    def retire(self) -> None:
        """At stop: no plugin update reaches the health servicer any more."""
        self._live = False
        self._loop = None  # a late call from a worker thread is only recorded (the loop may be closing)
        self._dirty.clear()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


@runtime_checkable
class ServicePlugin(Protocol):
    service_names: Sequence[str]  # full gRPC service names, e.g. "healthai.v1.Ingest"

    def add_to_server(self, server: grpc.aio.Server) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: health_aio.HealthServicer
    plugins: list[ServicePlugin]
    settings: Settings
    health_server: grpc.aio.Server | None = None  # plaintext health-only port (settings.health_port)
    health_port: int | None = None  # the port it bound (settings.health_port 0 picks a free one)
    limit: ConcurrencyLimit | None = None  # settings.max_concurrent_rpcs, when set
    service_health: ServiceHealth | None = None  # what plugins report (``bind_health``)
    _started: list[ServicePlugin] = field(default_factory=list)

    @property
    def service_names(self) -> list[str]:
        return [name for p in self.plugins for name in p.service_names]

    async def start(self) -> None:
        """Start plugins (in order), then the server; then mark the whole server SERVING and every service
        SERVING unless its plugin reported it not ready (``ServiceHealth``)."""
        try:
            for plugin in self.plugins:
                await plugin.start()
                self._started.append(plugin)
        except BaseException:
            await self._stop_plugins()
            await self.server.stop(None)
            raise
        await self.server.start()
        if self.health_server is not None:
            await self.health_server.start()
        if self.service_health is None:
            self.service_health = ServiceHealth(self.health)
        await self.service_health.publish(self.service_names)
        await self.health.set(OVERALL, SERVING)
        sec = self.settings.security
        health_port = self.health_port
        log.info("serving %s on %s:%d; transport: %s; auth: %s%s", ", ".join(self.service_names),
                 self.settings.host, self.port, sec.tls_mode, sec.auth_mode,
                 f"; plaintext health-only port {health_port}" if self.health_server and health_port else "")

    async def stop(self, grace: float | None = None) -> None:
        """Health NOT_SERVING, stop accepting calls and drain in-flight ones, then stop plugins."""
        grace = self.settings.shutdown_grace_s if grace is None else grace
        if self.service_health is not None:
            self.service_health.retire()
        for name in [*self.service_names, OVERALL]:
            await self.health.set(name, NOT_SERVING)
        log.info("shutting down: draining in-flight calls (grace %.1fs)", grace)
        await self.server.stop(grace)
        if self.health_server is not None:
            await self.health_server.stop(None)
        await self._stop_plugins()
        log.info("stopped")

    async def _stop_plugins(self) -> None:
        while self._started:
            plugin = self._started.pop()
            try:
                await plugin.stop()
            except Exception:
                log.exception("plugin %s failed to stop cleanly", type(plugin).__name__)


def build_server(settings: Settings, plugins: Sequence[ServicePlugin], *,
                 interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
                 add_port: Callable[[grpc.aio.Server, str], int] | None = None) -> RunningServer:
    """Create the server with the interceptor, plugins, health and reflection; bind host:port.

    ``interceptors`` (e.g. metrics, authentication) run before the error-mapping one, which is last
    of those so it sees every domain error raised by a handler; only ``ConcurrencyLimit``
    (``max_concurrent_rpcs``, aborting by itself) runs inside it. ``add_port(server, address) -> port``
    replaces the plain-text bind (e.g. for TLS). Port 0 picks a free port; ``RunningServer.port`` is
    the bound one. Must run inside an event loop.
    """
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    if settings.max_pending_rpcs is not None:  # gRPC core refuses calls beyond its pending queue
        options += [("grpc.server.max_pending_requests", settings.max_pending_rpcs),
                    ("grpc.server.max_pending_requests_hard_limit", settings.max_pending_rpcs)]
    limit = ConcurrencyLimit(settings.max_concurrent_rpcs) if settings.max_concurrent_rpcs else None
    innermost = [limit] if limit is not None else []
    server = grpc.aio.server(interceptors=[*interceptors, ErrorMappingInterceptor(), *innermost],
                             options=options)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    service_health = ServiceHealth(health)
    names: list[str] = []
    for plugin in plugins:
        plugin.add_to_server(server)
        names.extend(plugin.service_names)
        service_health.add_services(plugin.service_names)
        bind = getattr(plugin, "bind_health", None)
        if bind is not None:  # optional: a plugin that reports its services' readiness
            bind(service_health)
    _add_reflection([*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name], server)
    address = f"{settings.host}:{settings.port}"
    try:
        port = add_port(server, address) if add_port else server.add_insecure_port(address)
    except RuntimeError as e:
        raise InvalidInput(f"cannot bind {address}: {e}", field="port") from e
    if port == 0:
        raise InvalidInput(f"cannot bind {address}", field="port")
    health_server, health_port = _health_only_server(settings, health)
    return RunningServer(server=server, port=port, health=health, plugins=list(plugins), settings=settings,
                         health_server=health_server, health_port=health_port, limit=limit,
                         service_health=service_health)


def _add_reflection(names: list[str], server: grpc.aio.Server) -> None:
    """Server reflection as ``grpc.reflection.v1alpha`` and as ``grpc.reflection.v1`` (what newer grpcurl
    and Postman ask first). grpcio-reflection ships only v1alpha; v1's messages are the same on the
    wire (same fields, same numbers), so its one method is the same servicer under the v1 name. Only
    v1alpha is listed: its descriptors are the ones the pool holds."""
    servicer = reflection.aio.ReflectionServicer([*names, reflection.SERVICE_NAME])
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(REFLECTION_V1, {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString)}),))


def _health_only_server(settings: Settings, health: health_aio.HealthServicer
                        ) -> tuple[grpc.aio.Server | None, int | None]:
    """A plaintext server with only the health service, for probes that cannot speak TLS (kubelet), and
    the port it bound."""
    if settings.health_port is None:
        return None, None
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    address = f"{settings.host}:{settings.health_port}"
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as e:
        raise InvalidInput(f"cannot bind health_port {address}: {e}", field="health_port") from e
    if port == 0:
        raise InvalidInput(f"cannot bind health_port {address}", field="health_port")
    return server, port
