"""Admission control (``max_concurrent_rpcs``, ``max_pending_rpcs``): the settings from flag, env and
file, and the first one's effect on a real server — with the limit's worth of calls in progress, the
next call is refused RESOURCE_EXHAUSTED at once (not queued), and calls are admitted again once those
finish. (``max_pending_rpcs`` under load: test_overload.py.)"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from pydantic import ValidationError

from healthai.app.settings import load_settings
from healthai.v1 import ingest_pb2, ingest_pb2_grpc
from healthai_client.requests import flat_request

from .serverkit import server_process


def test_admission_limits_from_flag_env_and_file(tmp_path: Path) -> None:
    config = tmp_path / "healthai.toml"
    config.write_text("max_concurrent_rpcs = 7\n")
    assert load_settings(environ={}).max_concurrent_rpcs is None  # default: no limit
    assert load_settings(config=config, environ={}).max_concurrent_rpcs == 7
    env = {"HEALTHAI_MAX_CONCURRENT_RPCS": "9"}
    assert load_settings(config=config, environ=env).max_concurrent_rpcs == 9
    flags = {"max_concurrent_rpcs": 3}
    assert load_settings(config=config, environ=env, flags=flags).max_concurrent_rpcs == 3
    with pytest.raises(ValidationError, match="max_concurrent_rpcs"):
        load_settings(environ={"HEALTHAI_MAX_CONCURRENT_RPCS": "0"})
    assert load_settings(environ={}).max_pending_rpcs is None  # default: gRPC core's own limits
    assert load_settings(environ={"HEALTHAI_MAX_PENDING_RPCS": "32"}).max_pending_rpcs == 32
    with pytest.raises(ValidationError, match="max_pending_rpcs"):
        load_settings(flags={"max_pending_rpcs": -1}, environ={})


def _held_open(release: threading.Event) -> Iterator[ingest_pb2.IngestRequest]:
    """A client stream that sends one record and then waits: its call stays in progress."""
    yield flat_request("reliability/held", patients=[{"patient_id": f"held-{time.monotonic_ns()}"}])
    release.wait(30)


@pytest.mark.timeout(60)
def test_call_beyond_the_limit_is_refused_at_once_then_admitted_again(tmp_path: Path) -> None:
    limit = 2
    with server_process(tmp_path, ["--no-serving", "--max-concurrent-rpcs", str(limit)]) as server, \
            grpc.insecure_channel(server.address) as channel:
        stub = ingest_pb2_grpc.IngestStub(channel)
        request = flat_request("reliability/probe", patients=[{"patient_id": "probe-1"}])
        release = threading.Event()
        held: list[grpc.Future] = []
        refused_at_admission: list[grpc.Future] = []

        def top_up() -> None:
            """Keep `limit` streams in progress. A held stream that reached the server while a probe
            held a slot was itself refused (correctly): it holds nothing, so replace it."""
            for f in [f for f in held if f.done()]:
                held.remove(f)
                refused_at_admission.append(f)
            while len(held) < limit:
                held.append(stub.IngestStream.future(_held_open(release), timeout=30))

        try:
            deadline = time.monotonic() + 10
            while True:  # the held streams reach the server asynchronously; wait until they fill it
                top_up()
                t0 = time.perf_counter()
                try:
                    stub.IngestBatch(request, timeout=5)
                except grpc.RpcError as e:
                    refused_s = time.perf_counter() - t0
                    assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
                    assert "limit" in (e.details() or ""), e.details()
                    break
                assert time.monotonic() < deadline, "never refused with the limit's worth of calls open"
                time.sleep(0.05)
            assert refused_s < 1.0, f"refusal took {refused_s:.2f}s"
        finally:
            release.set()
        replies = [f.result(timeout=20) for f in held]
        assert all(r.accepted == 1 for r in replies)
        for f in refused_at_admission:
            assert f.exception().code() == grpc.StatusCode.RESOURCE_EXHAUSTED, f.exception()
        assert stub.IngestBatch(request, timeout=10).accepted == 1  # admitted again
