"""The RPCs of ``inference.GRPCInferenceService`` this server does not implement: each answers
UNIMPLEMENTED with what to use instead (a domain error, so the interceptor logs it as an answer
given, not as an incident). Any RPC a newer tritonclient adds is covered the same way."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tritonclient.grpc import service_pb2_grpc

from healthai.errors import Unimplemented

_SHM = "shared-memory tensors are not supported: send tensors in the request (raw_input_contents)"
HINTS: dict[str, str] = {
    "ModelStreamInfer": "streaming inference is not supported: use ModelInfer",
    "SystemSharedMemoryStatus": _SHM,
    "SystemSharedMemoryRegister": _SHM,
    "SystemSharedMemoryUnregister": _SHM,
    "CudaSharedMemoryStatus": _SHM,
    "CudaSharedMemoryRegister": _SHM,
    "CudaSharedMemoryUnregister": _SHM,
    "TraceSetting": "trace settings are not exposed over the API: tracing is OpenTelemetry, configured "
                    "at start (HEALTHAI_OBSERVABILITY__TRACING_ENABLED)",
    "LogSettings": "log settings are not exposed over the API: set the log level at start (--log-level)",
}


def _refuse(name: str) -> Callable[..., Any]:
    hint = HINTS.get(name, "not supported by this server")
    message = f"inference.GRPCInferenceService/{name} is not implemented by healthai: {hint}"

    async def method(self: Any, request: Any, context: Any) -> Any:
        raise Unimplemented(message)

    method.__name__ = name
    method.__doc__ = message
    return method


def refuse_unimplemented(cls: type) -> type:
    """Class decorator: every RPC of the generated base servicer that ``cls`` does not define
    answers UNIMPLEMENTED with a clear message (instead of the base's NotImplementedError, which
    the interceptor would report as an internal error); their names go to ``cls.UNIMPLEMENTED``."""
    base = service_pb2_grpc.GRPCInferenceServiceServicer
    refused = [name for name, member in vars(base).items()
               if callable(member) and not name.startswith("_") and name not in vars(cls)]
    for name in refused:
        setattr(cls, name, _refuse(name))
    cls.UNIMPLEMENTED = tuple(sorted(refused))  # type: ignore[attr-defined]
    return cls
