"""A tiny test plugin with all four RPC shapes whose handlers raise what the request names."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from healthai import errors

SERVICE = "healthai.test.Probe"

ERRORS: dict[bytes, Exception] = {
    b"invalid": errors.InvalidInput("field 'x' value 3 is invalid", field="x"),
    b"notfound": errors.NotFound("model 'm' not found"),
    b"notready": errors.NotReady("model 'm' is loading"),
    b"overloaded": errors.Overloaded("queue full (1024)"),
    b"toolarge": errors.TooLarge("request holds 9 records; the limit is 5"),
    b"unauthenticated": errors.Unauthenticated("no API key"),
    b"denied": errors.PermissionDenied("scope 'ingest' required"),
    b"base": errors.HealthAIError("plain domain error"),
    b"crash": KeyError("patient-secret-123"),
}


async def _act(payload: bytes, context: grpc.aio.ServicerContext) -> bytes:
    if payload == b"abort":
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "handler aborted itself")
    if payload in ERRORS:
        raise ERRORS[payload]
    return b"ok:" + payload


async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return await _act(request, context)


def sync_unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    if request in ERRORS:
        raise ERRORS[request]
    return b"sync:" + request


async def client_stream(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
    last = b""
    async for r in requests:
        last = await _act(r, context)
    return last


async def server_stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    yield b"first"
    yield await _act(request, context)


async def bidi(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    async for r in requests:
        yield await _act(r, context)


class ProbePlugin:
    service_names = (SERVICE,)

    def __init__(self, log: list[str] | None = None, name: str = "probe") -> None:
        self.log = log if log is not None else []
        self.name = name

    def add_to_server(self, server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "SyncUnary": grpc.unary_unary_rpc_method_handler(sync_unary),
            "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
            "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        })])

    async def start(self) -> None:
        self.log.append(f"start {self.name}")

    async def stop(self) -> None:
        self.log.append(f"stop {self.name}")
