"""Prepare a model repository for Triton Inference Server.

Copies a repository in Triton's layout and rewrites every model's ``config.pbtxt`` for Triton's ONNX
Runtime backend: ``platform``, ``max_batch_size``, inputs/outputs with dims (filled from the ONNX file
when the source config has none), ``dynamic_batching``, ``instance_group`` and — for models whose
``model.onnx`` holds our custom-domain node — ``model_operations { op_library_filename }`` naming a
copy of our ONNX Runtime op library placed in the repository. With ``standard_opset=True`` such
models get their standard-opset variant as ``model.onnx`` instead (stock Triton, no op library).

Every ONNX file is checked against the config written for it, so a repository Triton would refuse
is refused here.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from healthai.serving.runtime.onnx import (
    MODEL_FILE,
    STANDARD_MODEL_FILE,
    custom_ops_library,
    uses_custom_domain,
)
from healthai.serving.runtime.repository import (
    CONFIG_FILE,
    RepositoryError,
    read_config,
    scan_models,
    scan_versions,
)
from healthai.serving.runtime.tensors import NUMPY_TO_CONFIG

log = logging.getLogger(__name__)

HEADER = "# Written by `healthai triton prepare` for Triton's ONNX Runtime backend.\n"
DEFAULT_PREFERRED = (8, 32, 128)
DEFAULT_QUEUE_DELAY_US = 500

Kind = Literal["cpu", "gpu"]


class PrepareError(ValueError):
    """The source repository cannot be prepared (mismatched ONNX/config, missing op library...)."""


@dataclass(frozen=True)
class PreparedModel:
    name: str
    versions: tuple[int, ...]
    config_path: Path
    op_library: str | None  # the op_library_filename written, None when the model needs none


def _onnx_dims(value: onnx.ValueInfoProto) -> list[int]:
    return [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]


def _onnx_config_type(value: onnx.ValueInfoProto) -> int:
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type))
    if dtype not in NUMPY_TO_CONFIG:
        raise PrepareError(f"{value.name}: ONNX type {dtype} has no Triton data type here")
    return NUMPY_TO_CONFIG[dtype]


def _tensors_from_onnx(path: Path, config: model_config_pb2.ModelConfig) -> None:
    """Fills the config's input/output lists from the ONNX graph (batch dim dropped when batching)."""
    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    skip = 1 if config.max_batch_size > 0 else 0
    for value in graph.input:
        if value.name not in initializers:
            config.input.add(name=value.name, data_type=_onnx_config_type(value),
                             dims=_onnx_dims(value)[skip:])
    for value in graph.output:
        config.output.add(name=value.name, data_type=_onnx_config_type(value), dims=_onnx_dims(value)[skip:])


def check_onnx_against_config(path: Path, config: model_config_pb2.ModelConfig) -> None:
    """PrepareError unless the ONNX file's inputs/outputs match the config's names, types and dims."""
    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    batched = config.max_batch_size > 0
    for kind, values, wanted in (("input", [v for v in graph.input if v.name not in initializers],
                                  config.input), ("output", list(graph.output), config.output)):
        have = {v.name: v for v in values}
        if kind == "input" and sorted(have) != sorted(t.name for t in wanted):
            raise PrepareError(f"{path}: inputs {sorted(have)} but config.pbtxt lists "
                               f"{sorted(t.name for t in wanted)}")
        for tensor in wanted:
            value = have.get(tensor.name)
            if value is None:
                raise PrepareError(f"{path}: config.pbtxt {kind} {tensor.name!r} is not in the model "
                                   f"(model has {sorted(have)})")
            if _onnx_config_type(value) != tensor.data_type:
                raise PrepareError(f"{path}: {kind} {tensor.name!r} is "
                                   f"{model_config_pb2.DataType.Name(_onnx_config_type(value))} in the model "
                                   f"but {model_config_pb2.DataType.Name(tensor.data_type)} in config.pbtxt")
            dims = _onnx_dims(value)
            if batched:
                if not dims or dims[0] > 0:
                    raise PrepareError(f"{path}: {kind} {tensor.name!r} has no dynamic batch dim "
                                       f"(dims {dims}) but max_batch_size is {config.max_batch_size}")
                dims = dims[1:]
            want = list(tensor.reshape.shape) if tensor.HasField("reshape") else list(tensor.dims)
            same = len(dims) == len(want) and all(
                a == b or a < 0 or b < 0 for a, b in zip(dims, want, strict=True))
            if not same:
                raise PrepareError(f"{path}: {kind} {tensor.name!r} has dims {dims} in the model but "
                                   f"{want} in config.pbtxt")


