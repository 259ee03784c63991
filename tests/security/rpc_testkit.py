"""A real grpc.aio server on 127.0.0.1 with stand-in RPCs under the real service names.

Each stand-in answers ``client=<name>`` (the authenticated caller the servicer sees, or '-').
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from healthai import security
from healthai.security import SecuritySettings


def _whoami() -> bytes:
    identity = security.current_client()
    return f"client={identity.client if identity else '-'}".encode()


async def _unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return _whoami()


async def _client_stream(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
    count = 0
    async for _ in requests:
        count += 1
    return _whoami() + f" messages={count}".encode()


def _service(name: str, methods: dict[str, grpc.RpcMethodHandler]) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(name, methods)


STANDIN_HANDLERS = (
    _service("healthai.v1.Ingest", {"IngestStream": grpc.stream_unary_rpc_method_handler(_client_stream)}),
    _service("healthai.v1.Risk", {"Score": grpc.unary_unary_rpc_method_handler(_unary)}),
    _service("healthai.v1.Forecast", {"Forecast": grpc.unary_unary_rpc_method_handler(_unary)}),
    _service(
        "inference.GRPCInferenceService",
        {
            "ModelInfer": grpc.unary_unary_rpc_method_handler(_unary),
            "RepositoryModelLoad": grpc.unary_unary_rpc_method_handler(_unary),
        },
    ),
    _service("healthai.v1.Unlisted", {"Do": grpc.unary_unary_rpc_method_handler(_unary)}),
)


@contextlib.asynccontextmanager
async def serving(settings: SecuritySettings, port: int, *extra: Any) -> AsyncIterator[str]:
    server = grpc.aio.server(interceptors=[*extra, *security.interceptors(settings)])
    server.add_generic_rpc_handlers(STANDIN_HANDLERS)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    bound = security.add_port(server, f"127.0.0.1:{port}", settings)
    await server.start()
    try:
        yield f"127.0.0.1:{bound}"
    finally:
        await server.stop(0)


async def call(
    channel: grpc.aio.Channel, method: str, *, key: str | None = None, payload: bytes = b"x"
) -> bytes:
    metadata = (("authorization", f"Bearer {key}"),) if key else None
    if method.endswith("Stream"):
        stream = channel.stream_unary(method)

        async def messages() -> AsyncIterator[bytes]:
            for _ in range(3):
                yield payload

        return await stream(messages(), metadata=metadata, timeout=10)
    return await channel.unary_unary(method)(payload, metadata=metadata, timeout=10)


async def health_check(channel: grpc.aio.Channel, *, key: str | None = None) -> int:
    metadata = (("authorization", f"Bearer {key}"),) if key else None
    reply = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), metadata=metadata, timeout=10
    )
    return reply.status
