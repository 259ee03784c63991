"""max_concurrent_rpcs on a real server: health and reflection are answered while the limit is reached;
a refused call is RESOURCE_EXHAUSTED with a message naming the setting, counted in the metrics, audited
and logged; a client stream is refused with that status too; slots come back when calls end, also
when the caller cancels."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from healthai import observability
from healthai.app.server import build_server
from healthai.app.settings import Settings
from healthai.observability import REGISTRY, ObservabilitySettings

SERVICE = "healthai.test.Slow"
LIMIT = 2


class SlowPlugin:
    """``Hold`` waits until released; ``Quick`` answers at once; ``Upload`` reads a client stream."""

    service_names = (SERVICE,)

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.holding = 0

    async def hold(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self.holding += 1
        try:
            await self.release.wait()
        finally:
            self.holding -= 1
        return b"released"

    async def quick(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await asyncio.sleep(0)
        return b"quick"

    async def upload(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
        return b"%d" % len([r async for r in requests])

    def add_to_server(self, server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {
            "Hold": grpc.unary_unary_rpc_method_handler(self.hold),
            "Quick": grpc.unary_unary_rpc_method_handler(self.quick),
            "Upload": grpc.stream_unary_rpc_method_handler(self.upload),
        })])

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.release.set()


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.timeout(60)
def test_limit_refuses_visibly_and_never_refuses_health(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    audit_file = tmp_path / "audit.log"
    labels = {"grpc_service": SERVICE, "grpc_method": "Quick"}
    shed_before = _sample("healthai_grpc_server_shed_total", **labels)
    handled_before = _sample("healthai_grpc_server_handled_total", grpc_code="RESOURCE_EXHAUSTED", **labels)

    async def scenario() -> None:
        obs = observability.setup(ObservabilitySettings(audit_log_file=audit_file, metrics_port=None))
        plugin = SlowPlugin()
        settings = Settings(port=0, dev_mode=True, max_concurrent_rpcs=LIMIT)
        running = build_server(settings, [plugin], interceptors=obs.interceptors)
        await running.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as ch:
                hold = ch.unary_unary(f"/{SERVICE}/Hold")
                quick = ch.unary_unary(f"/{SERVICE}/Quick")
                assert await quick(b"", timeout=5) == b"quick"
                held = [asyncio.ensure_future(hold(b"", timeout=30)) for _ in range(LIMIT)]
                while plugin.holding < LIMIT:
                    await asyncio.sleep(0.01)

                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await quick(b"", timeout=5)
                assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "max_concurrent_rpcs" in (refused.value.details() or "")
                upload = ch.stream_unary(f"/{SERVICE}/Upload")
                with pytest.raises(grpc.aio.AioRpcError) as refused_stream:
                    await upload(iter([b"a", b"b", b"c"]), timeout=5)
                assert refused_stream.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

                # health and reflection are answered on the main port while the limit is reached
                for _ in range(LIMIT + 3):
                    reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(),
                                                                       timeout=5)
                    assert reply.status == health_pb2.HealthCheckResponse.SERVING
                call = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
                assert SERVICE in {s.name async for r in call for s in r.list_services_response.service}

                # a cancelled call gives its slot back; released calls give theirs back
                held[0].cancel()
                while plugin.holding == LIMIT:
                    await asyncio.sleep(0.01)
                assert await quick(b"", timeout=5) == b"quick"
                plugin.release.set()
                assert await held[1] == b"released"
                assert await asyncio.gather(*(quick(b"", timeout=5) for _ in range(LIMIT * 3))) == \
                    [b"quick"] * (LIMIT * 3)
                assert running.limit is not None and running.limit.active == 0
        finally:
            await running.stop(0)
            obs.close()

    with caplog.at_level(logging.WARNING, logger="healthai.app.server"):
        asyncio.run(scenario())

    assert _sample("healthai_grpc_server_shed_total", **labels) == shed_before + 1
    assert _sample("healthai_grpc_server_handled_total", grpc_code="RESOURCE_EXHAUSTED", **labels) == \
        handled_before + 1
    lines = [json.loads(line) for line in audit_file.read_text().splitlines()]
    refused_lines = [line for line in lines if line["status"] == "RESOURCE_EXHAUSTED"]
    assert {line["rpc"] for line in refused_lines} == {f"{SERVICE}/Quick", f"{SERVICE}/Upload"}
    assert any("max_concurrent_rpcs (2) reached" in r.getMessage() for r in caplog.records)


def test_no_limit_configured_adds_no_interceptor() -> None:
    async def scenario() -> None:
        running = build_server(Settings(port=0, dev_mode=True), [SlowPlugin()])
        assert running.limit is None
        await running.server.stop(None)

    asyncio.run(scenario())
