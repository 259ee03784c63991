"""The model runtime contract and its ONNX Runtime implementation.

Contract (like Triton's python backend): ``load()`` / ``is_ready()`` / ``execute(batch)`` /
``unload()``. ``execute`` takes the requests of one batch and returns, in order, one result (output
name -> array) or one :class:`HealthAIError` per request, so one bad request never fails its batch.
``execute`` blocks (it runs ONNX Runtime) and is called from a thread pool, never the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnx
import onnxruntime as ort
from tritonclient.grpc import model_config_pb2

from healthai.errors import HealthAIError, InvalidInput, NotReady
from healthai.serving.repository import RepositoryError, VersionDir
from healthai.serving.tensors import TensorSpec, specs_from_config, specs_from_session

log = logging.getLogger(__name__)

CUSTOM_DOMAIN = "healthai"
MODEL_FILE = "model.onnx"
STANDARD_MODEL_FILE = "model.standard.onnx"


class BatchTask(Protocol):
    """Batch-level pre/post-processing around one ONNX Runtime run, executed on the worker thread
    (vectorized over every request of the batch that carries the same task)."""

    def run(self, run: Callable[[dict[str, np.ndarray]], list[np.ndarray]],
            requests: Sequence[InferRequest]) -> list[InferResult | HealthAIError]: ...


@dataclass(eq=False)
class InferRequest:
    """One request's inputs; ``batch_size`` is what the batcher counts (rows unless a caller says).
    ``task`` (optional) turns inputs into feeds and outputs into results for a whole batch."""

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


InferResult = dict[str, np.ndarray]


class ModelRuntime(Protocol):
    name: str
    version: int
    config: model_config_pb2.ModelConfig
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def load(self) -> None: ...
    def is_ready(self) -> bool: ...
    def execute(self, batch: Sequence[InferRequest]) -> list[InferResult | HealthAIError]: ...
    def unload(self) -> None: ...


def custom_ops_library() -> Path | None:
    """Path of our ONNX Runtime custom-op library, or None when it is not built/importable."""
    try:
        from healthai import ops

        path = Path(ops.ort_library_path())
    except (ImportError, AttributeError, OSError, RuntimeError) as exc:
        log.debug("custom-op library unavailable: %s", exc)
        return None
    return path if path.is_file() else None


def uses_custom_domain(path: Path) -> bool:
    """Whether an ONNX file imports our custom op domain (needs the op library)."""
    model = onnx.load(str(path), load_external_data=False)
    return any(op.domain == CUSTOM_DOMAIN for op in model.opset_import)


def providers(use_cuda: bool) -> list[str]:
    available = ort.get_available_providers()
    chosen = ["CUDAExecutionProvider"] if use_cuda and "CUDAExecutionProvider" in available else []
    return [*chosen, "CPUExecutionProvider"]


class OnnxModel:
    """One version of one model, run by an ONNX Runtime session."""

    def __init__(self, version_dir: VersionDir, config: model_config_pb2.ModelConfig, *,
                 intra_op_threads: int = 1, use_cuda: bool = True) -> None:
        self.name = version_dir.model
        self.version = version_dir.version
        self.dir = version_dir
        self.config = model_config_pb2.ModelConfig()
        self.config.CopyFrom(config)
        self.intra_op_threads = intra_op_threads
        self.use_cuda = use_cuda
        self.inputs: list[TensorSpec] = []
        self.outputs: list[TensorSpec] = []
        self.model_file: Path | None = None
        self.uses_custom_ops = False
        self._session: ort.InferenceSession | None = None
        self._output_names: list[str] = []

    # -- contract -------------------------------------------------------------------------------
    def load(self) -> None:
        """Opens the session, checks it against config.pbtxt; RepositoryError when incompatible."""
        path, library = self._choose_file()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.intra_op_threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        if library is not None:
            opts.register_custom_ops_library(str(library))
        try:
            session = ort.InferenceSession(str(path), opts, providers=providers(self.use_cuda))
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types
            raise RepositoryError(f"{path}: ONNX Runtime cannot load it "
                                  f"({type(exc).__name__}: {exc})") from exc
        try:
            got_in, got_out = specs_from_session(session, self.config.max_batch_size > 0)
            want_in, want_out = specs_from_config(self.config)
        except ValueError as exc:
            raise RepositoryError(f"{path}: {exc}") from exc
        if self.config.input or self.config.output:
            _check_compatible("input", want_in, got_in, path)
            _check_compatible("output", want_out, got_out, path)
            self.inputs, self.outputs = want_in, want_out
        else:  # auto-complete the config from the model, like Triton's ONNX backend
            self.inputs, self.outputs = got_in, got_out
            for spec in got_in:
                self.config.input.add().CopyFrom(spec.to_input_config())
            for spec in got_out:
                self.config.output.add().CopyFrom(spec.to_output_config())
        self.model_file = path
        self.uses_custom_ops = library is not None
        self._output_names = [s.name for s in self.outputs]
        self._session = session

    def is_ready(self) -> bool:
        return self._session is not None

    def unload(self) -> None:
        self._session = None  # running executions keep their reference; ORT frees it after them

    def execute(self, batch: Sequence[InferRequest]) -> list[InferResult | HealthAIError]:
        session = self._session
        if session is None:
            return [NotReady(f"model {self.name!r} version {self.version} is not loaded")] * len(batch)
        if len(batch) == 1 and batch[0].task is not None:  # the common lone request: no grouping
            return self._run_task(session, batch)
        if any(r.task is not None for r in batch):
            return self._execute_tasks(session, batch)
        if len(batch) == 1:
            return [self._run_one(session, batch[0])]
        try:
            feeds = {s.name: np.concatenate([r.inputs[s.name] for r in batch]) for s in self.inputs}
            outputs = session.run(self._output_names, feeds)
        except Exception as exc:  # the batch failed as a whole: find the request(s) at fault
            log.info("batch of %d on %s v%d failed (%s); running its requests one by one",
                     len(batch), self.name, self.version, type(exc).__name__)
            return [self._run_one(session, r) for r in batch]
        results: list[InferResult | HealthAIError] = []
        start = 0
        for r in batch:
            stop = start + r.rows
            results.append(self._select(r, [o[start:stop] for o in outputs]))
            start = stop
        return results

    def _execute_tasks(self, session: ort.InferenceSession,
                       batch: Sequence[InferRequest]) -> list[InferResult | HealthAIError]:
        """Requests grouped by task (plain ones together); each group is one run."""
        groups: dict[int, list[int]] = {}
        for i, r in enumerate(batch):
            groups.setdefault(id(r.task), []).append(i)
        results: list[InferResult | HealthAIError] = [HealthAIError("not executed")] * len(batch)
        for indices in groups.values():
            group = [batch[i] for i in indices]
            task = group[0].task
            outs = self.execute(group) if task is None else self._run_task(session, group)
            for i, out in zip(indices, outs, strict=True):
                results[i] = out
        return results

    def _run_task(self, session: ort.InferenceSession,
                  group: Sequence[InferRequest]) -> list[InferResult | HealthAIError]:
        """One run of the group's (shared) task; on failure, its requests one by one to find the culprit."""
        def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            return session.run(self._output_names, feeds)

        task = group[0].task
        assert task is not None
        try:
            return task.run(run, group)
        except Exception as exc:  # find the request(s) at fault
            if len(group) == 1:
                log.warning("%s v%d: execution failed: %s", self.name, self.version, type(exc).__name__)
                return [InvalidInput(f"model {self.name!r} rejected the input: {str(exc)[:300]}")]
            return [self._run_task(session, [r])[0] for r in group]

    def warm(self) -> None:
        """One execution on zeros (every dynamic dim = 1) so the first real call is not slow."""
        feeds = {s.name: np.zeros([1 if d < 0 else d for d in s.full_shape()], s.dtype) for s in self.inputs}
        result = self.execute([InferRequest(feeds)])[0]
        if isinstance(result, HealthAIError):
            raise RepositoryError(f"{self.dir.path}: warm-up execution failed: {result.message}")

    # -- helpers --------------------------------------------------------------------------------
    def _choose_file(self) -> tuple[Path, Path | None]:
        main = self.dir.path / MODEL_FILE
        standard = self.dir.path / STANDARD_MODEL_FILE
        if not main.is_file():
            raise RepositoryError(f"{self.dir.path}: no {MODEL_FILE}")
        try:
            needs_library = uses_custom_domain(main)
        except Exception as exc:  # onnx raises DecodeError and friends on a corrupt file
            raise RepositoryError(f"{main}: not a valid ONNX model ({type(exc).__name__}: {exc})") from exc
        if not needs_library:
            return main, None
        library = custom_ops_library()
        if library is not None:
            return main, library
        if standard.is_file():
            log.warning("%s v%d: custom-op library not available; serving the standard-opset variant %s",
                        self.name, self.version, standard.name)
            return standard, None
        raise RepositoryError(f"{main}: needs the healthai custom-op library, which is not available, "
                              f"and there is no {STANDARD_MODEL_FILE} fallback")

    def _run_one(self, session: ort.InferenceSession, request: InferRequest) -> InferResult | HealthAIError:
        try:
            outputs = session.run(self._output_names, {s.name: request.inputs[s.name] for s in self.inputs})
        except Exception as exc:
            log.warning("%s v%d: execution failed: %s", self.name, self.version, type(exc).__name__)
            return InvalidInput(f"model {self.name!r} rejected the input: {str(exc)[:300]}")
        return self._select(request, outputs)

    def _select(self, request: InferRequest, outputs: list[np.ndarray]) -> InferResult:
        named = {s.name: o for s, o in zip(self.outputs, outputs, strict=True)}
        if request.outputs:
            return {n: named[n] for n in request.outputs}
        return named


def _check_compatible(kind: str, want: list[TensorSpec], got: list[TensorSpec], path: Path) -> None:
    got_by_name = {s.name: s for s in got}
    unlisted = sorted(set(got_by_name) - {s.name for s in want})
    if kind == "input" and unlisted:
        raise RepositoryError(f"{path}: model inputs {unlisted} are not in config.pbtxt")
    for spec in want:
        actual = got_by_name.get(spec.name)
        if actual is None:
            raise RepositoryError(f"{path}: config.pbtxt {kind} {spec.name!r} is not in the model "
                                  f"(model has {sorted(got_by_name)})")
        if actual.dtype != spec.dtype:
            raise RepositoryError(f"{path}: {kind} {spec.name!r} is {actual.dtype} in the model but "
                                  f"{spec.dtype} in config.pbtxt")
        if not spec.compatible_dims(actual.dims):
            raise RepositoryError(f"{path}: {kind} {spec.name!r} has dims {list(actual.dims)} in the model "
                                  f"but {list(spec.dims)} in config.pbtxt")
