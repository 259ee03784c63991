"""The Triton backend: the model runtime contract (see ``contract.py``) executed by a Triton Inference
Server over its gRPC protocol (KServe v2, ``tritonclient.grpc``) instead of an in-process ONNX Runtime
session. It only runs models (``run``); ``execute`` is the shared ``BatchExecutor``.

The model repository stays readable here (model cards, region graphs, config.pbtxt); Triton serves
the same repository (prepared with ``healthai triton prepare``) and runs the models. ``load`` checks
that Triton has the version ready and that its inputs/outputs agree with the local config;
``run`` sends one ModelInfer per model run (split into chunks of Triton's ``max_batch_size``) with
raw binary tensors, and maps Triton's statuses to domain errors.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tritonclient.grpc as triton
from tritonclient.grpc import model_config_pb2, service_pb2
from tritonclient.utils import InferenceServerException

from healthai.errors import DeadlineExceeded, HealthAIError, InternalError, InvalidInput, NotReady, Overloaded
from healthai.serving.runtime.contract import InferRequest, InferResult
from healthai.serving.runtime.executor import BatchExecutor
from healthai.serving.runtime.repository import RepositoryError, VersionDir
from healthai.serving.runtime.tensors import V2_TO_NUMPY, TensorSpec, specs_from_config

log = logging.getLogger(__name__)


class TritonNotReachable(RepositoryError):
    """load() could not reach Triton, or Triton does not have the version ready: worth retrying on a
    later repository scan (unlike a plain RepositoryError, which means the version is incompatible)."""


class TritonUnavailable(NotReady):
    """Triton could not be reached or does not have the model version ready (UNAVAILABLE)."""


# Triton's gRPC status -> the domain error this server answers with.
_STATUS_ERRORS: dict[str, type[HealthAIError]] = {
    "StatusCode.INVALID_ARGUMENT": InvalidInput,
    "StatusCode.UNAVAILABLE": TritonUnavailable,
    "StatusCode.NOT_FOUND": TritonUnavailable,  # the model vanished from Triton: not ready here
    "StatusCode.RESOURCE_EXHAUSTED": Overloaded,
    "StatusCode.DEADLINE_EXCEEDED": DeadlineExceeded,
}
_RETRY_LATER = {"StatusCode.UNAVAILABLE", "StatusCode.NOT_FOUND", "StatusCode.DEADLINE_EXCEEDED"}


def _specs_from_metadata(meta: service_pb2.ModelMetadataResponse,
                         batched: bool) -> tuple[list[TensorSpec], list[TensorSpec]]:
    def spec(t: service_pb2.ModelMetadataResponse.TensorMetadata) -> TensorSpec:
        dtype = V2_TO_NUMPY.get(t.datatype)
        if dtype is None:
            raise RepositoryError(f"Triton tensor {t.name!r} has unsupported datatype {t.datatype}")
        shape = tuple(int(d) for d in t.shape)
        return TensorSpec(t.name, dtype, shape[1:] if batched else shape, batched)

    return [spec(t) for t in meta.inputs], [spec(t) for t in meta.outputs]


class TritonModel:
    """One version of one model, executed by a Triton server at ``url`` (host:port of its gRPC)."""

    def __init__(self, version_dir: VersionDir, config: model_config_pb2.ModelConfig, *, url: str,
                 timeout_s: float = 30.0, ready_wait_s: float = 10.0) -> None:
        self.name = version_dir.model
        self.version = version_dir.version
        self.dir = version_dir
        self.config = model_config_pb2.ModelConfig()
        self.config.CopyFrom(config)
        self.url = url
        self.timeout_s = timeout_s
        # A new version appears here and on Triton (model-control-mode=poll) at about the same time;
        # while Triton is live but not yet ready with it, load() waits this long before refusing.
        self.ready_wait_s = ready_wait_s
        self.inputs: list[TensorSpec] = []
        self.outputs: list[TensorSpec] = []
        self.model_file = Path(f"triton@{url}")  # what the manager logs as "ready (...)"
        self.uses_custom_ops = False  # decided by Triton's config (model_operations), not here
        self.max_rows = 0  # Triton's max_batch_size: batches are sent in chunks of at most this
        self._client: triton.InferenceServerClient | None = None
        self._executor = BatchExecutor(self)

    # -- contract -------------------------------------------------------------------------------
    def load(self) -> None:
        """Connects and checks Triton's copy of the model; RepositoryError when absent or different."""
        client = triton.InferenceServerClient(self.url)
        where = f"Triton at {self.url}: model {self.name!r} version {self.version}"
        try:
            if not self._wait_ready(client):
                raise TritonNotReachable(f"{where} is not ready there (waited {self.ready_wait_s:g} s)")
            version = str(self.version)
            meta = client.get_model_metadata(self.name, version, client_timeout=self.timeout_s)
            remote = client.get_model_config(self.name, version, client_timeout=self.timeout_s).config
            batched = self.config.max_batch_size > 0
            if (remote.max_batch_size > 0) != batched:
                raise RepositoryError(f"{where}: max_batch_size {remote.max_batch_size} there but "
                                      f"{self.config.max_batch_size} in the local config.pbtxt")
            got_in, got_out = _specs_from_metadata(meta, batched)
            if self.config.input or self.config.output:
                try:
                    want_in, want_out = specs_from_config(self.config)
                except ValueError as exc:
                    raise RepositoryError(f"{self.dir.path}: {exc}") from exc
                _check_same(where, "input", want_in, got_in)
                _check_same(where, "output", want_out, got_out)
            else:  # auto-complete the local config from Triton's metadata
                want_in, want_out = got_in, got_out
                for spec in got_in:
                    self.config.input.add().CopyFrom(spec.to_input_config())
                for spec in got_out:
                    self.config.output.add().CopyFrom(spec.to_output_config())
        except InferenceServerException as exc:
            client.close()
            retry_later = str(exc.status()) in _RETRY_LATER or exc.status() is None
            error = TritonNotReachable if retry_later else RepositoryError
            raise error(f"{where}: {exc.message()}") from exc
        except RepositoryError:
            client.close()
            raise
        self.inputs, self.outputs = want_in, want_out
        self.max_rows = int(remote.max_batch_size)
        self._client = client

    def is_ready(self) -> bool:
        return self._client is not None

    def _wait_ready(self, client: triton.InferenceServerClient) -> bool:
        """Whether Triton has this version ready, polling up to ``ready_wait_s``; an unreachable
        Triton raises at once (InferenceServerException)."""
        deadline = time.monotonic() + self.ready_wait_s
        while True:
            if client.is_model_ready(self.name, str(self.version), client_timeout=self.timeout_s):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)

    def unload(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def warm(self) -> None:
        """One execution on zeros (every dynamic dim = 1): proves the round trip before serving."""
        feeds = {s.name: np.zeros([1 if d < 0 else d for d in s.full_shape()], s.dtype) for s in self.inputs}
        result = self.execute([InferRequest(feeds)])[0]
        if isinstance(result, HealthAIError):
            error = TritonNotReachable if isinstance(result, TritonUnavailable) else RepositoryError
            raise error(f"{self.dir.path}: warm-up execution on Triton failed: {result.message}")

    def execute(self, batch: Sequence[InferRequest]) -> list[InferResult | HealthAIError]:
        return self._executor.execute(batch)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._infer(feeds)

    # -- helpers --------------------------------------------------------------------------------
    def _infer(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs (in ``self.outputs`` order) for the feeds; rows over Triton's max_batch_size are
        sent as several requests. Raises the domain error matching Triton's status."""
        batched = self.config.max_batch_size > 0
        rows = len(next(iter(feeds.values()))) if batched else 1
        step = self.max_rows if batched and self.max_rows > 0 else max(rows, 1)
        parts = [self._infer_once({k: v[i:i + step] for k, v in feeds.items()} if batched else feeds)
                 for i in range(0, max(rows, 1), step)]
        if len(parts) == 1:
            return parts[0]
        return [np.concatenate([p[j] for p in parts]) for j in range(len(self.outputs))]

    def _infer_once(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        client = self._client
        if client is None:
            raise NotReady(f"model {self.name!r} version {self.version} is not loaded")
        inputs = []
        for spec in self.inputs:
            array = np.ascontiguousarray(feeds[spec.name], dtype=spec.dtype)
            tensor = triton.InferInput(spec.name, list(array.shape), spec.v2_datatype)
            tensor.set_data_from_numpy(array)  # sent as raw_input_contents
            inputs.append(tensor)
        wanted = [triton.InferRequestedOutput(s.name) for s in self.outputs]
        try:
            result = client.infer(self.name, inputs, model_version=str(self.version), outputs=wanted,
                                  client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            error = _STATUS_ERRORS.get(str(exc.status()), InternalError)
            message = (exc.message() or "").removeprefix("[StatusCode.INVALID_ARGUMENT] ")
            raise error(f"Triton at {self.url} ({self.name} v{self.version}): {message[:300]}") from exc
        outputs = []
        for spec in self.outputs:
            array = result.as_numpy(spec.name)
            if array is None:
                raise InternalError(f"Triton at {self.url} returned no output {spec.name!r}")
            outputs.append(array)
        return outputs


def _check_same(where: str, kind: str, want: list[TensorSpec], got: list[TensorSpec]) -> None:
    got_by_name = {s.name: s for s in got}
    if kind == "input" and sorted(got_by_name) != sorted(s.name for s in want):
        raise RepositoryError(f"{where}: inputs {sorted(got_by_name)} there but "
                              f"{sorted(s.name for s in want)} in the local config.pbtxt")
    for spec in want:
        remote = got_by_name.get(spec.name)
        if remote is None:
            raise RepositoryError(f"{where}: has no {kind} {spec.name!r} (it has {sorted(got_by_name)})")
        if remote.dtype != spec.dtype or not spec.compatible_dims(remote.dims):
            raise RepositoryError(f"{where}: {kind} {spec.name!r} is {remote.v2_datatype} "
                                  f"{list(remote.dims)} there but {spec.v2_datatype} {list(spec.dims)} "
                                  f"in the local config.pbtxt")