def _batching(config: model_config_pb2.ModelConfig, preferred: tuple[int, ...] | None,
              delay_us: int | None) -> None:
    if config.max_batch_size <= 0:
        config.ClearField("dynamic_batching")  # Triton refuses dynamic batching without a batch dim
        return
    batching = config.dynamic_batching
    default = tuple(s for s in DEFAULT_PREFERRED if s <= config.max_batch_size)
    sizes = preferred if preferred is not None else (tuple(batching.preferred_batch_size) or default)
    too_big = [s for s in sizes if not 0 < s <= config.max_batch_size]
    if too_big:
        raise PrepareError(f"{config.name}: preferred_batch_size {too_big} outside 1..max_batch_size "
                           f"{config.max_batch_size}")
    batching.preferred_batch_size[:] = sorted(set(sizes))
    if delay_us is not None:
        batching.max_queue_delay_microseconds = delay_us
    elif not batching.max_queue_delay_microseconds:
        batching.max_queue_delay_microseconds = DEFAULT_QUEUE_DELAY_US


def prepare_repository(src: Path, dst: Path, *, kind: Kind = "cpu", instance_count: int = 1,
                       standard_opset: bool = False, preferred_batch_sizes: tuple[int, ...] | None = None,
                       max_queue_delay_us: int | None = None, mount_path: Path | None = None,
                       force: bool = False) -> list[PreparedModel]:
    """Writes the Triton repository ``dst`` from ``src``; returns what it wrote.

    ``mount_path`` is where Triton will see ``dst`` (e.g. ``/models`` in its container): the op
    library's path in ``model_operations`` is written under it (default: ``dst`` itself).
    """
    src, dst = Path(src).resolve(), Path(dst).resolve()
    if instance_count < 1:
        raise PrepareError(f"instance_count must be >= 1, got {instance_count}")
    if dst == src or src in dst.parents:
        raise PrepareError(f"output {dst} must not be the source repository or inside it")
    if dst.exists() and any(dst.iterdir()):
        if not force:
            raise PrepareError(f"output {dst} exists and is not empty (use --force to replace it)")
        shutil.rmtree(dst)
    models = scan_models(src)
    if not models:
        raise PrepareError(f"{src}: no models (expected <name>/config.pbtxt and <name>/<version>/)")
    dst.mkdir(parents=True, exist_ok=True)
    mount = Path(mount_path) if mount_path is not None else dst
    prepared: list[PreparedModel] = []
    for name, model_dir in models.items():
        try:
            config = read_config(model_dir)
        except RepositoryError as exc:
            raise PrepareError(str(exc)) from exc
        versions = scan_versions(model_dir)
        if not versions:
            raise PrepareError(f"{model_dir}: no numbered version folder")
        out_dir = dst / name
        out_dir.mkdir()
        library: str | None = None
        for version, vdir in sorted(versions.items()):
            shutil.copytree(vdir.path, out_dir / str(version))
            main = out_dir / str(version) / MODEL_FILE
            if not main.is_file():
                raise PrepareError(f"{vdir.path}: no {MODEL_FILE}")
            if not uses_custom_domain(main):
                continue
            if standard_opset:
                standard = main.with_name(STANDARD_MODEL_FILE)
                if not standard.is_file():
                    raise PrepareError(f"{vdir.path}: needs the custom-op library and has no "
                                       f"{STANDARD_MODEL_FILE} to use instead")
                standard.replace(main)
            else:
                # beside config.pbtxt: Triton ignores non-numbered entries of a model folder, but
                # would try to load (and, with --exit-on-error, die on) an extra top-level folder
                library = str(mount / name / _copy_library(out_dir).name)
        config.name = name
        config.platform = "onnxruntime_onnx"
        config.ClearField("backend")
        config.ClearField("default_model_filename")
        if not config.input and not config.output:
            _tensors_from_onnx(out_dir / str(max(versions)) / MODEL_FILE, config)
        _batching(config, preferred_batch_sizes, max_queue_delay_us)
        del config.instance_group[:]
        config.instance_group.add(kind=model_config_pb2.ModelInstanceGroup.KIND_GPU if kind == "gpu"
                                  else model_config_pb2.ModelInstanceGroup.KIND_CPU, count=instance_count)
        config.ClearField("model_operations")
        if library is not None:
            config.model_operations.op_library_filename.append(library)
        for version in versions:
            check_onnx_against_config(out_dir / str(version) / MODEL_FILE, config)
        config_path = out_dir / CONFIG_FILE
        config_path.write_text(HEADER + text_format.MessageToString(config))
        prepared.append(PreparedModel(name, tuple(sorted(versions)), config_path, library))
        log.info("prepared %s (versions %s)%s", name, sorted(versions),
                 f" with op library {library}" if library else "")
    return prepared


def _copy_library(model_dir: Path) -> Path:
    """Copies our ONNX Runtime op library into a model folder once; PrepareError when it is not built."""
    source = custom_ops_library()
    if source is None:
        raise PrepareError("a model needs the healthai custom-op library, which is not built here; "
                           "build it (pip install -e .) or prepare with --standard-opset")
    target = model_dir / source.name
    if not target.is_file():
        shutil.copy2(source, target)
    return target
