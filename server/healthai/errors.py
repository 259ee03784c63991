"""Domain errors: one base class carrying a gRPC status code and a message.

Every layer raises these; one server interceptor maps them to gRPC statuses. Messages name the
field and the offending value — never a patient identifier.
"""

from __future__ import annotations

import traceback

import grpc


class HealthAIError(Exception):
    """Base class: ``code`` is the gRPC status the interceptor returns, ``message`` its details."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InternalError(HealthAIError):
    """Our own bug or an unexpected failure: never the caller's fault; the message carries an
    incident id, the details are logged (without exception messages, which may quote input)."""

    code = grpc.StatusCode.INTERNAL


class InvalidInput(HealthAIError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class InputFileError(InvalidInput, ValueError):
    """A bad input file or setting given to a command (training data, a history file); ``field``
    names what was wrong and the message the file, row and column."""


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


class DeadlineExceeded(HealthAIError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unimplemented(HealthAIError):
    code = grpc.StatusCode.UNIMPLEMENTED


class FailedPrecondition(HealthAIError):
    code = grpc.StatusCode.FAILED_PRECONDITION


def stack_summary(exc: BaseException) -> str:
    """Frames and exception types of ``exc`` and its causes, without messages or locals: an
    unexpected error's message may quote input data, and logs never carry patient data."""
    lines: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        lines.append(f"{type(current).__name__} raised at:")
        lines.extend(f"  {f.filename}:{f.lineno} in {f.name}"
                     for f in traceback.extract_tb(current.__traceback__))
        current = current.__cause__ or current.__context__
    return "\n".join(lines)
