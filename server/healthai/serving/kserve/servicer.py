"""The KServe v2 / Triton gRPC protocol (``inference.GRPCInferenceService``) over the model manager.

Uses tritonclient's generated modules (a second ``inference`` proto could not share a process with
them). Servicers stay thin: convert, call the manager/scheduler, convert back; domain errors are
raised and mapped to statuses by the server's interceptor. The RPCs not implemented here (streaming,
shared memory, trace and log settings) answer UNIMPLEMENTED (``unimplemented.py``); ServerMetadata
advertises only the extensions whose RPCs are all served.
"""

from __future__ import annotations

import math
import sys
import time

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

import healthai
from healthai.errors import HealthAIError, InvalidInput, Unimplemented
from healthai.observability.context import note
from healthai.serving.forecast.card import check_infer_history
from healthai.serving.kserve.unimplemented import refuse_unimplemented
from healthai.serving.risk.task import check_infer_inputs
from healthai.serving.runtime.contract import InferRequest
from healthai.serving.runtime.manager import LoadedVersion, ModelManager
from healthai.serving.runtime.statistics import Counter
from healthai.serving.runtime.tensors import NUMPY_TO_V2, V2_TO_NUMPY, TensorSpec

SERVICE_NAME = "inference.GRPCInferenceService"
# Extension -> the RPCs it needs: advertised only because every one of them is implemented below.
EXTENSION_RPCS: dict[str, tuple[str, ...]] = {
    "model_repository": ("RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload"),
    "statistics": ("ModelStatistics",),
    "model_configuration": ("ModelConfig",),
}
EXTENSIONS = list(EXTENSION_RPCS)
COMPUTE = ("compute_input", "compute_infer", "compute_output")
LITTLE_ENDIAN = sys.byteorder == "little"  # wire tensors are little-endian: no conversion needed here
MAX_DIM = 2**31 - 1  # no real tensor dim is larger; bigger ones are refused before any arithmetic

# KServe v2 datatype -> the typed ``contents`` field that carries it.
CONTENTS_FIELD = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
    "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


def _parse_version(text: str, model: str) -> int:
    if not text:
        return 0
    if not text.isdigit():
        raise InvalidInput(f"model_version {text!r} of model {model!r} is not a positive integer",
                           field="model_version")
    return int(text)


def decode_inputs(request: service_pb2.ModelInferRequest, specs: list[TensorSpec],
                  max_batch_size: int) -> dict[str, np.ndarray]:
    """Typed ``contents`` or ``raw_input_contents`` -> checked numpy arrays (InvalidInput otherwise)."""
    by_name = {s.name: s for s in specs}
    if request.raw_input_contents and len(request.raw_input_contents) != len(request.inputs):
        raise InvalidInput(f"raw_input_contents has {len(request.raw_input_contents)} entries for "
                           f"{len(request.inputs)} inputs", field="raw_input_contents")
    arrays: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(request.inputs):
        field = f"inputs[{i}]({tensor.name})"
        spec = by_name.get(tensor.name)
        if spec is None:
            raise InvalidInput(f"{field}: unknown input {tensor.name!r}; the model takes {sorted(by_name)}",
                               field=field)
        if tensor.name in arrays:
            raise InvalidInput(f"{field}: input {tensor.name!r} given twice", field=field)
        dtype = V2_TO_NUMPY.get(tensor.datatype)
        if dtype is None:
            raise InvalidInput(f"{field}: datatype {tensor.datatype!r} is not supported", field=field)
        shape = tuple(tensor.shape)
        if any(d < 0 for d in shape):
            raise InvalidInput(f"{field}: negative dim in shape {list(shape)}", field=field)
        if any(d > MAX_DIM for d in shape):
            raise InvalidInput(f"{field}: a dim of shape {list(shape)} is over {MAX_DIM}", field=field)
        count = math.prod(shape)  # Python ints: no int64 overflow
        if request.raw_input_contents:
            if tensor.HasField("contents"):
                raise InvalidInput(f"{field}: both contents and raw_input_contents given", field=field)
            raw = request.raw_input_contents[i]
            if len(raw) != count * dtype.itemsize:
                raise InvalidInput(f"{field}: raw_input_contents[{i}] has {len(raw)} bytes; shape "
                                   f"{list(shape)} of {tensor.datatype} needs {count * dtype.itemsize}",
                                   field=field)
            array = np.frombuffer(raw, dtype=dtype) if LITTLE_ENDIAN else \
                np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype)
        else:
            name = CONTENTS_FIELD.get(tensor.datatype)
            if name is None:
                raise InvalidInput(f"{field}: {tensor.datatype} travels only in raw_input_contents",
                                   field=field)
            values = getattr(tensor.contents, name)
            if len(values) != count:
                raise InvalidInput(f"{field}: contents has {len(values)} values; shape {list(shape)} "
                                   f"needs {count}", field=field)
            array = np.asarray(values, dtype=dtype)
        array = array.reshape(shape)
        spec.check(array, field=field, max_batch_size=max_batch_size)
        arrays[tensor.name] = array
    missing = sorted(set(by_name) - set(arrays))
    if missing:
        raise InvalidInput(f"inputs: missing {missing}", field="inputs")
    if len(arrays) > 1 and specs[0].batched and len({a.shape[0] for a in arrays.values()}) > 1:
        raise InvalidInput("inputs: batch dims differ between inputs", field="inputs")
    return arrays


