"""Per-client authorization: API key → client identity → scope of the called method.

Missing or invalid key → UNAUTHENTICATED; valid key without the method's scope → PERMISSION_DENIED
(the codes of ``healthai.errors.Unauthenticated`` / ``PermissionDenied``); services and methods in
``open_services`` (health, reflection, KServe ServerLive/ServerReady/ModelReady by default) need no
key. Keys are read from the ``authorization: Bearer <key>`` metadata entry (``x-api-key: <key>`` is
accepted too).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc

from healthai.errors import PermissionDenied, Unauthenticated
from healthai.security.handlers import aborting_handler, wrap_handler
from healthai.security.identity import set_current_client
from healthai.security.keys import ApiKeyStore, ClientIdentity
from healthai.security.settings import SecuritySettings


def presented_key(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if isinstance(value, bytes):
            continue
        if key == "authorization":
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif key == "x-api-key" and value.strip():
            return value.strip()
    return None


class _SetIdentity:
    __slots__ = ("identity",)

    def __init__(self, identity: ClientIdentity) -> None:
        self.identity = identity

    def start(self, context: grpc.aio.ServicerContext) -> None:
        set_current_client(self.identity)

    def finish(self, state: None, context: grpc.aio.ServicerContext, error: BaseException | None) -> None:
        return None


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, settings: SecuritySettings) -> None:
        if settings.api_keys_file is None:
            raise ValueError("AuthInterceptor needs settings.api_keys_file")
        self.store = ApiKeyStore(settings.api_keys_file)
        self._open = frozenset(settings.open_services)
        self._scopes = dict(settings.method_scopes)
        self._cache: dict[str, str | None] = {}

    def required_scope(self, method: str) -> str | None:
        """Scope needed for ``/pkg.Service/Method``; None for open services. Unlisted → 'admin'."""
        if method in self._cache:
            return self._cache[method]
        service_method = method.lstrip("/")
        service = service_method.partition("/")[0]
        if service in self._open or service_method in self._open:
            scope = None
        else:
            scope = self._scopes.get(service_method) or self._scopes.get(service) or "admin"
        if len(self._cache) < 4096:  # method names come from clients: bound the cache
            self._cache[method] = scope
        return scope

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        scope = self.required_scope(method)
        if scope is None:
            return handler
        try:
            identity = self.store.authenticate(presented_key(handler_call_details.invocation_metadata))
        except Unauthenticated as exc:
            return aborting_handler(handler, exc)
        if scope not in identity.scopes:
            denied = PermissionDenied(
                f"client {identity.client!r} lacks scope {scope!r} needed for {method.lstrip('/')}")
            return wrap_handler(aborting_handler(handler, denied), _SetIdentity(identity))
        return wrap_handler(handler, _SetIdentity(identity))
