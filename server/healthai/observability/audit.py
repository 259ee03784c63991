"""The audit log: one JSON line per RPC on the dedicated logger ``healthai.audit``.

Fields: ``ts`` (UTC), ``request_id``, ``caller`` (client name from the API key, or ``anonymous``),
``key_id``, ``client_cert`` (the mTLS client certificate's identity, when one was presented),
``peer`` (network address of the calling system), ``rpc`` (``pkg.Service/Method``), ``status`` (gRPC
code name), ``latency_ms``, ``counts`` (integers noted by the servicer, e.g. records/patients).
Never request bodies, error details or metadata values other than the request id — so no patient
data can reach it. Clients must not put patient data in ``x-request-id``.

Off the event loop: the interceptor hands each call's fields to :class:`AuditWriter` (a bounded
queue and one writer thread that formats and writes); the loop never formats JSON nor touches the
file. When the queue is full the line is dropped and counted (``healthai_audit_dropped_lines_total``),
never blocking a call. Its own sink: a file (``audit_log_file``, reopened when logrotate moves it) or
stdout — application logs go to stderr, so the two never mix.
"""

from __future__ import annotations

import collections
import json
import logging
import logging.handlers
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

from healthai.observability.metrics import AUDIT_DROPPED

AUDIT_LOGGER_NAME = "healthai.audit"
_HANDLER_MARK = "_healthai_audit_handler"
_encode = json.JSONEncoder(separators=(",", ":")).encode


class _StreamSink(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes a record without flushing: the audit writer flushes once per batch."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + self.terminator)
        except Exception:
            self.handleError(record)


class _FileSink(logging.handlers.WatchedFileHandler):
    """Reopens the file when logrotate moved it (like WatchedFileHandler), writes without flushing."""

    def emit(self, record: logging.LogRecord) -> None:
        self.reopenIfNeeded()
        if self.stream is None:
            self.stream = self._open()
        try:
            self.stream.write(self.format(record) + self.terminator)
        except Exception:
            self.handleError(record)


def _sinks(logger: logging.Logger) -> list[logging.Handler]:
    return [h for h in logger.handlers if getattr(h, _HANDLER_MARK, False)]


def flush_audit_handlers(logger: logging.Logger | None = None) -> None:
    for handler in _sinks(logger or logging.getLogger(AUDIT_LOGGER_NAME)):
        handler.flush()


def close_audit_handlers() -> None:
    """Detach, flush and close the handler ``configure_audit_logger`` installed."""
    logger = logging.getLogger(AUDIT_LOGGER_NAME)
    for old in _sinks(logger):
        logger.removeHandler(old)
        old.flush()
        old.close()


def configure_audit_logger(log_file: Path | None) -> logging.Logger:
    """``healthai.audit`` writing bare JSON lines to ``log_file`` (or stdout); not propagated to root.

    One destination per process: configuring again replaces the previous handler.
    """
    close_audit_handlers()
    logger = logging.getLogger(AUDIT_LOGGER_NAME)
    handler: logging.Handler
    if log_file is None:
        handler = _StreamSink(sys.stdout)
    else:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = _FileSink(log_file, encoding="utf-8")  # logrotate-safe
    handler.setFormatter(logging.Formatter("%(message)s"))
    setattr(handler, _HANDLER_MARK, True)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def audit_line(
    *,
    request_id: str,
    caller: str,
    key_id: str | None,
    peer: str,
    rpc: str,
    status: grpc.StatusCode,
    latency_s: float,
    counts: dict[str, int],
    client_cert: str | None = None,
    ts: float | None = None,
) -> str:
    when = datetime.now(UTC) if ts is None else datetime.fromtimestamp(ts, UTC)
    stamp = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return _encode(
        {
            "ts": stamp,
            "request_id": request_id,
            "caller": caller,
            "key_id": key_id,
            "client_cert": client_cert,
            "peer": peer,
            "rpc": rpc,
            "status": status.name,
            "latency_ms": round(latency_s * 1000, 3),
            "counts": counts,
        },
    )


class AuditWriter:
    """A bounded queue in front of the audit logger, drained in batches by one writer thread.

    ``submit(**fields)`` (the arguments of :func:`audit_line`) is one deque append on the caller's
    thread (no lock, no wake-up); the wall-clock time is taken there. Every ``interval_s`` the writer
    thread takes what is queued, builds the JSON lines, writes them and flushes once — so the event
    loop never formats, writes or wakes a thread per call. A full queue drops the line and counts it.
    ``close()`` writes what is queued, then stops.
    """

    def __init__(self, logger: logging.Logger, max_pending: int = 10_000, interval_s: float = 0.02) -> None:
        self.logger = logger
        self.max_pending = max_pending
        self.interval_s = interval_s
        self.dropped = 0
        self._pending: collections.deque[dict[str, Any]] = collections.deque()
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._drain, name="healthai-audit", daemon=True)
        self._thread.start()

    def submit(self, **fields: Any) -> None:
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            AUDIT_DROPPED.inc()
            return
        fields["ts"] = time.time()
        self._pending.append(fields)

    def close(self, timeout: float = 10.0) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)

    def _drain(self) -> None:
        while True:
            self._wake.wait(self.interval_s)
            stopping = self._stopping
            self._write_batch()
            if stopping:
                self._write_batch()  # anything submitted while the last batch was written
                return

    def _write_batch(self) -> None:
        pending = self._pending
        if not pending:
            return
        logger = self.logger
        while pending:
            fields = pending.popleft()
            try:
                line = audit_line(**fields)  # makeRecord + handle: no caller lookup, unlike .info()
                logger.handle(logger.makeRecord(logger.name, logging.INFO, "audit", 0, line, None, None))
            except Exception:  # a broken sink must not kill the writer; logging reports it
                logging.getLogger(__name__).exception("audit line could not be written")
        flush_audit_handlers(logger)
