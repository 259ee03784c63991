"""Transport security (TLS/mTLS) and per-client authorization (hashed API keys, scopes per RPC).

Wiring (with ``healthai.app.server.build_server``; see ``healthai.observability`` for the rest)::

    build_server(settings, plugins,
                 interceptors=[*obs.interceptors, *security.interceptors(settings.security)],
                 add_port=lambda server, address: security.add_port(server, address, settings.security))

The servicer of an authenticated call reads its caller with ``security.current_client()``.
"""

from __future__ import annotations

import grpc

from healthai.security.identity import current_client
from healthai.security.interceptor import AuthInterceptor
from healthai.security.keys import ApiKeyStore, ClientIdentity, new_key
from healthai.security.settings import SCOPES, SecuritySettings
from healthai.security.tls import add_port, server_credentials


def interceptors(settings: SecuritySettings) -> list[grpc.aio.ServerInterceptor]:
    """The auth interceptor when ``api_keys_file`` is set, else nothing (every call allowed)."""
    return [AuthInterceptor(settings)] if settings.auth_enabled else []


__all__ = [
    "SCOPES",
    "ApiKeyStore",
    "AuthInterceptor",
    "ClientIdentity",
    "SecuritySettings",
    "add_port",
    "current_client",
    "interceptors",
    "new_key",
    "server_credentials",
]
