"""ModelStatistics with Triton's meanings, checked the way perf_analyzer reads them, after real
ModelInfer traffic: lone and batched requests, bad input, failures inside a batch, expired deadlines.

perf_analyzer aborts with "Server side statistics compute counts must be the same" unless
compute_input / compute_infer / compute_output counts agree; Triton counts each of them (and queue)
once per successful request, inference_count in rows, execution_count and batch_stats per execution.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2, service_pb2_grpc

from healthai.errors import InvalidInput

from .test_batching import Gate, wait_queued

POISON = -7.0  # rows starting with this value fail inside the execution (see fail_marked_rows)


def infer_request(rows: int, value: float = 0.5) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="risk_tiny")
    request.inputs.add(name="features", datatype="FP32", shape=[rows, 4])
    request.raw_input_contents.append(np.full((rows, 4), value, np.float32).tobytes())
    return request


def fail_marked_rows(loaded) -> None:
    """A request whose first feature is POISON fails in execution, its batch-mates do not."""
    inner = loaded.runtime.execute

    def execute(batch):
        results = inner(batch)
        return [InvalidInput("poisoned row") if r.inputs["features"][0, 0] == POISON else out
                for r, out in zip(batch, results, strict=True)]

    loaded.runtime.execute = execute


def statistics(server) -> dict:
    with triton.InferenceServerClient(f"127.0.0.1:{server.port}") as client:
        return client.get_inference_statistics("risk_tiny", as_json=True)["model_stats"][0]


def count(stat: dict, key: str) -> int:
    return int(stat.get(key, {}).get("count", 0))


def ns(stat: dict, key: str) -> int:
    return int(stat.get(key, {}).get("ns", 0))


def check_like_perf_analyzer(stats: dict, *, succeeded: int, failed: int, rows: int) -> None:
    s = stats["inference_stats"]
    # perf_analyzer's own check (inference_profiler.cc), then Triton's meanings
    assert count(s, "compute_input") == count(s, "compute_infer") == count(s, "compute_output")
    assert count(s, "success") == count(s, "queue") == count(s, "compute_infer") == succeeded
    assert count(s, "fail") == failed
    assert int(stats["inference_count"]) == rows
    batches = stats.get("batch_stats", [])
    for b in batches:
        assert count(b, "compute_input") == count(b, "compute_infer") == count(b, "compute_output") > 0
    assert int(stats["execution_count"]) == sum(count(b, "compute_infer") for b in batches)
    assert sum(int(b["batch_size"]) * count(b, "compute_infer") for b in batches) == rows
    # a request's time covers its wait and its execution: perf_analyzer's "overhead" is never negative
    compute = ns(s, "compute_input") + ns(s, "compute_infer") + ns(s, "compute_output")
    assert ns(s, "success") >= ns(s, "queue") + compute and ns(s, "compute_infer") > 0


def test_statistics_after_lone_batched_and_failed_requests(risk_repo, make_server):
    server = make_server(risk_repo, inline_execute_max_us=1e6)  # lone requests may also run inline
    stub = service_pb2_grpc.GRPCInferenceServiceStub(server.channel)
    for _ in range(12):  # lone one-row requests: the first 8 on the worker thread, then inline
        stub.ModelInfer(infer_request(1), timeout=10)
    check_like_perf_analyzer(statistics(server), succeeded=12, failed=0, rows=12)

    bad = infer_request(2)
    bad.raw_input_contents[0] = b"\0" * 5  # refused before queueing: a failed request all the same
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(bad, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    loaded = server.plugin.manager.resolve("risk_tiny")
    fail_marked_rows(loaded)
    gate = Gate(loaded)
    held = stub.ModelInfer.future(infer_request(3), timeout=30)
    assert gate.entered.acquire(timeout=10)  # executing: what follows queues and batches
    good = [stub.ModelInfer.future(infer_request(2), timeout=30) for _ in range(5)]
    poisoned = [stub.ModelInfer.future(infer_request(1, POISON), timeout=30) for _ in range(2)]
    expired = stub.ModelInfer.future(infer_request(1), timeout=1.5)
    wait_queued(server, 8)
    with pytest.raises(grpc.RpcError) as err:
        expired.result()
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_queued(server, 7)  # the server's deadline (from its receipt) ends it too: it leaves the queue
    gate.open.set()
    assert all(f.result().outputs for f in [held, *good])
    for f in poisoned:
        with pytest.raises(grpc.RpcError) as err:
            f.result()
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    stats = statistics(server)
    # 12 lone + held (3 rows) + 5 x 2 rows; failed: bad input, 2 poisoned, 1 expired
    check_like_perf_analyzer(stats, succeeded=12 + 1 + 5, failed=1 + 2 + 1, rows=12 + 3 + 10)
    sizes = {int(b["batch_size"]): count(b, "compute_infer") for b in stats["batch_stats"]}
    assert sizes == {1: 12, 3: 1, 10: 1}  # the batch ran 12 rows; its 2 poisoned rows are not counted
    assert int(stats["execution_count"]) == 14
