"""Clients that cancel mid-call must never take the server down (issue 11, item 1).

A reflection client that cancels its stream after the first reply (what grpcurl-style tools do)
used to segfault ``healthai serve``: grpc.aio drops a response generator it was iterating when the
cancellation lands while a reply is being sent; the interceptors' per-call hooks then ran later, from
the garbage-collected generator's ``aclose()``, after gRPC had released the call, and the audit
line's ``context.peer()`` read the freed call. It is a race — it showed only while the CPUs were
busy — so this test keeps both cores busy with two spinning processes while it cancels every RPC
shape (unary, server-streaming, client-streaming, bidi) against a real server process, then checks
that the process is still alive and answers.
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from healthai.v1 import diagnostics_pb2, diagnostics_pb2_grpc, ingest_pb2_grpc
from healthai_client.requests import flat_request

from .serverkit import ServerProcess, server_process

SPINNERS = 2  # this machine's cores: the crash was a race that needed them busy
SPIN_LIMIT_S = 90  # a spinner ends by itself even if its kill never comes
STORM_S = 20.0
CALL_TIMEOUT_S = 5.0
EXPECTED_CLIENT_CODES = {grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED}


@contextmanager
def busy_cores() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes spinning on a core each, for at most SPIN_LIMIT_S; killed on exit."""
    code = f"import time\nend = time.monotonic() + {SPIN_LIMIT_S}\nwhile time.monotonic() < end:\n    pass\n"
    spinners: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(SPINNERS):
            spinners.append(subprocess.Popen([sys.executable, "-c", code]))
        yield spinners
    finally:
        for proc in spinners:
            proc.kill()
        for proc in spinners:
            proc.wait(10)


class _HeldOpen:
    """A request iterator that yields ``first`` and then keeps the stream open until ``close()``."""

    def __init__(self, first: object) -> None:
        self._first: object | None = first
        self._closed = threading.Event()

    def __iter__(self) -> _HeldOpen:
        return self

    def __next__(self) -> object:
        if self._first is not None:
            item, self._first = self._first, None
            return item
        self._closed.wait(CALL_TIMEOUT_S)
        raise StopIteration

    def close(self) -> None:
        self._closed.set()


def _list_services() -> reflection_pb2.ServerReflectionRequest:
    return reflection_pb2.ServerReflectionRequest(list_services="")


def _pause(rng: random.Random) -> None:
    """Cancel at a slightly different point of the call each time."""
    delay = rng.choice((0.0, 0.0, 0.0005, 0.002))
    if delay:
        time.sleep(delay)


def reflection_first_reply(channel: grpc.Channel, rng: random.Random) -> None:
    """Bidi, grpcurl-style: one request (half-closed), cancel after the first reply."""
    call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
        iter([_list_services()]), timeout=CALL_TIMEOUT_S)
    next(call)
    call.cancel()


def reflection_held_open(channel: grpc.Channel, rng: random.Random) -> None:
    """Bidi with the request stream still open: the server waits for the next request when cancelled."""
    requests = _HeldOpen(_list_services())
    call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
        requests, timeout=CALL_TIMEOUT_S)
    try:
        next(call)
        _pause(rng)
        call.cancel()
    finally:
        requests.close()


def health_watch(channel: grpc.Channel, rng: random.Random) -> None:
    """Server-streaming (reader/writer servicer): cancel after the first status."""
    call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""),
                                                     timeout=CALL_TIMEOUT_S)
    next(call)
    _pause(rng)
    call.cancel()


def ingest_stream(channel: grpc.Channel, rng: random.Random) -> None:
    """Client-streaming: one request sent, the stream left open, then cancelled."""
    request = flat_request("reliability/cancel-storm", patients=[
        {"patient_id": f"storm-{rng.randrange(1 << 30)}", "sex": "female", "birth_date": "1960-05",
         "region": "US-MA"}])
    requests = _HeldOpen(request)
    future = ingest_pb2_grpc.IngestStub(channel).IngestStream.future(requests, timeout=CALL_TIMEOUT_S)
    try:
        time.sleep(rng.choice((0.0, 0.001, 0.005)))
        future.cancel()
    finally:
        requests.close()


