"""KServe v2 / Triton protocol, driven by the real tritonclient against a real server."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

WEIGHTS = np.array([1.0, 0.5, -0.25, 2.0], np.float32)


def expected(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-(x @ WEIGHTS[:, None] - 1.0)))


@pytest.fixture
def client(risk_repo, make_server):
    server = make_server(risk_repo)
    with triton.InferenceServerClient(f"127.0.0.1:{server.port}") as c:
        yield c


def test_server_and_model_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("risk_tiny")
    assert client.is_model_ready("risk_tiny", "1")
    assert not client.is_model_ready("risk_tiny", "2")
    assert not client.is_model_ready("nope")
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "healthai" and "statistics" in meta["extensions"]
    model = client.get_model_metadata("risk_tiny", as_json=True)
    assert model["versions"] == ["1"] and model["platform"] == "onnxruntime_onnx"
    assert model["inputs"] == [{"name": "features", "datatype": "FP32", "shape": ["-1", "4"]}]
    assert model["outputs"] == [{"name": "probability", "datatype": "FP32", "shape": ["-1", "1"]}]
    config = client.get_model_config("risk_tiny").config
    assert config.max_batch_size == 64 and config.dynamic_batching.max_queue_delay_microseconds == 200
    index = client.get_model_repository_index(as_json=True)["models"]
    assert index == [{"name": "risk_tiny", "version": "1", "state": "READY"}]


def test_infer_with_raw_input_contents_matches_the_model(client):
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    inp = triton.InferInput("features", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)  # tritonclient's gRPC client sends raw_input_contents
    result = client.infer("risk_tiny", [inp], outputs=[triton.InferRequestedOutput("probability")],
                          request_id="abc")
    assert result.get_response().id == "abc"
    assert result.get_response().model_version == "1"
    np.testing.assert_allclose(result.as_numpy("probability"), expected(x), rtol=1e-5)
    stats = client.get_inference_statistics("risk_tiny", as_json=True)["model_stats"][0]
    assert stats["inference_count"] == "5" and stats["execution_count"] == "1"
    assert int(stats["inference_stats"]["success"]["count"]) == 1


def test_infer_with_typed_contents_matches_the_model(risk_repo, make_server):
    stub = service_pb2_grpc.GRPCInferenceServiceStub(make_server(risk_repo).channel)
    x = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    request = service_pb2.ModelInferRequest(model_name="risk_tiny", model_version="1")
    tensor = request.inputs.add(name="features", datatype="FP32", shape=[3, 4])
    tensor.contents.fp32_contents.extend(x.reshape(-1).tolist())
    response = stub.ModelInfer(request)
    outputs = [(o.name, o.datatype, list(o.shape)) for o in response.outputs]
    assert outputs == [("probability", "FP32", [3, 1])]
    got = np.frombuffer(response.raw_output_contents[0], np.float32).reshape(3, 1)
    np.testing.assert_allclose(got, expected(x), rtol=1e-5)
    tensor.contents.fp32_contents.append(1.0)
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "contents has 13 values; shape [3, 4] needs 12" in err.value.details()


def _infer_error(client, inputs, **kw) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as err:
        client.infer("risk_tiny", inputs, **kw)
    return err.value


def _input(array: np.ndarray, name: str = "features", dtype: str = "FP32") -> triton.InferInput:
    inp = triton.InferInput(name, list(array.shape), dtype)
    inp.set_data_from_numpy(array)
    return inp


def test_bad_requests_get_invalid_argument_naming_the_field(client):
    cases = {
        "over max_batch_size": (_input(np.zeros((65, 4), np.float32)), "max_batch_size 64"),
        "wrong shape": (_input(np.zeros((2, 3), np.float32)), "shape [2, 3]"),
        "wrong dtype": (_input(np.zeros((2, 4), np.float64), dtype="FP64"), "datatype FP64"),
        "NaN": (_input(np.array([[0, np.nan, 0, 0]], np.float32)), "non-finite value nan"),
        "inf": (_input(np.array([[0, 0, np.inf, 0]], np.float32)), "non-finite value inf"),
        "unknown input": (_input(np.zeros((1, 4), np.float32), name="feats"), "unknown input 'feats'"),
    }
    for name, (inp, message) in cases.items():
        err = _infer_error(client, [inp])
        assert err.status() == "StatusCode.INVALID_ARGUMENT", name
        assert message in err.message() and "inputs[0]" in err.message(), (name, err.message())
    err = _infer_error(client, [_input(np.zeros((1, 4), np.float32))],
                       outputs=[triton.InferRequestedOutput("logits")])
    assert err.status() == "StatusCode.INVALID_ARGUMENT" and "unknown output 'logits'" in err.message()


def test_raw_contents_of_the_wrong_size_are_invalid(risk_repo, make_server):
    channel = make_server(risk_repo).channel

    request = service_pb2.ModelInferRequest(model_name="risk_tiny")
    request.inputs.add(name="features", datatype="FP32", shape=[2, 4])
    request.raw_input_contents.append(np.zeros(7, np.float32).tobytes())
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    with pytest.raises(grpc.RpcError) as err:  # a raw request: tritonclient would not build this one
        stub.ModelInfer(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "raw_input_contents[0] has 28 bytes" in err.value.details()


def test_unknown_model_or_version_is_not_found(client):
    for kw in ({"model_name": "nope"}, {"model_name": "risk_tiny", "model_version": "7"}):
        with pytest.raises(InferenceServerException) as e:
            client.infer(inputs=[_input(np.zeros((1, 4), np.float32))], **kw)
        assert e.value.status() == "StatusCode.NOT_FOUND", kw
    with pytest.raises(InferenceServerException) as e:
        client.get_model_metadata("nope")
    assert e.value.status() == "StatusCode.NOT_FOUND" and "'nope'" in e.value.message()
