"""``wrap_handler``: the per-call hooks run inside the call, also when it ends mid-stream.

grpc.aio stops iterating a response generator whose call is cancelled while a reply is being sent and
leaves it to the garbage collector; anything that generator still runs happens after gRPC released
the call (``context.peer()`` there is a SIGSEGV — issue 11). So a wrapped response-streaming handler
must be a reader/writer coroutine that closes the servicer's generator itself. The storm against a
real server is tests/reliability/test_cancel_storm.py; these are the deterministic checks.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from healthai.security.handlers import wrap_handler


class _Hooks:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def start(self, context: Any) -> None:
        self.events.append("start")

    def finish(self, state: None, context: Any, error: BaseException | None) -> None:
        self.events.append(("finish", type(error).__name__ if error is not None else None))


class _Context:
    """Records writes; with ``cancel_on_write`` the first write is cancelled (the client left)."""

    def __init__(self, cancel_on_write: bool = False) -> None:
        self.cancel_on_write = cancel_on_write
        self.written: list[bytes] = []

    async def write(self, message: bytes) -> None:
        self.written.append(message)
        if self.cancel_on_write:
            raise asyncio.CancelledError


def test_streaming_generator_is_closed_and_finished_inside_the_call_when_cancelled() -> None:
    closed: list[bool] = []

    async def replies(request: bytes, context: Any) -> AsyncIterator[bytes]:
        try:
            yield b"first"
            yield b"second"
        finally:
            closed.append(True)

    hooks = _Hooks()
    handler = wrap_handler(grpc.unary_stream_rpc_method_handler(replies), hooks)
    assert inspect.iscoroutinefunction(handler.unary_stream)  # awaited in the RPC's own task
    context = _Context(cancel_on_write=True)

    async def run() -> None:
        with pytest.raises(asyncio.CancelledError):
            await handler.unary_stream(b"", context)
        # Before the behavior returned: nothing is left for the garbage collector to finish later.
        assert closed == [True]
        assert hooks.events == ["start", ("finish", "CancelledError")]

    asyncio.run(run())
    assert context.written == [b"first"]


def test_streaming_shapes_send_every_reply_then_finish() -> None:
    async def agen(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        async for request in requests:
            yield request.upper()

    async def reader_writer(requests: AsyncIterator[bytes], context: Any) -> None:
        async for request in requests:
            await context.write(request.upper())

    def sync_gen(requests: Any, context: Any) -> Any:
        yield b"X"

    async def requests() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"

    for servicer, expected in ((agen, [b"A", b"B"]), (reader_writer, [b"A", b"B"]), (sync_gen, [b"X"])):
        hooks = _Hooks()
        handler = wrap_handler(grpc.stream_stream_rpc_method_handler(servicer), hooks)
        assert inspect.iscoroutinefunction(handler.stream_stream)
        context = _Context()
        asyncio.run(handler.stream_stream(requests(), context))
        assert context.written == expected, servicer.__name__
        assert hooks.events == ["start", ("finish", None)], servicer.__name__
