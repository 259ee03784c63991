"""The ONNX Runtime backend: one model version in an in-process ``InferenceSession``.

The backend only runs the model (``run``); ``execute`` — grouping, failure isolation, bad input vs
bug — is the shared :class:`~healthai.serving.runtime.executor.BatchExecutor` (see ``contract.py``).
ONNX Runtime's ``InvalidArgument`` (wrong shape, type or rank for the model) is the caller's input;
any other ONNX Runtime failure is ours (INTERNAL, logged with an incident id).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument
from tritonclient.grpc import model_config_pb2

from healthai.errors import HealthAIError, InvalidInput, NotReady
from healthai.serving.runtime.contract import InferRequest, InferResult
from healthai.serving.runtime.executor import BatchExecutor
from healthai.serving.runtime.repository import RepositoryError, VersionDir
from healthai.serving.runtime.tensors import TensorSpec, specs_from_config, specs_from_session

log = logging.getLogger(__name__)

CUSTOM_DOMAIN = "healthai"
MODEL_FILE = "model.onnx"
STANDARD_MODEL_FILE = "model.standard.onnx"


def custom_ops_library() -> Path | None:
    """Path of our ONNX Runtime custom-op library, or None when it is not built/importable."""
    try:
        from healthai import ops

        path = ops.ort_library_path()
    except (ImportError, AttributeError, OSError, RuntimeError) as exc:
        log.debug("custom-op library unavailable: %s", exc)
        return None
    if path is None:  # not built (no ONNX Runtime headers at build time), or its file is gone
        return None
    path = Path(path)
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
        self._direct = False
        self._executor = BatchExecutor(self)

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
        # The public run() re-checks the feed's names and wraps the call for an execution-provider
        # fallback on every call (~5-10 µs, a third of a small model's run). Our feeds are built from
        # the specs checked above, and a CPU-only session has no fallback: call the binding directly.
        self._direct = session.get_providers() == ["CPUExecutionProvider"] and hasattr(session, "_sess")
        self._session = session

    def is_ready(self) -> bool:
        return self._session is not None

    def unload(self) -> None:
        self._session = None  # running executions keep their reference; ORT frees it after them

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One session run; InvalidInput when ONNX Runtime refuses the input, NotReady when unloaded."""
        session = self._session
        if session is None:
            raise NotReady(f"model {self.name!r} version {self.version} is not loaded")
        try:
            if self._direct:
                return session._sess.run(self._output_names, feeds, None)  # type: ignore[no-any-return]
            return session.run(self._output_names, feeds)
        except InvalidArgument as exc:
            raise InvalidInput(f"model {self.name!r} rejected the input: {str(exc)[:300]}") from exc

    def execute(self, batch: Sequence[InferRequest]) -> list[InferResult | HealthAIError]:
        return self._executor.execute(batch)

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
