"""Domain errors: one base class carrying a gRPC status code and a message.

Every layer raises these; one server interceptor maps them to gRPC statuses. Messages name the
field and the offending value — never a patient identifier.
"""

from __future__ import annotations

import grpc


class HealthAIError(Exception):
    """Base class: ``code`` is the gRPC status the interceptor returns, ``message`` its details."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(HealthAIError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(HealthAIError):
    code = grpc.StatusCode.NOT_FOUND


class NotReady(HealthAIError):
    code = grpc.StatusCode.UNAVAILABLE


class Overloaded(HealthAIError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class TooLarge(HealthAIError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unauthenticated(HealthAIError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(HealthAIError):
    code = grpc.StatusCode.PERMISSION_DENIED
