"""build_server: health per service + overall, reflection, free-port bind, plugin life cycle."""

from __future__ import annotations

import asyncio
import gc
import socket

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from healthai.app.server import OVERALL, ServicePlugin, build_server
from healthai.app.settings import Settings
from healthai.errors import InvalidInput

from .plugins import SERVICE, ProbePlugin

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _health(ch: grpc.aio.Channel, service: str) -> int:
    reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service))
    return reply.status


async def _reflected_services(ch: grpc.aio.Channel) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(ch)
    call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    async for reply in call:
        return {s.name for s in reply.list_services_response.service}
    return set()


async def _reflected_services_v1(ch: grpc.aio.Channel) -> set[str]:
    """The same question through ``grpc.reflection.v1`` (same messages on the wire)."""
    info = ch.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
    call = info(iter([reflection_pb2.ServerReflectionRequest(list_services=""),
                      reflection_pb2.ServerReflectionRequest(file_containing_symbol="grpc.health.v1.Health")]))
    replies = [reply async for reply in call]
    assert replies[1].file_descriptor_response.file_descriptor_proto  # descriptors, not just names
    return {s.name for s in replies[0].list_services_response.service}


def test_life_cycle_health_reflection_and_port_zero() -> None:
    events: list[str] = []

    async def scenario() -> None:
        plugin = ProbePlugin(events)
        assert isinstance(plugin, ServicePlugin)
        running = build_server(Settings(port=0, health_port=0, dev_mode=True),
                               [plugin, ProbePlugin(events, "second")])
        assert running.port > 0 and running.health_port not in (None, 0, running.port)
        await running.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.health_port}") as probe:
            assert await _health(probe, OVERALL) == SERVING
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            assert await _health(ch, OVERALL) == SERVING
            assert await _health(ch, SERVICE) == SERVING
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await _health(ch, "healthai.v1.Nope")
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            assert "no health status for 'healthai.v1.Nope'" in err.value.details()
            assert {SERVICE, "grpc.health.v1.Health",
                    "grpc.reflection.v1alpha.ServerReflection"} <= await _reflected_services(ch)
            assert await _reflected_services_v1(ch) == await _reflected_services(ch)
            watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service=SERVICE))
            assert (await watch.read()).status == SERVING
            stopping = asyncio.create_task(running.stop(grace=1.0))
            assert (await watch.read()).status == NOT_SERVING
            watch.cancel()
            await stopping
        assert events == ["start probe", "start second", "stop second", "stop probe"]

    asyncio.run(scenario())


def test_failed_plugin_start_stops_the_started_ones() -> None:
    events: list[str] = []

    class Broken(ProbePlugin):
        async def start(self) -> None:
            raise InvalidInput("map file unreadable", field="snomed_map_nlm")

    async def scenario() -> None:
        plugins = [ProbePlugin(events), Broken(events, "broken")]
        running = build_server(Settings(port=0, dev_mode=True), plugins)
        with pytest.raises(InvalidInput, match="map file unreadable"):
            await running.start()


    asyncio.run(scenario())
    assert events == ["start probe", "stop probe"]


def test_bind_conflict_is_reported_with_the_address() -> None:
    async def scenario() -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            taken = s.getsockname()[1]
            with pytest.raises(InvalidInput, match=f"cannot bind 127.0.0.1:{taken}"):
                build_server(Settings(port=taken, dev_mode=True), [ProbePlugin()])
        gc.collect()  # the unbound grpc.aio.Server shuts down on this loop, not after it closes

    asyncio.run(scenario())
