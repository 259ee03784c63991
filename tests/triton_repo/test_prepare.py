"""``healthai triton prepare``: every config.pbtxt it writes parses with tritonclient's ModelConfig
(unknown fields fail), agrees with the ONNX files, and the op library it names really loads them."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from healthai.serving.settings import DEFAULT_MODEL_REPOSITORY
from healthai.triton import cli
from healthai.triton.prepare import PrepareError, prepare_repository

ONNX_TO_CONFIG = {onnx.TensorProto.FLOAT: model_config_pb2.TYPE_FP32,
                  onnx.TensorProto.DOUBLE: model_config_pb2.TYPE_FP64,
                  onnx.TensorProto.INT64: model_config_pb2.TYPE_INT64,
                  onnx.TensorProto.INT32: model_config_pb2.TYPE_INT32}
CPU, GPU = model_config_pb2.ModelInstanceGroup.KIND_CPU, model_config_pb2.ModelInstanceGroup.KIND_GPU


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["triton", "prepare", *argv])
    return int(args.func(args))


def parse_config(path: Path) -> model_config_pb2.ModelConfig:
    config = model_config_pb2.ModelConfig()
    text_format.Parse(path.read_text(), config)  # a field Triton's proto lacks raises ParseError
    return config


def assert_onnx_matches(model_path: Path, config: model_config_pb2.ModelConfig) -> None:
    graph = onnx.load(str(model_path)).graph
    init = {i.name for i in graph.initializer}
    for values, tensors in (([v for v in graph.input if v.name not in init], config.input),
                            (list(graph.output), config.output)):
        assert [v.name for v in values] == [t.name for t in tensors]
        for v, t in zip(values, tensors, strict=True):
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]
            assert dims[0] == -1, f"{v.name}: batch dim must be dynamic"
            assert dims[1:] == list(t.dims)
            assert ONNX_TO_CONFIG[v.type.tensor_type.elem_type] == t.data_type


def custom_domain(model_path: Path) -> bool:
    return any(o.domain == "healthai" for o in onnx.load(str(model_path)).opset_import)


def run_once(model_path: Path, config: model_config_pb2.ModelConfig, library: str | None) -> np.ndarray:
    opts = ort.SessionOptions()
    if library is not None:
        opts.register_custom_ops_library(library)
    session = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
    feeds = {t.name: np.ones([2, *t.dims], np.float32) for t in config.input}
    return session.run(None, feeds)[0]


def test_default_repository_prepared_for_triton(tmp_path: Path) -> None:
    out = tmp_path / "triton"
    assert run_cli("--repository", str(DEFAULT_MODEL_REPOSITORY), "--out", str(out)) == 0
    configs = sorted(out.rglob("config.pbtxt"))
    assert [c.parent.name for c in configs] == sorted(
        p.name for p in DEFAULT_MODEL_REPOSITORY.iterdir() if (p / "config.pbtxt").is_file())
    forecasters = 0
    for path in configs:
        config = parse_config(path)
        assert config.name == path.parent.name and config.platform == "onnxruntime_onnx"
        assert config.max_batch_size > 0
        batching = config.dynamic_batching
        assert batching.max_queue_delay_microseconds > 0
        assert list(batching.preferred_batch_size)
        assert max(batching.preferred_batch_size) <= config.max_batch_size
        assert [(g.kind, g.count) for g in config.instance_group] == [(CPU, 1)]
        versions = [d for d in path.parent.iterdir() if d.is_dir() and d.name.isdigit()]
        assert versions
        for vdir in versions:
            model = vdir / "model.onnx"
            assert_onnx_matches(model, config)
            assert (vdir / "model_card.json").is_file()
            libraries = list(config.model_operations.op_library_filename)
            if custom_domain(model):
                forecasters += 1
                assert len(libraries) == 1 and Path(libraries[0]).parent == path.parent
                assert Path(libraries[0]).is_file()
                # the library it names runs the custom node, and agrees with the standard variant
                custom = run_once(model, config, libraries[0])
                standard = run_once(vdir / "model.standard.onnx", config, None)
                np.testing.assert_allclose(custom, standard, rtol=1e-3, atol=1e-3)  # summation order differs
            else:
                assert not libraries
    assert forecasters >= 1


def test_standard_opset_variant_needs_no_library(tmp_path: Path) -> None:
    out = tmp_path / "stock"
    assert run_cli("--out", str(out), "--standard-opset", "--kind", "gpu", "--instances", "2",
                   "--preferred-batch-size", "16", "--preferred-batch-size", "4",
                   "--max-queue-delay-us", "250") == 0
    assert not list(out.rglob("*.so"))
    for path in out.rglob("config.pbtxt"):
        config = parse_config(path)
        assert not config.HasField("model_operations")
        assert list(config.dynamic_batching.preferred_batch_size) == [4, 16]
        assert config.dynamic_batching.max_queue_delay_microseconds == 250
        assert [(g.kind, g.count) for g in config.instance_group] == [(GPU, 2)]
        for model in path.parent.glob("*/model.onnx"):
            assert not custom_domain(model)
            assert_onnx_matches(model, config)
            assert run_once(model, config, None).shape[0] == 2


def test_mount_path_names_the_library_where_triton_sees_it(tmp_path: Path) -> None:
    prepared = prepare_repository(DEFAULT_MODEL_REPOSITORY, tmp_path / "out", mount_path=Path("/models"))
    libraries = {m.name: m.op_library for m in prepared if m.op_library}
    assert libraries
    assert all(lib == f"/models/{name}/libhealthai_ort_ops.so" for name, lib in libraries.items())
    for name in libraries:
        config = parse_config(tmp_path / "out" / name / "config.pbtxt")
        assert list(config.model_operations.op_library_filename) == [libraries[name]]


def test_refuses_non_empty_output_unless_forced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert run_cli("--out", str(out)) == 2
    assert "not empty" in capsys.readouterr().err and (out / "keep.txt").is_file()
    assert run_cli("--out", str(out), "--force") == 0
    assert not (out / "keep.txt").exists()


def test_preferred_batch_size_over_max_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PrepareError, match=r"preferred_batch_size \[100000\] outside"):
        prepare_repository(DEFAULT_MODEL_REPOSITORY, tmp_path / "out", preferred_batch_sizes=(100_000,))


def test_config_that_disagrees_with_the_onnx_file_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(DEFAULT_MODEL_REPOSITORY / "risk_heart", src / "risk_heart")
    config = src / "risk_heart" / "config.pbtxt"
    config.write_text(config.read_text().replace("dims: [ 16 ]", "dims: [ 17 ]"))
    with pytest.raises(PrepareError, match=r"input 'features' has dims \[16\] in the model but \[17\]"):
        prepare_repository(src, tmp_path / "out")


def test_config_without_tensors_is_completed_from_onnx(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(DEFAULT_MODEL_REPOSITORY / "risk_heart", src / "risk_heart")
    (src / "risk_heart" / "config.pbtxt").write_text('name: "risk_heart"\nmax_batch_size: 256\n')
    prepare_repository(src, tmp_path / "out")
    config = parse_config(tmp_path / "out" / "risk_heart" / "config.pbtxt")
    assert [(t.name, list(t.dims)) for t in config.input] == [("features", [16])]
    assert [(t.name, list(t.dims)) for t in config.output] == [("probability", [1])]
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 32, 128]
