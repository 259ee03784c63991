"""The authenticated caller of the current RPC, for servicers and the audit log."""

from __future__ import annotations

from contextvars import ContextVar

from healthai.security.keys import ClientIdentity

_current: ContextVar[ClientIdentity | None] = ContextVar("healthai_client_identity", default=None)


def current_client() -> ClientIdentity | None:
    """Who is calling (set by the auth interceptor); None when auth is off or the method is open."""
    return _current.get()


def set_current_client(identity: ClientIdentity | None) -> None:
    _current.set(identity)
