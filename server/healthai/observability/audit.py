"""The audit log: one JSON line per RPC on the dedicated logger ``healthai.audit``.

Fields: ``ts`` (UTC), ``request_id``, ``caller`` (client name from the API key, or ``anonymous``),
``key_id``, ``peer`` (network address of the calling system), ``rpc`` (``pkg.Service/Method``),
``status`` (gRPC code name), ``latency_ms``, ``counts`` (integers noted by the servicer, e.g.
records/patients). Never request bodies, error details or metadata values other than the request
id — so no patient data can reach it. Clients must not put patient data in ``x-request-id``.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
from datetime import UTC, datetime
from pathlib import Path

import grpc

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
    """``healthai.audit`` writing bare JSON lines to ``log_file`` (or stderr); not propagated to root.

    One destination per process: configuring again replaces the previous handler.
    """
    close_audit_handlers()
    logger = logging.getLogger(AUDIT_LOGGER_NAME)
    handler: logging.Handler
    if log_file is None:
        handler = logging.StreamHandler(sys.stderr)
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
) -> str:
    stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return _encode(
        {
            "ts": stamp,
            "request_id": request_id,
            "caller": caller,
            "key_id": key_id,
            "peer": peer,
            "rpc": rpc,
            "status": status.name,
            "latency_ms": round(latency_s * 1000, 3),
            "counts": counts,
        },
    )
