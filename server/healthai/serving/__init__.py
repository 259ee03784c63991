"""Model serving: a Triton-layout model repository on ONNX Runtime, dynamic batching, and the Risk,
Forecast, KServe v2 and Diagnostics gRPC services. ``plugin(settings=..., surveillance=...)`` is what
the server process loads."""

from __future__ import annotations

from typing import Any


def plugin(*, settings: Any, surveillance: Any = None) -> Any:
    from healthai.serving.plugin import plugin as make

    return make(settings=settings, surveillance=surveillance)


__all__ = ["plugin"]
