"""The model runtime contract (like Triton's python backend) and the request/result types.

A **backend** only runs a model: ``run(feeds) -> outputs`` for one set of input tensors (ONNX Runtime
in-process, or a Triton server). Around it, :class:`~healthai.serving.runtime.executor.BatchExecutor`
owns what every backend needs alike: grouping the requests of a batch, isolating a failing request,
and telling bad input from our own bugs. The scheduler sees the runtime contract ``load()`` /
``is_ready()`` / ``execute(batch)`` / ``unload()``, where ``execute`` returns, in order, one result
(output name -> array) or one :class:`HealthAIError` per request — one bad request never fails its
batch. ``execute`` blocks and runs off the event loop (except the measured-cheap inline path).

``run`` raises :class:`~healthai.errors.InvalidInput` when the model rejects the input,
another :class:`~healthai.errors.HealthAIError` for availability (not ready, overloaded, deadline),
and anything else only for a bug.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from tritonclient.grpc import model_config_pb2

from healthai.errors import HealthAIError
from healthai.serving.runtime.tensors import TensorSpec

InferResult = dict[str, np.ndarray]
RunModel = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


class BatchTask(Protocol):
    """Pre/post-processing around model runs for a group of requests (e.g. risk scoring with
    occlusion rows), vectorized over the group; ``run_model`` runs the backend once per call."""

    def run(self, run_model: RunModel,
            requests: Sequence[InferRequest]) -> list[InferResult | HealthAIError]: ...


@dataclass(eq=False)
class InferRequest:
    """One request's inputs; ``batch_size`` is what the scheduler counts (rows unless a caller says).
    ``task`` (optional) turns the group's inputs into feeds and outputs into results."""

    inputs: dict[str, np.ndarray]
    batch_size: int = 0
    outputs: tuple[str, ...] = ()  # empty = every output
    task: BatchTask | None = None
    params: dict[str, Any] = field(default_factory=dict)
    rows: int = field(init=False)

    def __post_init__(self) -> None:
        first = next(iter(self.inputs.values()))
        self.rows = int(first.shape[0]) if first.ndim else 1
        if self.batch_size <= 0:
            self.batch_size = self.rows


class ModelBackend(Protocol):
    """What runs one version of one model."""

    name: str
    version: int
    config: model_config_pb2.ModelConfig
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def load(self) -> None: ...
    def is_ready(self) -> bool: ...
    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...
    def unload(self) -> None: ...


class ModelRuntime(ModelBackend, Protocol):
    """A backend with its executor: what the scheduler drives."""

    def execute(self, batch: Sequence[InferRequest]) -> list[InferResult | HealthAIError]: ...
