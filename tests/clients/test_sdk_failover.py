"""Round-robin over several addresses, and a replica that dies mid-run: the SDK retries on the
others (UNAVAILABLE only). Two real in-process servers (Ingest only) with their own stores: each
receipt's store sequence tells which one answered."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import grpc
import pytest

from healthai.app.main import build_plugins
from healthai.app.server import RunningServer
from healthai.app.settings import Settings
from healthai.app.testing import serve_in_thread
from healthai.serving.settings import ServingSettings
from healthai_client import NO_RETRY, Client, HealthAIClientError, RetryPolicy


def _settings(store: Path) -> Settings:
    return Settings(port=0, dev_mode=True, store_uri=str(store), log_level="WARNING",
                    serving=ServingSettings(enabled=False))


@pytest.fixture
def two_servers(tmp_path: Path) -> Iterator[tuple[ExitStack, list[RunningServer]]]:
    stacks = [ExitStack(), ExitStack()]
    servers = []
    for i, stack in enumerate(stacks):
        settings = _settings(tmp_path / f"store{i}")
        servers.append(stack.enter_context(serve_in_thread(settings, build_plugins(settings))))
    try:
        yield stacks[0], servers
    finally:
        for stack in stacks:
            stack.close()


def _ingest_one(c: Client, i: int) -> int:
    """Stores one new patient; returns the answering store's commit sequence."""
    r = c.ingest_flat(patients=[{"patient_id": f"rr-{i}", "sex": "male", "region": "US-MA"}])
    assert r.stored == {"patient": 1}
    return r.sequence


def test_round_robin_alternates_addresses(two_servers: tuple[ExitStack, list[RunningServer]]) -> None:
    _, servers = two_servers
    with Client(addresses=[f"127.0.0.1:{s.port}" for s in servers], retry=NO_RETRY) as c:
        sequences = [_ingest_one(c, i) for i in range(6)]
    # each server's store counts its own commits: alternating calls give 1,1,2,2,3,3
    assert sequences == [1, 1, 2, 2, 3, 3]


def test_dead_replica_mid_run_is_retried_on_the_other(
        two_servers: tuple[ExitStack, list[RunningServer]]) -> None:
    first_stack, servers = two_servers
    addresses = [f"127.0.0.1:{s.port}" for s in servers]
    policy = RetryPolicy(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=0.05)
    with Client(addresses=addresses, retry=policy, timeout=20) as c:
        before = [_ingest_one(c, i) for i in range(4)]
        first_stack.close()  # replica 0 stops (graceful: NOT_SERVING, drain, close)
        after = [_ingest_one(c, 100 + i) for i in range(6)]  # every call still succeeds
    assert before == [1, 1, 2, 2]
    assert after == [3, 4, 5, 6, 7, 8]  # all answered by replica 1's store, in order
    with Client(addresses[0], retry=NO_RETRY) as c, pytest.raises(HealthAIClientError) as info:
        c.health()
    assert info.value.code == grpc.StatusCode.UNAVAILABLE


def test_address_forms() -> None:
    with Client("127.0.0.1:1, 127.0.0.1:2") as c:
        assert c.addresses == ("127.0.0.1:1", "127.0.0.1:2")
    with pytest.raises(ValueError, match="host:port"):
        Client("localhost")
    with pytest.raises(ValueError, match="not both"):
        Client("127.0.0.1:1", addresses=["127.0.0.1:2"])
    with pytest.raises(ValueError, match="client_cert and client_key"):
        Client("127.0.0.1:1", client_cert="c.pem")
