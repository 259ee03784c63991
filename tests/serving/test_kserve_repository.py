"""KServe model control over a real server: RepositoryModelLoad / RepositoryModelUnload with Triton's
semantics on top of hot reload, UNIMPLEMENTED for what is not served, the advertised extensions, and
liveness/readiness open without an API key."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from healthai.app.server import RunningServer, build_server
from healthai.app.settings import Settings
from healthai.security import interceptors, new_key
from healthai.serving.kserve.servicer import EXTENSION_RPCS, InferenceServicer
from healthai.serving.settings import ServingSettings
from healthai.v1 import risk_pb2, risk_pb2_grpc

from .conftest import ServerThread
from .test_batching import Gate, wait_queued
from .tiny_models import write_risk_version

X = np.ones((1, 4), np.float32)


def infer(client: triton.InferenceServerClient, version: str = "") -> np.ndarray:
    inp = triton.InferInput("features", [1, 4], "FP32")
    inp.set_data_from_numpy(X)
    return client.infer("risk_tiny", [inp], model_version=version).get_response()


def error(fn, *args, **kw) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as err:
        fn(*args, **kw)
    return err.value


def test_unload_stops_serving_and_scans_do_not_bring_it_back(risk_repo, make_server, caplog):
    server = make_server(risk_repo)
    risk = risk_pb2_grpc.RiskStub(server.channel)
    with triton.InferenceServerClient(f"127.0.0.1:{server.port}") as client:
        assert infer(client).model_version == "1"
        client.unload_model("risk_tiny")
        assert not client.is_model_ready("risk_tiny")
        err = error(infer, client)
        assert err.status() == "StatusCode.UNAVAILABLE"
        assert "model 'risk_tiny' was unloaded (RepositoryModelUnload)" in err.message()
        with pytest.raises(grpc.RpcError) as rpc:  # every service resolves through the same manager
            risk.Score(risk_pb2.ScoreRequest(model_name="risk_tiny", features=[0.0] * 4), timeout=10)
        assert rpc.value.code() == grpc.StatusCode.UNAVAILABLE
        assert client.get_model_repository_index(as_json=True)["models"] == [
            {"name": "risk_tiny", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"}]
        write_risk_version(risk_repo, "risk_tiny", 2, np.array([0.0, 0.0, 0.0, 1.0]))
        server.poll()  # a repository scan: an explicitly unloaded model stays unloaded
        assert not client.is_model_ready("risk_tiny")
        assert not client.is_model_ready("risk_tiny", "2")
        with caplog.at_level(logging.INFO, logger="healthai.serving.runtime.manager"):
            client.load_model("risk_tiny")
        assert "model risk_tiny loaded by request: version(s) [1, 2] ready" in caplog.text
        assert client.is_model_ready("risk_tiny") and client.is_model_ready("risk_tiny", "1")
        assert infer(client).model_version == "2"  # the newest serves again
        index = client.get_model_repository_index(as_json=True)["models"]
        assert [(m["version"], m["state"]) for m in index] == [("1", "READY"), ("2", "READY")]
        server.poll()  # and scans keep it
        assert infer(client).model_version == "2"


def test_load_reloads_in_place_and_a_failed_reload_keeps_the_old_one(risk_repo, make_server):
    server = make_server(risk_repo)
    manager = server.plugin.manager
    with triton.InferenceServerClient(f"127.0.0.1:{server.port}") as client:
        before = manager.resolve("risk_tiny")
        client.load_model("risk_tiny")  # unchanged on disk: reloaded all the same (Triton's load)
        after = manager.resolve("risk_tiny")
        assert after is not before and after.runtime.is_ready()
        assert infer(client).model_version == "1"
        (risk_repo / "risk_tiny" / "1" / "model.onnx").write_bytes(b"not onnx")
        err = error(client.load_model, "risk_tiny")
        assert err.status() == "StatusCode.FAILED_PRECONDITION"
        assert "model 'risk_tiny': version 1:" in err.message() and "not a valid ONNX model" in err.message()
        assert manager.resolve("risk_tiny") is after  # the previous load keeps serving
        assert infer(client).model_version == "1"


def test_unload_lets_queued_and_running_requests_finish(risk_repo, make_server):
    server = make_server(risk_repo)
    stub = risk_pb2_grpc.RiskStub(server.channel)
    kserve = service_pb2_grpc.GRPCInferenceServiceStub(server.channel)
    gate = Gate(server.plugin.manager.resolve("risk_tiny"))
    running = stub.Score.future(risk_pb2.ScoreRequest(model_name="risk_tiny", features=[0.0] * 4,
                                                      top_features=0), timeout=30)
    assert gate.entered.acquire(timeout=10)  # executing, held by the gate
    queued = [stub.Score.future(risk_pb2.ScoreRequest(model_name="risk_tiny", features=[0.1] * 4,
                                                      top_features=0), timeout=30) for _ in range(3)]
    wait_queued(server, 3)
    kserve.RepositoryModelUnload(service_pb2.RepositoryModelUnloadRequest(model_name="risk_tiny"), timeout=10)
    gate.open.set()
    assert running.result().probability and all(f.result().probability for f in queued)
    with pytest.raises(grpc.RpcError) as err:
        stub.Score(risk_pb2.ScoreRequest(model_name="risk_tiny", features=[0.0] * 4), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(("rpc", "request_", "code", "message"), [
    ("RepositoryModelLoad", {"model_name": "nope"}, grpc.StatusCode.NOT_FOUND,
     "model 'nope' is not in the model repository (it has ['risk_tiny'])"),
    ("RepositoryModelUnload", {"model_name": "nope"}, grpc.StatusCode.NOT_FOUND,
     "model 'nope' is not loaded and not in the model repository"),
    ("RepositoryModelLoad", {}, grpc.StatusCode.INVALID_ARGUMENT, "model_name is required"),
    ("RepositoryModelUnload", {"model_name": "risk_tiny", "repository_name": "elsewhere"},
     grpc.StatusCode.INVALID_ARGUMENT, "repository_name 'elsewhere' is not served here"),
    ("RepositoryModelLoad", {"model_name": "risk_tiny", "parameters": {"config": {"string_param": "{}"}}},
     grpc.StatusCode.UNIMPLEMENTED, "parameters['config']: overriding the repository's config"),
    ("RepositoryModelLoad", {"model_name": "risk_tiny", "parameters": {"colour": {"bool_param": True}}},
     grpc.StatusCode.INVALID_ARGUMENT, "parameters['colour']: unknown load parameter"),
])
def test_load_unload_bad_requests(risk_repo, make_server, rpc, request_, code, message):
    stub = service_pb2_grpc.GRPCInferenceServiceStub(make_server(risk_repo).channel)
    with pytest.raises(grpc.RpcError) as err:
        getattr(stub, rpc)(getattr(service_pb2, f"{rpc}Request")(**request_), timeout=10)
    assert err.value.code() == code
    assert err.value.details().startswith(message)


def test_unimplemented_rpcs_answer_unimplemented_without_an_incident(risk_repo, make_server, caplog):
    server = make_server(risk_repo)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(server.channel)
    descriptor = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert set(InferenceServicer.UNIMPLEMENTED) == {
        "ModelStreamInfer", "SystemSharedMemoryStatus", "SystemSharedMemoryRegister",
        "SystemSharedMemoryUnregister", "CudaSharedMemoryStatus", "CudaSharedMemoryRegister",
        "CudaSharedMemoryUnregister", "TraceSetting", "LogSettings"}
    seen = {}
    with caplog.at_level(logging.INFO):
        for name in InferenceServicer.UNIMPLEMENTED:
            method = descriptor.methods_by_name[name]
            request = getattr(service_pb2, method.input_type.name)()
            with pytest.raises(grpc.RpcError) as err:
                if method.client_streaming:
                    list(getattr(stub, name)(iter([request]), timeout=10))
                else:
                    getattr(stub, name)(request, timeout=10)
            seen[name] = (err.value.code(), err.value.details())
    assert {code for code, _ in seen.values()} == {grpc.StatusCode.UNIMPLEMENTED}
    assert seen["ModelStreamInfer"][1] == (
        "inference.GRPCInferenceService/ModelStreamInfer is not implemented by healthai: "
        "streaming inference is not supported: use ModelInfer")
    assert "shared-memory tensors are not supported" in seen["CudaSharedMemoryRegister"][1]
    assert "incident" not in caplog.text and not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=10).live  # and it keeps serving


def test_server_metadata_advertises_only_served_extensions(risk_repo, make_server):
    server = make_server(risk_repo)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(server.channel)
    extensions = list(stub.ServerMetadata(service_pb2.ServerMetadataRequest(), timeout=10).extensions)
    assert extensions == ["model_repository", "statistics", "model_configuration"]
    for extension in extensions:  # every RPC an advertised extension needs is served here
        assert not set(EXTENSION_RPCS[extension]) & set(InferenceServicer.UNIMPLEMENTED)
    with triton.InferenceServerClient(f"127.0.0.1:{server.port}") as client:  # and answers
        client.get_model_repository_index()
        client.get_inference_statistics("risk_tiny")
        client.get_model_config("risk_tiny")
        client.load_model("risk_tiny")
        client.unload_model("risk_tiny")


class KeyedServer(ServerThread):
    """ServerThread's real server, with the auth interceptor of ``settings.security`` in front."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__(settings.serving)

    async def _build(self, settings: Settings) -> RunningServer:
        running = build_server(self.settings, [self.plugin],
                               interceptors=interceptors(self.settings.security))
        await running.start()
        return running


