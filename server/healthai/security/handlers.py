"""Wrapping grpc.aio method handlers: shared by the auth and the observability interceptors.

A server interceptor only sees the call's method and metadata; to act around the call itself
(time it, see its outcome, set per-call context) it returns a new handler whose behavior wraps the
original. Handlers may be coroutines, async generators or the reader/writer style (coroutine that
calls ``context.write``); all four RPC shapes are kept, with the same (de)serializers. A wrapped
response-streaming handler is always a reader/writer coroutine, so the hooks run inside the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import grpc

from healthai.errors import HealthAIError

State = TypeVar("State")


class CallHooks(Protocol[State]):
    """``start`` runs before the servicer, ``finish`` after it with the exception it raised (or None)."""

    def start(self, context: grpc.aio.ServicerContext) -> State: ...

    def finish(
        self, state: State, context: grpc.aio.ServicerContext, error: BaseException | None
    ) -> None: ...


def handler_kind(handler: grpc.RpcMethodHandler) -> tuple[str, Callable[..., Any]]:
    """('unary_unary' | 'unary_stream' | 'stream_unary' | 'stream_stream', behavior)."""
    if handler.request_streaming and handler.response_streaming:
        return "stream_stream", handler.stream_stream
    if handler.request_streaming:
        return "stream_unary", handler.stream_unary
    if handler.response_streaming:
        return "unary_stream", handler.unary_stream
    return "unary_unary", handler.unary_unary


_FACTORIES = {
    "unary_unary": grpc.unary_unary_rpc_method_handler,
    "unary_stream": grpc.unary_stream_rpc_method_handler,
    "stream_unary": grpc.stream_unary_rpc_method_handler,
    "stream_stream": grpc.stream_stream_rpc_method_handler,
}


def _rebuild(
    handler: grpc.RpcMethodHandler, kind: str, behavior: Callable[..., Any]
) -> grpc.RpcMethodHandler:
    return _FACTORIES[kind](
        behavior,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def wrap_handler(handler: grpc.RpcMethodHandler, hooks: CallHooks[Any]) -> grpc.RpcMethodHandler:
    """The same RPC with ``hooks.start``/``hooks.finish`` run around every call."""
    kind, inner = handler_kind(handler)
    if handler.response_streaming:
        # A reader/writer coroutine, never an async generator: grpc.aio stops iterating a response
        # generator that is cancelled while a reply is being sent and leaves it to the garbage
        # collector, whose aclose() runs after gRPC has released the call, so the hooks (and their
        # context.peer()) would touch a freed call: SIGSEGV. A coroutine is awaited in the RPC's own
        # task: the hooks run there, while the call is alive, whatever ends the call.

        async def stream_behavior(request: Any, context: grpc.aio.ServicerContext) -> None:
            state = hooks.start(context)
            try:
                await _send_responses(inner(request, context), context)
            except BaseException as exc:
                hooks.finish(state, context, exc)
                raise
            hooks.finish(state, context, None)

        return _rebuild(handler, kind, stream_behavior)

    async def unary_behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
        state = hooks.start(context)
        try:
            result = inner(request, context)
            if inspect.isawaitable(result):
                result = await result
        except BaseException as exc:
            hooks.finish(state, context, exc)
            raise
        hooks.finish(state, context, None)
        return result

    return _rebuild(handler, kind, unary_behavior)


async def _send_responses(result: Any, context: grpc.aio.ServicerContext) -> None:
    """Write what a response-streaming behavior returned; an async generator is closed here, in the
    RPC's task, even when the call ends early (cancelled while a reply was being written)."""
    if hasattr(result, "__aiter__"):
        try:
            async for item in result:
                await context.write(item)
        finally:
            aclose = getattr(result, "aclose", None)
            if aclose is not None:
                await aclose()
    elif inspect.isawaitable(result):
        await result  # reader/writer style: responses went out through context.write
    elif result is not None:
        for item in result:
            await context.write(item)


def aborting_handler(handler: grpc.RpcMethodHandler, error: HealthAIError) -> grpc.RpcMethodHandler:
    """The same RPC shape, ending every call with ``error`` without running the servicer.

    The status is the error class's own ``code`` (``healthai.errors`` defines the mapping): this
    handler runs outside the error-mapping interceptor, so it aborts with that code itself.
    """
    kind, _ = handler_kind(handler)
    code, details = error.code, error.message

    async def abort(request: Any, context: grpc.aio.ServicerContext) -> None:
        if handler.request_streaming:
            await drain_requests(request)
        await context.abort(code, details)

    return _rebuild(handler, kind, abort)


DRAIN_MESSAGES = 64  # a refused client stream is read (and dropped) up to this many messages ...
DRAIN_SECONDS = 1.0  # ... or this long before the status is sent


async def drain_requests(requests: Any) -> None:
    """Read and drop the rest of a refused or failed client stream until the client half-closes
    (bounded); used before an error status by the auth and the error-mapping interceptors.

    A status sent while the client is still writing races with its next write, and grpc aio clients
    then report INTERNAL instead of the server's code (grpc/grpc#36066: 7 of 300 refused 3-message
    streams here). Waiting for the short streams that clients usually send to end avoids the race.
    Longer or slower streams get the status after the bound, as before.
    """

    async def read() -> None:
        count = 0
        async for _ in requests:
            count += 1
            if count >= DRAIN_MESSAGES:
                return

    with contextlib.suppress(Exception):  # TimeoutError, or the stream failed: send the status anyway
        await asyncio.wait_for(read(), DRAIN_SECONDS)
