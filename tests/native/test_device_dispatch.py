"""CUDA arrays on a build without CUDA (or on a machine without a GPU) raise a clear RuntimeError.

A fake CUDA array is made with DLPack (device type 2) over a pointer that must never be read."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
import torch

from healthai import _native
from healthai.ops import build_info


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", _DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", _DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.c_void_p),
        ("byte_offset", ctypes.c_uint64),
    ]


class _DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", ctypes.c_void_p)]


class FakeCudaArray:
    """Looks like a CUDA array through DLPack; its data pointer is bogus (reading it would crash)."""

    def __init__(self, shape: tuple[int, ...], code: int, bits: int) -> None:
        self._shape = (ctypes.c_int64 * len(shape))(*shape)
        dtype = _DLDataType(code, bits, 1)
        tensor = _DLTensor(0xDEAD0000, _DLDevice(2, 0), len(shape), dtype, self._shape, None, 0)
        self._managed = _DLManagedTensor(tensor, None, None)

    def __dlpack__(self, **_: object) -> object:
        new_capsule = ctypes.pythonapi.PyCapsule_New
        new_capsule.restype = ctypes.py_object
        new_capsule.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
        return new_capsule(ctypes.addressof(self._managed), b"dltensor", None)

    def __dlpack_device__(self) -> tuple[int, int]:
        return (2, 0)


def _fake_graph() -> tuple[FakeCudaArray, ...]:
    return (FakeCudaArray((3,), 0, 64), FakeCudaArray((4,), 0, 64), FakeCudaArray((5, 2), 2, 32))


@pytest.mark.skipif(build_info()["cuda"], reason="this build has CUDA; see the no-GPU test")
def test_cuda_arrays_on_a_cpu_only_build() -> None:
    indptr, indices, x = _fake_graph()
    with pytest.raises(RuntimeError, match="built without CUDA"):
        _native.aggregate(indptr, indices, None, x, "sum", 0, FakeCudaArray((2, 2), 2, 32))


@pytest.mark.skipif(
    not build_info()["cuda"] or torch.cuda.is_available(),
    reason="needs a CUDA build on a machine without a GPU",
)
def test_cuda_arrays_without_a_gpu_raise_runtime_error() -> None:
    indptr, indices, x = _fake_graph()
    with pytest.raises(RuntimeError, match="CUDA"):
        _native.aggregate(indptr, indices, None, x, "sum", 0, FakeCudaArray((2, 2), 2, 32))


def test_mixed_devices_are_rejected_before_any_read() -> None:
    indptr, indices, _ = _fake_graph()
    with pytest.raises(ValueError, match="indptr is on cuda but x is on cpu"):
        _native.aggregate(indptr, indices, None, np.ones((5, 2), np.float32), "sum")


def test_cuda_inputs_need_a_preallocated_output() -> None:
    indptr, indices, x = _fake_graph()
    with pytest.raises(ValueError, match=r"out must be given \(preallocated\) for CUDA inputs"):
        _native.aggregate(indptr, indices, None, x, "sum")
