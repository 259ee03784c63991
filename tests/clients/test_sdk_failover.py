"""Round-robin over several addresses, and a replica that dies mid-run: the SDK retries on the
others (UNAVAILABLE only). Two real in-process servers (Ingest only) with their own stores: each
receipt's store sequence tells which one answered."""

from __future__ import annotations

import logging
import threading
import time
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


def test_resource_exhausted_is_not_retried(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "store").model_copy(update={"max_message_bytes": 4096})
    with serve_in_thread(settings, build_plugins(settings)) as running, \
            Client(f"127.0.0.1:{running.port}", retry=RetryPolicy(max_attempts=5)) as c:
        with pytest.raises(HealthAIClientError) as info:
            c.ingest_flat(patients=[{"patient_id": f"big-{i}", "region": "US-MA"} for i in range(1000)])
        assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and info.value.attempts == 1
        assert c.ingest_flat(patients=[{"patient_id": "small", "region": "US-MA"}]).accepted == 1


def test_address_forms() -> None:
    with Client("127.0.0.1:1, 127.0.0.1:2") as c:
        assert c.addresses == ("127.0.0.1:1", "127.0.0.1:2")
    with pytest.raises(ValueError, match="host:port"):
        Client("localhost")
    with pytest.raises(ValueError, match="not both"):
        Client("127.0.0.1:1", addresses=["127.0.0.1:2"])
    with pytest.raises(ValueError, match="client_cert and client_key"):
        Client("127.0.0.1:1", client_cert="c.pem")


def test_dead_replica_is_passed_over_until_it_is_back(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    settings0, settings1 = _settings(tmp_path / "s0"), _settings(tmp_path / "s1")
    with ExitStack() as stack1:
        replica1 = stack1.enter_context(serve_in_thread(settings1, build_plugins(settings1)))
        stack0 = ExitStack()
        replica0 = stack0.enter_context(serve_in_thread(settings0, build_plugins(settings0)))
        addresses = [f"127.0.0.1:{replica0.port}", f"127.0.0.1:{replica1.port}"]
        down, up = threading.Event(), threading.Event()

        def watch(state: grpc.ChannelConnectivity) -> None:
            if state is grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                down.set()
            elif state is grpc.ChannelConnectivity.READY:
                up.set()

        policy = RetryPolicy(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=0.05)
        with Client(addresses=addresses, retry=policy, timeout=20) as c:
            assert [_ingest_one(c, i) for i in range(2)] == [1, 1]
            stack0.close()  # replica 0 goes away
            c._channels[0].subscribe(watch)  # after the client's own watcher: it has seen the state first
            try:
                assert down.wait(20), "the client never saw replica 0 fail"
                assert c.down_addresses == (addresses[0],)
                caplog.set_level(logging.INFO, logger="healthai_client.client")
                assert [_ingest_one(c, 10 + i) for i in range(4)] == [2, 3, 4, 5]  # all on replica 1
                assert not [r for r in caplog.records if "retrying" in r.getMessage()]  # no wasted attempt
                up.clear()
                restarted = _settings(tmp_path / "s0").model_copy(update={"port": replica0.port})
                with serve_in_thread(restarted, build_plugins(restarted)):
                    assert up.wait(20), "the client never reconnected to replica 0"
                    assert c.down_addresses == ()
                    sequences = [_ingest_one(c, 20 + i) for i in range(4)]
                assert sorted(sequences) == [2, 3, 6, 7]  # replica 0 (same store) is back in the rotation
            finally:
                c._channels[0].unsubscribe(watch)


def test_closing_a_multi_address_client_leaves_no_thread_error() -> None:
    """grpcio polls a subscribed channel's state in a thread; closing the channel under that
    poller raised "Cannot monitor channel state: Channel closed!" there (a CI failure)."""
    errors: list[BaseException | None] = []
    previous = threading.excepthook
    threading.excepthook = lambda args: errors.append(args.exc_value)
    try:
        for i in range(40):
            client = Client(addresses=["127.0.0.1:1", "127.0.0.1:2"], retry=NO_RETRY)
            time.sleep(0.005 * (i % 20))  # close at every phase of the 0.2 s poll period
            client.close()
        time.sleep(0.5)
    finally:
        threading.excepthook = previous
    assert errors == []
