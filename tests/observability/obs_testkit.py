"""A real grpc.aio server with observability (+ optional auth) in front of stand-in servicers.

Requests are JSON: ``{"patients": [...], "fail": "invalid" | "crash" | "hang" | null}``. The stand-ins note
counts for the audit line and fail on request the way real servicers do (domain error → status via
``context.abort``), so every outcome path of the interceptors is exercised.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2_grpc

from healthai import observability, security
from healthai.errors import HealthAIError, InvalidInput
from healthai.observability import ObservabilitySettings
from healthai.security import SecuritySettings


def _handle(request: bytes) -> bytes:
    body = json.loads(request)
    patients = body.get("patients", [])
    observability.note(records=len(patients), patients=len({p.get("id") for p in patients}))
    if body.get("fail") == "invalid":
        raise InvalidInput("patients[0].birth_date is not a valid date", field="patients[0].birth_date")
    if body.get("fail") == "crash":
        raise RuntimeError("stand-in servicer crashed")
    identity = security.current_client()
    return json.dumps({"ok": len(patients), "client": identity.client if identity else None}).encode()


async def _unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    if json.loads(request).get("fail") == "hang":  # until the client's deadline cancels the call
        await asyncio.Event().wait()
    try:
        return _handle(request)
    except HealthAIError as exc:
        await context.abort(exc.code, exc.message)
        raise AssertionError("unreachable") from exc


async def _bidi(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    async for request in requests:
        try:
            yield _handle(request)
        except HealthAIError as exc:
            await context.abort(exc.code, exc.message)


HANDLERS = (
    grpc.method_handlers_generic_handler(
        "healthai.v1.Ingest",
        {
            "Ingest": grpc.unary_unary_rpc_method_handler(_unary),
            "IngestStream": grpc.stream_stream_rpc_method_handler(_bidi),
        },
    ),
    grpc.method_handlers_generic_handler(
        "healthai.v1.Risk", {"Score": grpc.unary_unary_rpc_method_handler(_unary)}
    ),
)


@contextlib.asynccontextmanager
async def serving(
    port: int,
    obs_settings: ObservabilitySettings,
    sec_settings: SecuritySettings | None = None,
    tracer_provider: Any | None = None,
    extra_handlers: tuple[grpc.GenericRpcHandler, ...] = (),
) -> AsyncIterator[tuple[str, observability.Observability]]:
    obs = observability.setup(obs_settings, tracer_provider=tracer_provider)
    server = grpc.aio.server(
        interceptors=[*obs.interceptors, *security.interceptors(sec_settings or SecuritySettings())]
    )
    server.add_generic_rpc_handlers((*HANDLERS, *extra_handlers))
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    try:
        yield f"127.0.0.1:{bound}", obs
    finally:
        await server.stop(0)
        obs.close()


async def unary(
    channel: grpc.aio.Channel, method: str, body: dict, metadata: tuple = (), timeout: float = 10
) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    """(status, details or reply text, trailing metadata) — never raises for a status."""
    call = channel.unary_unary(method)(json.dumps(body).encode(), metadata=metadata, timeout=timeout)
    try:
        reply = (await call).decode()
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or "", dict(exc.trailing_metadata() or ())
    return grpc.StatusCode.OK, reply, dict(await call.trailing_metadata() or ())


def read_audit(path: Any) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