def _check_repository(name: str, manager: ModelManager) -> None:
    if name and name != manager.root.name:
        raise InvalidInput(f"repository_name {name!r} is not served here (the repository is "
                           f"{manager.root.name!r}; leave it empty)", field="repository_name")


@refuse_unimplemented
class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager

    def _resolve(self, name: str, version: str) -> LoadedVersion:
        return self.manager.resolve(name, _parse_version(version, name))

    async def ServerLive(self, request, context):
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return service_pb2.ServerReadyResponse(ready=self.manager.started)

    async def ModelReady(self, request, context):
        try:
            loaded = self._resolve(request.name, request.version)
        except HealthAIError:  # unknown, refused or still loading: not ready
            return service_pb2.ModelReadyResponse(ready=False)
        return service_pb2.ModelReadyResponse(ready=loaded.runtime.is_ready())

    async def ServerMetadata(self, request, context):
        return service_pb2.ServerMetadataResponse(name="healthai", version=healthai.__version__,
                                                  extensions=EXTENSIONS)

    async def ModelMetadata(self, request, context):
        loaded = self._resolve(request.name, request.version)
        rt = loaded.runtime

        def meta(s: TensorSpec) -> service_pb2.ModelMetadataResponse.TensorMetadata:
            return service_pb2.ModelMetadataResponse.TensorMetadata(
                name=s.name, datatype=s.v2_datatype, shape=s.full_shape())

        return service_pb2.ModelMetadataResponse(
            name=rt.name, versions=[str(v.version) for v in self.manager.ready_versions(rt.name)],
            platform="onnxruntime_onnx", inputs=[meta(s) for s in rt.inputs],
            outputs=[meta(s) for s in rt.outputs])

    async def ModelConfig(self, request, context):
        loaded = self._resolve(request.name, request.version)
        return service_pb2.ModelConfigResponse(config=loaded.runtime.config)

    async def ModelInfer(self, request, context):
        loaded = self._resolve(request.model_name, request.model_version)
        rt = loaded.runtime
        arrived = time.perf_counter_ns()
        try:
            inputs = decode_inputs(request, rt.inputs, rt.config.max_batch_size)
            check_infer_inputs(loaded, inputs)
            check_infer_history(loaded, inputs)
            wanted = _wanted_outputs(request, rt.outputs)
        except HealthAIError:  # refused before queueing: still a failed request of this model
            loaded.scheduler.stats.record_failure(arrived)
            raise
        infer_request = InferRequest(inputs, outputs=wanted)
        note(rows=infer_request.rows, inputs=len(inputs))  # the audit line's counts
        result = await loaded.scheduler.infer(infer_request, timeout=context.time_remaining())
        response = service_pb2.ModelInferResponse(model_name=rt.name, model_version=str(rt.version),
                                                  id=request.id)
        for name, array in result.items():
            array = np.ascontiguousarray(array)
            response.outputs.add(name=name, datatype=NUMPY_TO_V2[array.dtype], shape=list(array.shape))
            little = array.dtype.byteorder == "<" or (array.dtype.byteorder in "=|" and LITTLE_ENDIAN)
            response.raw_output_contents.append(
                array.tobytes() if little else array.astype(array.dtype.newbyteorder("<")).tobytes())
        return response

    async def ModelStatistics(self, request, context):
        if request.name:
            targets = [self._resolve(request.name, request.version)] if request.version else \
                self.manager.ready_versions(request.name)
            if not targets:
                self._resolve(request.name, "")  # raises NotFound / NotReady
        else:
            targets = [v for n in self.manager.model_names() for v in self.manager.ready_versions(n)]
        response = service_pb2.ModelStatisticsResponse()
        for loaded in targets:
            s = loaded.scheduler.stats
            stat = response.model_stats.add(
                name=loaded.name, version=str(loaded.version), last_inference=s.last_inference_ms,
                inference_count=s.inference_count, execution_count=s.execution_count)
            for key in ("success", "fail", "queue", *COMPUTE):
                _copy(getattr(s, key), getattr(stat.inference_stats, key))
            for size, batch in sorted(s.batch_stats.items()):
                b = stat.batch_stats.add(batch_size=size)
                for key in COMPUTE:
                    _copy(getattr(batch, key), getattr(b, key))
        return response

    async def RepositoryModelLoad(self, request, context):
        _check_repository(request.repository_name, self.manager)
        for key in request.parameters:
            if key == "config" or key.startswith("file:"):
                raise Unimplemented(f"parameters[{key!r}]: overriding the repository's config or files "
                                    "is not supported; change the model repository and load again")
            raise InvalidInput(f"parameters[{key!r}]: unknown load parameter", field=f"parameters[{key}]")
        await self.manager.load_model(_model_name(request.model_name))
        return service_pb2.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request, context):
        _check_repository(request.repository_name, self.manager)
        for key in request.parameters:
            if key != "unload_dependents":  # accepted: no model here has dependents
                raise InvalidInput(f"parameters[{key!r}]: unknown unload parameter",
                                   field=f"parameters[{key}]")
        await self.manager.unload_model(_model_name(request.model_name))
        return service_pb2.RepositoryModelUnloadResponse()

    async def RepositoryIndex(self, request, context):
        _check_repository(request.repository_name, self.manager)
        entries = self.manager.index()
        if request.ready:
            entries = [e for e in entries if e.state == "READY"]
        return service_pb2.RepositoryIndexResponse(models=[
            service_pb2.RepositoryIndexResponse.ModelIndex(name=e.name, version=str(e.version),
                                                           state=e.state, reason=e.reason)
            for e in entries])


def _copy(counter: Counter, duration: service_pb2.StatisticDuration) -> None:
    duration.count, duration.ns = counter.count, counter.ns


def _wanted_outputs(request: service_pb2.ModelInferRequest, outputs: list[TensorSpec]) -> tuple[str, ...]:
    if not request.outputs:
        return ()
    known = {s.name for s in outputs}
    wanted = tuple(o.name for o in request.outputs)
    for i, name in enumerate(wanted):
        if name not in known:
            raise InvalidInput(f"outputs[{i}]: unknown output {name!r}; the model has {sorted(known)}",
                               field=f"outputs[{i}]")
    return wanted


def _model_name(name: str) -> str:
    if not name:
        raise InvalidInput("model_name is required", field="model_name")
    return name


def add_to_server(servicer: InferenceServicer, server: grpc.aio.Server) -> None:
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
