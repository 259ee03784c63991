"""``healthai-client load --spawn``: run a throw-away ``healthai serve --dev`` on a free loopback port
(a subprocess, not an import: the harness stays a pure client) and wait for its health check."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthai_command() -> list[str]:
    local = Path(sys.executable).with_name("healthai")
    if local.exists():
        return [str(local)]
    found = shutil.which("healthai")
    if not found:
        raise ValueError("--spawn needs the 'healthai' server command (pip install the healthai package)")
    return [found]


def wait_serving(address: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"spawned server exited with code {proc.returncode}")
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5,
                              wait_for_ready=True).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError as e:
                if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
    raise TimeoutError(f"spawned server at {address} not SERVING after {timeout:.0f}s")


@contextlib.contextmanager
def spawned_server(extra_args: Sequence[str] = ()) -> Iterator[tuple[str, int]]:
    """Yields (address, pid) of a fresh dev server; SIGTERM + wait on exit."""
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="healthai-load-") as tmp:
        cmd = [*_healthai_command(), "serve", "--dev", "--host", "127.0.0.1", "--port", str(port),
               "--store-uri", str(Path(tmp) / "store"), "--log-level", "WARNING", *extra_args]
        log_path = Path(tmp) / "server.log"  # the server's logs (audit lines too) stay out of the report
        with log_path.open("wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
            try:
                try:
                    wait_serving(f"127.0.0.1:{port}", proc)
                except (RuntimeError, TimeoutError) as e:
                    tail = log_path.read_bytes()[-2000:].decode(errors="replace")
                    raise RuntimeError(f"{e}; its log ends with:\n{tail}") from e
                yield f"127.0.0.1:{port}", proc.pid
            finally:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