@pytest.fixture
def keyed_server(risk_repo: Path, tmp_path: Path) -> Iterator[Callable[..., tuple[KeyedServer, str, str]]]:
    ops_key, ops = new_key("ops", ["admin", "inference"])
    infer_key, app = new_key("app", ["inference"])
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"keys": [ops, app]}))
    servers: list[KeyedServer] = []

    def make(**security: object) -> tuple[KeyedServer, str, str]:
        serving = ServingSettings(model_repository=risk_repo, reload_poll_s=0.0)
        servers.append(KeyedServer(Settings(port=0, dev_mode=True, serving=serving,
                                            security={"api_keys_file": keys, **security})))
        return servers[-1], ops_key, infer_key

    yield make
    for s in servers:
        s.close()


def _codes(server: ServerThread, key: str | None) -> dict[str, grpc.StatusCode]:
    stub = service_pb2_grpc.GRPCInferenceServiceStub(server.channel)
    metadata = (("authorization", f"Bearer {key}"),) if key else None
    calls = {
        "ServerLive": service_pb2.ServerLiveRequest(),
        "ServerReady": service_pb2.ServerReadyRequest(),
        "ModelReady": service_pb2.ModelReadyRequest(name="risk_tiny"),
        "ModelMetadata": service_pb2.ModelMetadataRequest(name="risk_tiny"),
        "RepositoryModelUnload": service_pb2.RepositoryModelUnloadRequest(model_name="risk_tiny"),
    }
    codes = {}
    for name, request in calls.items():
        try:
            getattr(stub, name)(request, metadata=metadata, timeout=10)
            codes[name] = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            codes[name] = exc.code()
    return codes


def test_liveness_and_readiness_need_no_key_by_default(keyed_server):
    ok, unauth = grpc.StatusCode.OK, grpc.StatusCode.UNAUTHENTICATED
    denied = grpc.StatusCode.PERMISSION_DENIED
    server, ops_key, infer_key = keyed_server()
    assert _codes(server, None) == {"ServerLive": ok, "ServerReady": ok, "ModelReady": ok,
                                    "ModelMetadata": unauth, "RepositoryModelUnload": unauth}
    assert _codes(server, infer_key)["RepositoryModelUnload"] == denied  # load/unload: admin scope
    assert _codes(server, ops_key)["RepositoryModelUnload"] == ok
    closed, _, _ = keyed_server(open_services=("grpc.health.v1.Health",))  # configurable
    assert set(_codes(closed, None).values()) == {unauth}
