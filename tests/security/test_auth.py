"""Per-client authorization over a real grpc.aio server: keys, scopes, open services, rotation."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from healthai.security import SecuritySettings, new_key

from .rpc_testkit import call, health_check, serving

RISK, INGEST = "/healthai.v1.Risk/Score", "/healthai.v1.Ingest/IngestStream"
FORECAST, INFER = "/healthai.v1.Forecast/Forecast", "/inference.GRPCInferenceService/ModelInfer"
LOAD, UNLISTED = "/inference.GRPCInferenceService/RepositoryModelLoad", "/healthai.v1.Unlisted/Do"


def write_keys(path: Path, entries: list[dict]) -> None:
    """Atomic replace, as an operator's tooling would do."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"keys": entries}))
    os.replace(tmp, path)


@pytest.fixture
def keys(tmp_path: Path) -> dict:
    north_key, north = new_key("ehr-north", ["ingest", "score"])
    analyst_key, analyst = new_key("dashboard", ["forecast"])
    ops_key, ops = new_key("platform-ops", ["admin", "inference"])
    path = tmp_path / "api_keys.json"
    write_keys(path, [north, analyst, ops])
    return {
        "path": path,
        "north": north_key,
        "analyst": analyst_key,
        "ops": ops_key,
        "entries": [north, analyst, ops],
    }


def _scenario(settings: SecuritySettings, port: int, body):
    async def run():
        async with serving(settings, port) as address, grpc.aio.insecure_channel(address) as channel:
            return await body(channel)

    return asyncio.run(run())


async def _status(channel: grpc.aio.Channel, method: str, key: str | None) -> tuple[grpc.StatusCode, str]:
    try:
        reply = await call(channel, method, key=key)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, reply.decode()


def test_scopes_per_rpc(keys: dict, port: int) -> None:
    settings = SecuritySettings(api_keys_file=keys["path"])
    cases = [
        (RISK, None, grpc.StatusCode.UNAUTHENTICATED),
        (RISK, "hai_0123456789ab_notthesecret", grpc.StatusCode.UNAUTHENTICATED),
        (RISK, keys["north"][:-2] + "xx", grpc.StatusCode.UNAUTHENTICATED),
        (RISK, "not-even-our-format", grpc.StatusCode.UNAUTHENTICATED),
        (RISK, keys["north"], grpc.StatusCode.OK),
        (INGEST, keys["north"], grpc.StatusCode.OK),
        (FORECAST, keys["north"], grpc.StatusCode.PERMISSION_DENIED),
        (INGEST, keys["analyst"], grpc.StatusCode.PERMISSION_DENIED),
        (FORECAST, keys["analyst"], grpc.StatusCode.OK),
        (INFER, keys["analyst"], grpc.StatusCode.PERMISSION_DENIED),
        (INFER, keys["ops"], grpc.StatusCode.OK),
        (LOAD, keys["ops"], grpc.StatusCode.OK),
        (LOAD, keys["north"], grpc.StatusCode.PERMISSION_DENIED),
        (UNLISTED, keys["north"], grpc.StatusCode.PERMISSION_DENIED),  # unlisted → admin only
        (UNLISTED, keys["ops"], grpc.StatusCode.OK),
    ]

    async def body(channel: grpc.aio.Channel) -> list[tuple[grpc.StatusCode, str]]:
        return [await _status(channel, method, key) for method, key, _ in cases]

    results = _scenario(settings, port, body)
    assert [code for code, _ in results] == [expected for *_, expected in cases]
    assert results[0][1].startswith("missing API key")
    assert results[1][1] == "invalid API key"
    assert results[4][1] == "client=ehr-north"  # the servicer sees who called
    assert results[5][1] == "client=ehr-north messages=3"
    assert (
        results[6][1] == "client 'ehr-north' lacks scope 'forecast' needed for healthai.v1.Forecast/Forecast"
    )
    secrets = [keys[name][len("hai_") :].partition("_")[2] for name in ("north", "analyst", "ops")]
    for _, details in results:  # no key material ever echoed
        assert "hai_" not in details and not any(secret in details for secret in secrets)


