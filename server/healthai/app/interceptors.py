"""The one interceptor that maps domain errors to gRPC statuses.

``healthai.errors.HealthAIError`` (and subclasses) -> its ``.code`` and ``.message``; an abort the
handler already raised passes through; anything else -> INTERNAL with a generic message carrying an
incident id, and the traceback logged under that id (frames and exception types only: exception
messages may quote input data and are never logged; a domain error is logged with what its message
quotes or puts in parentheses replaced by '…', and a number given to a field by '<value>':
``features[0].age=<value> is outside [18, 110]``). Works for all four RPC shapes. When a
request-streaming call fails, the rest of the client's stream is read and dropped (bounded,
``security.handlers.drain_requests``) before the status, so the client reads that status.
"""

from __future__ import annotations

import inspect
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from healthai.errors import HealthAIError, stack_summary
from healthai.security.handlers import drain_requests

log = logging.getLogger(__name__)
# values a message quotes or names in parentheses (a model name, a region id, a KServe input's name)
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|\([^()]*\)")
# a value given to a field (`features[0].age=110.01`: an age over 89 is PHI); bounds and counts stay
_VALUE = re.compile(r"=\s*[-+]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf(?:inity)?)(?![\w.])",
                    re.IGNORECASE)


def redact(message: str) -> str:
    """A domain error's message as the log keeps it: quoted and parenthesised values replaced by '…',
    a value after '=' by '<value>'."""
    return _VALUE.sub("=<value>", _QUOTED.sub("…", message))


async def _abort_for(exc: Exception, context: grpc.aio.ServicerContext, method: str) -> None:
    if isinstance(exc, HealthAIError):  # the caller reads the message; the log keeps no value it quotes
        log.info("%s -> %s: %s", method, exc.code.name, redact(exc.message))
        await context.abort(exc.code, exc.message)
    incident = uuid.uuid4().hex[:12]
    log.error("%s failed (incident %s): %s\n%s", method, incident, type(exc).__name__, stack_summary(exc))
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error (incident {incident})")


def _wrap_unary_response(
    behavior: Callable[..., Any], method: str, *, request_stream: bool = False
) -> Callable[..., Awaitable[Any]]:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            result = behavior(request, context)
            if inspect.isawaitable(result):
                result = await result
            return result
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            if request_stream:  # let the client finish writing, or its status may read INTERNAL
                await drain_requests(request)
            await _abort_for(exc, context, method)

    return wrapper


def _wrap_stream_response(
    behavior: Callable[..., Any], method: str, *, request_stream: bool = False
) -> Callable[..., AsyncIterator[Any]]:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            result = behavior(request, context)
            if inspect.isawaitable(result):  # a coroutine that streams with context.write()
                result = await result
            if hasattr(result, "__aiter__"):
                async for item in result:
                    yield item
            elif result is not None:
                for item in result:
                    yield item
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            if request_stream:
                await drain_requests(request)
            await _abort_for(exc, context, method)

    return wrapper


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        kw = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary_response(handler.unary_unary, method), **kw)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _wrap_unary_response(handler.stream_unary, method, request_stream=True), **kw)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream_response(handler.unary_stream, method), **kw)
        return grpc.stream_stream_rpc_method_handler(
            _wrap_stream_response(handler.stream_stream, method, request_stream=True), **kw)
