"""Per-call facts that servicers add for the audit line: ``note(records=..., patients=...)``.

The observability interceptor opens a record per RPC; anything in the servicer's call path (same
task) can add counts to it. Only integer counts are accepted — the audit line can then never carry
a name, identifier or date by accident.
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from dataclasses import dataclass, field

_COUNT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


@dataclass(slots=True)
class CallRecord:
    method: str
    request_id: str
    counts: dict[str, int] = field(default_factory=dict)


_current: ContextVar[CallRecord | None] = ContextVar("healthai_call_record", default=None)


def note(**counts: int) -> None:
    """Add counts to the current call's audit line, e.g. ``note(records=120, patients=37)``.

    Repeated calls add up (a streaming RPC can note per message). Outside an RPC this does nothing.
    Names are lowercase identifiers; values non-negative ints (TypeError/ValueError otherwise).
    """
    record = _current.get()
    for name, value in counts.items():
        if not _COUNT_NAME.match(name):
            raise ValueError(f"audit count name {name!r} must match {_COUNT_NAME.pattern}")
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"audit count {name} must be an int, got {type(value).__name__}")
        if value < 0:
            raise ValueError(f"audit count {name}={value} must be >= 0")
        if record is not None:
            record.counts[name] = record.counts.get(name, 0) + value


def request_id() -> str | None:
    """The current call's request id (from ``x-request-id`` metadata, or generated)."""
    record = _current.get()
    return record.request_id if record is not None else None


def current_record() -> CallRecord | None:
    return _current.get()


def open_record(record: CallRecord) -> None:
    _current.set(record)
