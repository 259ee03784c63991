"""Tensor specs and dtype names across numpy, ONNX Runtime, Triton config and the KServe v2 protocol."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
from tritonclient.grpc import model_config_pb2

from healthai.errors import InvalidInput

# KServe v2 datatype name <-> numpy dtype <-> ModelConfig DataType enum name <-> ORT type string.
_TABLE = [
    ("BOOL", np.bool_, "TYPE_BOOL", "tensor(bool)"),
    ("UINT8", np.uint8, "TYPE_UINT8", "tensor(uint8)"),
    ("UINT16", np.uint16, "TYPE_UINT16", "tensor(uint16)"),
    ("UINT32", np.uint32, "TYPE_UINT32", "tensor(uint32)"),
    ("UINT64", np.uint64, "TYPE_UINT64", "tensor(uint64)"),
    ("INT8", np.int8, "TYPE_INT8", "tensor(int8)"),
    ("INT16", np.int16, "TYPE_INT16", "tensor(int16)"),
    ("INT32", np.int32, "TYPE_INT32", "tensor(int32)"),
    ("INT64", np.int64, "TYPE_INT64", "tensor(int64)"),
    ("FP16", np.float16, "TYPE_FP16", "tensor(float16)"),
    ("FP32", np.float32, "TYPE_FP32", "tensor(float)"),
    ("FP64", np.float64, "TYPE_FP64", "tensor(double)"),
]
V2_TO_NUMPY = {v2: np.dtype(npt) for v2, npt, _, _ in _TABLE}
NUMPY_TO_V2 = {np.dtype(npt): v2 for v2, npt, _, _ in _TABLE}
CONFIG_TO_NUMPY = {model_config_pb2.DataType.Value(cfg): np.dtype(npt) for _, npt, cfg, _ in _TABLE}
NUMPY_TO_CONFIG = {v: k for k, v in CONFIG_TO_NUMPY.items()}
ORT_TO_NUMPY = {o: np.dtype(npt) for _, npt, _, o in _TABLE}


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor; ``dims`` exclude the batch dim when ``batched`` (Triton's convention)."""

    name: str
    dtype: np.dtype
    dims: tuple[int, ...]
    batched: bool

    @property
    def v2_datatype(self) -> str:
        return NUMPY_TO_V2[self.dtype]

    def full_shape(self) -> list[int]:
        return [-1, *self.dims] if self.batched else list(self.dims)

    def compatible_dims(self, other: tuple[int, ...]) -> bool:
        return len(other) == len(self.dims) and all(
            a == b or a < 0 or b < 0 for a, b in zip(self.dims, other, strict=True))

    def to_input_config(self) -> model_config_pb2.ModelInput:
        return model_config_pb2.ModelInput(name=self.name, data_type=NUMPY_TO_CONFIG[self.dtype],
                                           dims=list(self.dims))

    def to_output_config(self) -> model_config_pb2.ModelOutput:
        return model_config_pb2.ModelOutput(name=self.name, data_type=NUMPY_TO_CONFIG[self.dtype],
                                            dims=list(self.dims))

    def check(self, array: np.ndarray, *, field: str, max_batch_size: int) -> None:
        """InvalidInput naming the field when dtype, shape, batch size or finiteness is wrong."""
        if array.dtype != self.dtype:
            raise InvalidInput(f"{field}: datatype {NUMPY_TO_V2.get(array.dtype, str(array.dtype))} "
                               f"where the model expects {self.v2_datatype}", field=field)
        shape = array.shape[1:] if self.batched else array.shape
        if not self.compatible_dims(tuple(shape)) or (self.batched and array.ndim == 0):
            raise InvalidInput(f"{field}: shape {list(array.shape)} where the model expects "
                               f"{self.full_shape()}", field=field)
        if self.batched and max_batch_size > 0 and array.shape[0] > max_batch_size:
            raise InvalidInput(f"{field}: batch of {array.shape[0]} is over the model's max_batch_size "
                               f"{max_batch_size}", field=field)
        if self.batched and array.shape[0] == 0:
            raise InvalidInput(f"{field}: empty batch", field=field)
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            bad = np.argwhere(~np.isfinite(array))[0].tolist()
            raise InvalidInput(f"{field}: non-finite value {array[tuple(bad)]} at index {bad}", field=field)


def specs_from_config(config: model_config_pb2.ModelConfig) -> tuple[list[TensorSpec], list[TensorSpec]]:
    batched = config.max_batch_size > 0

    def spec(t: model_config_pb2.ModelInput | model_config_pb2.ModelOutput) -> TensorSpec:
        if t.data_type not in CONFIG_TO_NUMPY:
            raise ValueError(f"{t.name}: data type {model_config_pb2.DataType.Name(t.data_type)} not served")
        dims = tuple(t.reshape.shape) if t.HasField("reshape") else tuple(t.dims)
        return TensorSpec(t.name, CONFIG_TO_NUMPY[t.data_type], dims, batched)

    return [spec(t) for t in config.input], [spec(t) for t in config.output]


def specs_from_session(session: ort.InferenceSession,
                       batched: bool) -> tuple[list[TensorSpec], list[TensorSpec]]:
    def spec(node: ort.NodeArg) -> TensorSpec:
        if node.type not in ORT_TO_NUMPY:
            raise ValueError(f"{node.name}: ONNX type {node.type} not served")
        dims = tuple(d if isinstance(d, int) else -1 for d in node.shape)
        return TensorSpec(node.name, ORT_TO_NUMPY[node.type], dims[1:] if batched else dims, batched)

    return [spec(n) for n in session.get_inputs()], [spec(n) for n in session.get_outputs()]