def test_refused_client_streams_get_the_servers_code(keys: dict, port: int) -> None:
    """The server reads a refused short stream to its end before the status: a status sent while the
    client still writes came back INTERNAL in 7 of 300 calls (grpc aio client race, grpc/grpc#36066)."""
    denied = (keys["analyst"], grpc.StatusCode.PERMISSION_DENIED)
    no_key = (None, grpc.StatusCode.UNAUTHENTICATED)
    cases = [denied, no_key] * 60

    async def body(channel: grpc.aio.Channel) -> list[grpc.StatusCode]:
        return [(await _status(channel, INGEST, key))[0] for key, _ in cases]

    assert _scenario(SecuritySettings(api_keys_file=keys["path"]), port, body) == [c for _, c in cases]


def test_a_refused_endless_stream_still_gets_a_status(keys: dict, port: int) -> None:
    """Reading a refused stream is bounded (DRAIN_MESSAGES / DRAIN_SECONDS): a client that never stops
    writing gets a status well before its 10 s deadline."""

    async def body(channel: grpc.aio.Channel) -> grpc.StatusCode:
        async def endless() -> AsyncIterator[bytes]:
            while True:
                yield b"x"
                await asyncio.sleep(0.001)

        metadata = (("authorization", f"Bearer {keys['analyst']}"),)
        try:
            await channel.stream_unary(INGEST)(endless(), metadata=metadata, timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    code = _scenario(SecuritySettings(api_keys_file=keys["path"]), port, body)
    assert code not in (grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_x_api_key_metadata_is_accepted(keys: dict, port: int) -> None:
    async def body(channel: grpc.aio.Channel) -> bytes:
        return await channel.unary_unary(RISK)(b"x", metadata=(("x-api-key", keys["north"]),), timeout=10)

    assert _scenario(SecuritySettings(api_keys_file=keys["path"]), port, body) == b"client=ehr-north"


def test_health_open_by_default_and_closable(keys: dict, port: int) -> None:
    async def no_key(channel: grpc.aio.Channel) -> int:
        return await health_check(channel)

    assert _scenario(SecuritySettings(api_keys_file=keys["path"]), port, no_key) == (
        health_pb2.HealthCheckResponse.SERVING
    )
    closed = SecuritySettings(api_keys_file=keys["path"], open_services=())
    with pytest.raises(grpc.aio.AioRpcError) as info:
        _scenario(closed, port, no_key)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_rotation_without_restart(keys: dict, port: int) -> None:
    path = keys["path"]
    new_north_key, new_north = new_key("ehr-north", ["ingest", "score"])
    _, north, analyst, ops = None, *keys["entries"]

    async def body(channel: grpc.aio.Channel) -> list[grpc.StatusCode]:
        seen = [(await _status(channel, RISK, keys["north"]))[0]]
        write_keys(path, [north, new_north, analyst, ops])  # overlap: both keys valid
        seen += [(await _status(channel, RISK, k))[0] for k in (keys["north"], new_north_key)]
        write_keys(path, [new_north, analyst, ops])  # old key retired
        seen += [(await _status(channel, RISK, k))[0] for k in (keys["north"], new_north_key)]
        path.write_text(json.dumps({"keys": [{**new_north, "scopes": ["ingest"]}, analyst, ops]}))  # in place
        seen.append((await _status(channel, RISK, new_north_key))[0])  # scope narrowed
        path.write_text("{ not json")  # a broken edit keeps the last good set
        seen.append((await _status(channel, INGEST, new_north_key))[0])
        return seen

    ok, unauth, denied = (
        grpc.StatusCode.OK,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert _scenario(SecuritySettings(api_keys_file=path), port, body) == [ok, ok, ok, unauth, ok, denied, ok]


def test_expired_key_is_unauthenticated(tmp_path: Path, port: int) -> None:
    old_key, old = new_key("lab", ["score"], expires_at=datetime.now(UTC) - timedelta(seconds=1))
    path = tmp_path / "keys.json"
    write_keys(path, [old])

    async def body(channel: grpc.aio.Channel) -> tuple[grpc.StatusCode, str]:
        return await _status(channel, RISK, old_key)

    code, details = _scenario(SecuritySettings(api_keys_file=path), port, body)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "expired" in details
