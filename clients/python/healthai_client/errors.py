"""Errors raised by the SDK: one class carrying the gRPC status code, the server's message and the
address that answered. ``retryable`` is true only for UNAVAILABLE (the only code the SDK retries)."""

from __future__ import annotations

from typing import Any

import grpc

RETRYABLE_CODES: frozenset[grpc.StatusCode] = frozenset({grpc.StatusCode.UNAVAILABLE})


class HealthAIClientError(Exception):
    """A call failed with a gRPC status (after any retries the policy allowed): ``code`` (a
    ``grpc.StatusCode``), ``message`` (the server's), ``address`` (that answered) and ``attempts``.
    Picklable, so it crosses process boundaries (ProcessPoolExecutor, multiprocessing) intact."""

    def __init__(self, code: grpc.StatusCode, message: str, *, address: str = "", attempts: int = 1) -> None:
        self.code = code
        self.message = message
        self.address = address
        self.attempts = attempts
        where = f" from {address}" if address else ""
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        super().__init__(f"{code.name}{where}{tries}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception pickles as cls(*args) with args = (the formatted text,): rebuild from the fields
        # (the code by name: a StatusCode pickles by value, a tuple, in some grpcio versions)
        return _rebuild, (type(self), self.code.name, self.message, self.address, self.attempts)

    @property
    def retryable(self) -> bool:
        """True only for UNAVAILABLE: the call reached no working server, so trying again may succeed."""
        return self.code in RETRYABLE_CODES

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError, *, address: str = "",
                       attempts: int = 1) -> HealthAIClientError:
        code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
        details = error.details() if isinstance(error, grpc.Call) else str(error)
        return cls(code or grpc.StatusCode.UNKNOWN, details or "", address=address, attempts=attempts)


def _rebuild(cls: type[HealthAIClientError], code: str, message: str, address: str,
             attempts: int) -> HealthAIClientError:
    return cls(grpc.StatusCode[code], message, address=address, attempts=attempts)
