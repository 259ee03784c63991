"""Helpers for tests (any engineer's): a server in-process, or a real ``healthai serve`` subprocess.

In-process, from async code::

    async with running_server(settings, plugins) as running:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")

In-process, from sync code (the server runs its own event loop in a thread)::

    with serve_in_thread(settings, plugins) as running:
        channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")

Subprocess (returns once the overall health check says SERVING; no sleeps)::

    proc, port = start_server_process(["--dev", "--no-serving", "--store-uri", str(tmp)])
    ...
    stop_server_process(proc)          # SIGTERM, wait, returns the exit code
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from healthai.app.server import RunningServer, ServicePlugin, build_server
from healthai.app.settings import Settings


@asynccontextmanager
async def running_server(settings: Settings,
                         plugins: Sequence[ServicePlugin]) -> AsyncIterator[RunningServer]:
    running = build_server(settings, plugins)
    await running.start()
    try:
        yield running
    finally:
        await running.stop(grace=0.5)


@contextmanager
def serve_in_thread(settings: Settings, plugins: Sequence[ServicePlugin], *,
                    interceptors: Sequence[grpc.aio.ServerInterceptor] = ()) -> Iterator[RunningServer]:
    """Run the server on an event loop in a daemon thread (the loop ``healthai serve`` runs on);
    stop it (grace 0.5 s) on exit."""
    from healthai.serving.runtime.idle import new_event_loop

    loop = new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="healthai-test-server", daemon=True)
    thread.start()

    async def start() -> RunningServer:
        running = build_server(settings, plugins, interceptors=interceptors)
        await running.start()
        return running

    try:
        running = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=60)
        try:
            yield running
        finally:
            asyncio.run_coroutine_threadsafe(running.stop(grace=0.5), loop).result(timeout=60)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_serving(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 60.0,
                       service: str = "") -> None:
    """Block until ``service``'s health is SERVING; raise if ``proc`` exits or ``timeout`` passes."""
    import time

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"server process exited with code {proc.returncode} before serving")
            if time.monotonic() > deadline:
                raise TimeoutError(f"server on port {port} not SERVING after {timeout:.0f}s")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=0.5,
                                   wait_for_ready=True)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError as e:
                if e.code() not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE,
                                    grpc.StatusCode.NOT_FOUND):
                    raise


def start_server_process(args: Sequence[str], env: Mapping[str, str] | None = None, *,
                         timeout: float = 60.0, port: int | None = None,
                         stderr: int | None = None) -> tuple[subprocess.Popen[bytes], int]:
    """Run ``python -m healthai.app serve <args> --port <free port>`` (= ``healthai serve``) until SERVING.

    The child's stderr (its logs) goes to ours unless ``stderr`` says otherwise (pytest captures it).
    """
    port = port or _free_port()
    full_env = {**os.environ, **(env or {})}
    cmd = [sys.executable, "-m", "healthai.app", "serve", *args, "--port", str(port)]
    proc = subprocess.Popen(cmd, env=full_env, stdout=subprocess.DEVNULL,
                            stderr=stderr)
    try:
        wait_until_serving(port, proc, timeout)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, port


def stop_server_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM,
                        timeout: float = 30.0) -> int:
    """Send ``sig`` and wait; returns the exit code (killing the process if it does not exit)."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def process_cpu_ns(pid: int) -> int:
    """CPU time (ns) the live threads of process ``pid`` have run so far (Linux schedstat; 0 where
    unavailable). Benchmarks divide its growth by the calls served: server CPU per call, which other
    processes on a shared machine move far less than wall time."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    total = 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):  # a thread that just exited
            pass
    return total
