"""Errors raised by the SDK: one class carrying the gRPC status code, the server's message and the
address that answered. ``retryable`` is true only for UNAVAILABLE (the only code the SDK retries)."""

from __future__ import annotations

import grpc

RETRYABLE_CODES: frozenset[grpc.StatusCode] = frozenset({grpc.StatusCode.UNAVAILABLE})


class HealthAIClientError(Exception):
    """A call failed with a gRPC status (after any retries the policy allowed)."""

    def __init__(self, code: grpc.StatusCode, message: str, *, address: str = "", attempts: int = 1) -> None:
        self.code = code
        self.message = message
        self.address = address
        self.attempts = attempts
        where = f" from {address}" if address else ""
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        super().__init__(f"{code.name}{where}{tries}: {message}")

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE_CODES

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError, *, address: str = "",
                       attempts: int = 1) -> HealthAIClientError:
        code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
        details = error.details() if isinstance(error, grpc.Call) else str(error)
        return cls(code or grpc.StatusCode.UNKNOWN, details or "", address=address, attempts=attempts)