def unary_cancel(channel: grpc.Channel, rng: random.Random) -> None:
    """Unary: cancelled right after it is sent, or given a deadline too short to meet."""
    stub = diagnostics_pb2_grpc.DiagnosticsStub(channel)
    if rng.random() < 0.5:
        future = stub.Echo.future(diagnostics_pb2.EchoRequest(payload=b"x" * 64), timeout=CALL_TIMEOUT_S)
        _pause(rng)
        future.cancel()
    else:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=0.0005)


SHAPES: dict[str, Callable[[grpc.Channel, random.Random], None]] = {
    "bidi: reflection, cancel after first reply": reflection_first_reply,
    "bidi: reflection, request stream open": reflection_held_open,
    "server-streaming: Health.Watch": health_watch,
    "client-streaming: Ingest.IngestStream": ingest_stream,
    "unary: Diagnostics.Echo / Health.Check": unary_cancel,
}


def _storm(server: ServerProcess, seconds: float) -> Counter[str]:
    """Cancel calls of every shape for ``seconds`` (fresh and shared channels alternating); stops at
    once if the server process dies. Returns what the client saw, per shape and outcome."""
    rng = random.Random(11)
    seen: Counter[str] = Counter()
    end = time.monotonic() + seconds
    with grpc.insecure_channel(server.address) as shared:
        while time.monotonic() < end and server.proc.poll() is None:
            for name, shape in SHAPES.items():
                for i in range(10):
                    fresh = grpc.insecure_channel(server.address) if i % 2 else None
                    try:
                        shape(fresh or shared, rng)
                        seen[f"{name}: ok"] += 1
                    except grpc.RpcError as e:
                        code = e.code()  # type: ignore[attr-defined]
                        seen[f"{name}: {code.name}"] += 1
                        if code not in EXPECTED_CLIENT_CODES:
                            if _exited(server):  # UNAVAILABLE: the process is going down
                                return seen
                            raise AssertionError(f"{name}: unexpected {code}: {e}") from e
                    finally:
                        if fresh is not None:
                            fresh.close()
                if server.proc.poll() is not None:
                    break
    return seen


def _exited(server: ServerProcess) -> bool:
    try:
        server.proc.wait(2)
    except subprocess.TimeoutExpired:
        return False
    return True


def _answers(server: ServerProcess) -> list[str]:
    """Health says SERVING and reflection lists the services (a whole bidi call, not cancelled)."""
    with grpc.insecure_channel(server.address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        replies = list(reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([_list_services()]), timeout=10))
    return [s.name for r in replies for s in r.list_services_response.service]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_server_survives_cancel_storm_on_busy_cores(tmp_path: Path) -> None:
    audit = tmp_path / "audit.log"
    args = ["--audit-log-file", str(audit)]
    with server_process(tmp_path, args, env={"PYTHONFAULTHANDLER": "1"}) as server:
        with busy_cores() as spinners:
            seen = _storm(server, STORM_S)
            spun = all(p.poll() is None for p in spinners)
        code = server.proc.poll()
        log = server.log.read_text(errors="replace")
        fatal = log[log.find("Current thread"):][:2000] if "Current thread" in log else log[-3000:]
        assert code is None, (
            f"server died during the cancel storm with exit code {code} (-11 = SIGSEGV); client saw "
            f"{dict(seen)}; server log:\n{fatal}")
        assert spun, "a spinner ended early: the cores were not busy for the whole storm"
        assert "healthai.v1.Ingest" in _answers(server)
        assert "Fatal Python error" not in log
    # The storm reached the server: calls it saw cancelled, of the streaming shapes too (the audit
    # writer has flushed every line once the server stopped).
    cancelled = Counter(line.split('"rpc":"', 1)[1].split('"', 1)[0]
                        for line in audit.read_text().splitlines() if '"status":"CANCELLED"' in line)
    assert cancelled["healthai.v1.Ingest/IngestStream"] > 0, (dict(cancelled), dict(seen))
    assert cancelled["grpc.health.v1.Health/Watch"] > 0, (dict(cancelled), dict(seen))
