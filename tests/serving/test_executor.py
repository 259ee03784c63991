"""The one batch executor shared by every backend: grouping, isolation of a failing request, and the
difference between the caller's bad input (INVALID_ARGUMENT) and our own bug (INTERNAL, incident id)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import grpc
import numpy as np
import pytest

from healthai.errors import HealthAIError, InternalError, InvalidInput, NotReady
from healthai.serving.risk.task import RiskTask
from healthai.serving.runtime.contract import InferRequest
from healthai.serving.runtime.executor import BatchExecutor
from healthai.serving.runtime.tensors import TensorSpec
from healthai.v1 import risk_pb2, risk_pb2_grpc


class _Backend:
    """Doubles its input; refuses (InvalidInput) any row holding a negative value, like a model that
    rejects the input; ``fail`` makes run() raise that exception instead."""

    name, version = "double", 1

    def __init__(self, fail: BaseException | None = None) -> None:
        self.inputs = [TensorSpec("x", np.dtype(np.float32), (2,), True)]
        self.outputs = [TensorSpec("y", np.dtype(np.float32), (2,), True)]
        self.fail = fail
        self.runs: list[int] = []

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        x = feeds["x"]
        self.runs.append(len(x))
        if self.fail is not None:
            raise self.fail
        if (x < 0).any():
            raise InvalidInput("x: negative values are refused", field="x")
        return [x * 2]


def _req(*rows: float) -> InferRequest:
    return InferRequest({"x": np.array([[r, r] for r in rows], np.float32)})


def test_plain_requests_run_as_one_batch_and_split_back() -> None:
    backend = _Backend()
    results = BatchExecutor(backend).execute([_req(1), _req(2, 3), _req(4)])
    assert backend.runs == [4]
    assert [r["y"][:, 0].tolist() for r in results] == [[2], [4, 6], [8]]


def test_a_bad_request_fails_alone() -> None:
    backend = _Backend()
    results = BatchExecutor(backend).execute([_req(1), _req(-1), _req(2)])
    assert isinstance(results[1], InvalidInput) and results[1].code == grpc.StatusCode.INVALID_ARGUMENT
    assert results[0]["y"][0, 0] == 2 and results[2]["y"][0, 0] == 4
    assert backend.runs == [3, 1, 1, 1]  # the batch, then each request alone


def test_a_bug_is_internal_with_an_incident_and_no_message_in_the_log(caplog) -> None:
    backend = _Backend(fail=TypeError("patient Jane Doe broke it"))
    with caplog.at_level(logging.ERROR, logger="healthai.serving.runtime.executor"):
        (result,) = BatchExecutor(backend).execute([_req(1)])
    assert isinstance(result, InternalError) and result.code == grpc.StatusCode.INTERNAL
    assert "incident" in result.message and "Jane" not in result.message
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "TypeError" in logged and "Jane" not in logged


def test_availability_errors_fail_the_group_without_retrying_one_by_one() -> None:
    backend = _Backend(fail=NotReady("model 'double' version 1 is not loaded"))
    results = BatchExecutor(backend).execute([_req(1), _req(2)])
    assert all(isinstance(r, NotReady) for r in results) and backend.runs == [2]


class _Task:
    def __init__(self, fail: bool) -> None:
        self.fail = fail

    def run(self, run_model, requests: Sequence[InferRequest]) -> list[dict | HealthAIError]:
        if self.fail:
            raise KeyError("bug in our post-processing")
        out = run_model({"x": np.concatenate([r.inputs["x"] for r in requests])})[0]
        return [{"y": out[i:i + 1] + 100} for i in range(len(requests))]


def test_task_groups_run_apart_from_plain_requests_and_a_task_bug_is_internal() -> None:
    backend = _Backend()
    good, broken = _Task(fail=False), _Task(fail=True)
    batch = [_req(1), InferRequest(_req(2).inputs, task=good), InferRequest(_req(3).inputs, task=broken)]
    plain, tasked, bug = BatchExecutor(backend).execute(batch)
    assert plain["y"][0, 0] == 2 and tasked["y"][0, 0] == 104
    assert isinstance(bug, InternalError)


def test_a_risk_task_bug_answers_internal_not_invalid_argument(make_server, risk_repo, monkeypatch) -> None:
    """Before: any exception in the runtime became INVALID_ARGUMENT, blaming the caller for our bug."""
    def broken(self, run_model, requests):
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(RiskTask, "run", broken)
    server = make_server(risk_repo)
    stub = risk_pb2_grpc.RiskStub(server.channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.Score(risk_pb2.ScoreRequest(model_name="risk_tiny", features=[1, 2, 3, 4]))
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "incident" in err.value.details()
