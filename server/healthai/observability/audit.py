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

import json
import logging
import logging.handlers
import queue
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


def close_audit_handlers() -> None:
    """Detach and close the handler ``configure_audit_logger`` installed (flushes the file)."""
    logger = logging.getLogger(AUDIT_LOGGER_NAME)
    for old in [h for h in logger.handlers if getattr(h, _HANDLER_MARK, False)]:
        logger.removeHandler(old)
        old.close()


def configure_audit_logger(log_file: Path | None) -> logging.Logger:
    """``healthai.audit`` writing bare JSON lines to ``log_file`` (or stdout); not propagated to root.

    One destination per process: configuring again replaces the previous handler.
    """
    close_audit_handlers()
    logger = logging.getLogger(AUDIT_LOGGER_NAME)
    handler: logging.Handler
    if log_file is None:
        handler = logging.StreamHandler(sys.stdout)
    else:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.WatchedFileHandler(log_file, encoding="utf-8")  # logrotate-safe
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


_STOP = object()


class AuditWriter:
    """A bounded queue in front of the audit logger, drained by one writer thread.

    ``submit(**fields)`` (the arguments of :func:`audit_line`) costs one queue put on the caller's
    thread; the wall-clock time is taken there, the JSON is built and written on the writer thread.
    A full queue drops the line and counts it. ``close()`` writes what is queued, then stops.
    """

    def __init__(self, logger: logging.Logger, max_pending: int = 10_000) -> None:
        self.logger = logger
        self.max_pending = max_pending
        self.dropped = 0
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._drain, name="healthai-audit", daemon=True)
        self._thread.start()

    def submit(self, **fields: Any) -> None:
        if self._queue.qsize() >= self.max_pending:
            self.dropped += 1
            AUDIT_DROPPED.inc()
            return
        fields["ts"] = time.time()
        self._queue.put(fields)

    def close(self, timeout: float = 10.0) -> None:
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)

    def _drain(self) -> None:
        while (fields := self._queue.get()) is not _STOP:
            try:
                self.logger.info(audit_line(**fields))
            except Exception:  # a broken sink must not kill the writer; logging reports it
                logging.getLogger(__name__).exception("audit line could not be written")
