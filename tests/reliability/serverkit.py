"""Real ``healthai serve`` subprocesses for the reliability tests, and what we watch on them.

The server's logs and its audit lines (one per call) go to files in the test's tmp dir, never to a
pipe nobody reads (a full pipe would block the server under load).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from healthai.app.testing import start_server_process, stop_server_process

# No model hot-reload polling: the repository does not change during these tests.
SERVER_ENV = {"HEALTHAI_SERVING__RELOAD_POLL_S": "0"}


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    port: int
    store: Path
    log: Path
    audit: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@contextmanager
def server_process(tmp: Path, extra_args: Sequence[str] = (), *,
                   env: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    """A ``healthai serve --dev`` on the default model repository with its own store; stopped with
    SIGTERM at exit, which must end it with code 0."""
    tmp.mkdir(parents=True, exist_ok=True)
    store, log, audit = tmp / "store", tmp / "server.log", tmp / "audit.log"
    if "--audit-log-file" in extra_args:
        audit = Path(extra_args[list(extra_args).index("--audit-log-file") + 1])
    else:
        extra_args = [*extra_args, "--audit-log-file", str(audit)]
    with open(log, "wb") as log_file:
        proc, port = start_server_process(
            ["--dev", "--store-uri", str(store), "--log-level", "WARNING", *extra_args],
            {**SERVER_ENV, **(env or {})}, stderr=log_file.fileno())
        server = ServerProcess(proc, port, store, log, audit)
        try:
            yield server
        finally:
            code = stop_server_process(proc)
        assert code == 0, f"server exited with {code}; log tail:\n{log.read_text()[-3000:]}"


def rss_kib(pid: int) -> int:
    """Resident memory of a process (VmRSS from /proc/<pid>/status), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class RssSampler:
    """Samples a process's VmRSS every ``interval_s`` on a thread: (seconds since start, KiB)."""

    pid: int
    interval_s: float = 1.0
    samples: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> RssSampler:
        t0 = time.monotonic()

        def loop() -> None:
            while True:
                self.samples.append((time.monotonic() - t0, rss_kib(self.pid)))
                if self._stop.wait(self.interval_s):
                    return

        self._thread = threading.Thread(target=loop, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(5)

    def between(self, start_s: float, end_s: float) -> list[int]:
        return [kib for t, kib in self.samples if start_s <= t <= end_s]


def log_problems(server: ServerProcess, limit: int = 20) -> str:
    """The server log's lines and the audit lines that are not successes (for assertion messages)."""
    text = server.log.read_text(errors="replace")
    if server.audit.exists():
        text += server.audit.read_text(errors="replace")
    lines = [line for line in text.splitlines() if '"status":"OK"' not in line and "dev mode" not in line]
    status: dict[str, int] = {}
    for line in lines:
        if '"status":"' in line:
            code = line.split('"status":"', 1)[1].split('"', 1)[0]
            status[code] = status.get(code, 0) + 1
    return f"server-side statuses {status}; first lines:\n" + "\n".join(x[:400] for x in lines[:limit])
