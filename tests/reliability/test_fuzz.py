"""Fuzz pass against a real ``healthai serve``: FHIR JSON, flat records and Arrow IPC through
Ingest.IngestBatch, and KServe ModelInfer decoding. Every call finishes under a deadline (no hang),
fails only with a clean status naming the problem (never UNKNOWN / INTERNAL), and the server still
answers health afterwards (no crash). Derandomized and bounded, so CI runs the same examples."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from tritonclient.grpc import service_pb2, service_pb2_grpc

from healthai.v1 import ingest_pb2, ingest_pb2_grpc

from .fuzzkit import arrow_streams, fhir_payloads, flat_records, infer_requests, synthea_excerpt
from .serverkit import ServerProcess, log_problems, server_process

CALL_DEADLINE_S = 10.0
CLEAN = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.NOT_FOUND}
FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=150,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with server_process(tmp_path_factory.mktemp("fuzz")) as running:
        yield running


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address, options=[("grpc.max_receive_message_length", 64 << 20)]) as ch:
        yield ch


def _call(server: ServerProcess, method: Callable[..., Any], request: Any, seen: Counter[str]) -> Any:
    """The reply, or None after a clean refusal; anything else fails with the server's log.
    ``seen`` counts the outcomes (status code names)."""
    try:
        reply = method(request, timeout=CALL_DEADLINE_S)
        seen["OK"] += 1
        return reply
    except grpc.RpcError as e:
        seen[e.code().name] += 1
        assert e.code() in CLEAN, (f"{e.code()} {e.details()!r} for request {str(request)[:600]}\n"
                                   f"{log_problems(server)}")
        assert e.details(), f"{e.code()} without a message"
        return None


def _assert_alive(server: ServerProcess, channel: grpc.Channel) -> None:
    assert server.proc.poll() is None, f"server crashed:\n{log_problems(server)}"
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def _check_ingest_reply(reply: ingest_pb2.IngestResponse | None, seen: Counter[str]) -> None:
    if reply is not None:  # per-record accounting holds whatever came in
        assert reply.accepted + reply.rejected == len(reply.statuses)
        seen["records accepted"] += reply.accepted
        seen["records rejected"] += reply.rejected


def _assert_varied(seen: Counter[str], *wanted: str) -> None:
    """The fuzzer reached past the first check: each wanted outcome happened at least once."""
    print(dict(seen))
    assert all(seen[w] for w in wanted), dict(seen)


@pytest.mark.slow
def test_fuzz_fhir_json(server: ServerProcess, channel: grpc.Channel, shared_data: Path) -> None:
    ingest = ingest_pb2_grpc.IngestStub(channel).IngestBatch
    seen: Counter[str] = Counter()
    excerpt = synthea_excerpt(shared_data / "fhir")

    @FUZZ
    @given(fhir_payloads(excerpt))
    def one(payload: bytes) -> None:
        request = ingest_pb2.IngestRequest(source="fuzz/fhir", fhir=ingest_pb2.FhirPayload(json=payload))
        _check_ingest_reply(_call(server, ingest, request, seen), seen)

    one()
    _assert_alive(server, channel)
    _assert_varied(seen, "OK", "INVALID_ARGUMENT", "records accepted")


@pytest.mark.slow
def test_fuzz_flat_records(server: ServerProcess, channel: grpc.Channel) -> None:
    ingest = ingest_pb2_grpc.IngestStub(channel).IngestBatch
    seen: Counter[str] = Counter()

    @FUZZ
    @given(flat_records)
    def one(flat: ingest_pb2.FlatRecords) -> None:
        request = ingest_pb2.IngestRequest(source="fuzz/flat", flat=flat)
        _check_ingest_reply(_call(server, ingest, request, seen), seen)

    one()
    _assert_alive(server, channel)
    _assert_varied(seen, "OK", "records accepted", "records rejected")


@pytest.mark.slow
def test_fuzz_arrow_ipc(server: ServerProcess, channel: grpc.Channel) -> None:
    ingest = ingest_pb2_grpc.IngestStub(channel).IngestBatch
    seen: Counter[str] = Counter()

    @FUZZ
    @given(arrow_streams())
    def one(arrow: ingest_pb2.ArrowRecords) -> None:
        request = ingest_pb2.IngestRequest(source="fuzz/arrow", arrow=arrow)
        _check_ingest_reply(_call(server, ingest, request, seen), seen)

    one()
    _assert_alive(server, channel)
    _assert_varied(seen, "OK", "INVALID_ARGUMENT", "records accepted")


@pytest.mark.parametrize("shape", [[0, 2**62], [2**62, 4]])
@pytest.mark.parametrize("raw", [False, True])
def test_kserve_huge_shape_is_invalid_argument(channel: grpc.Channel, shape: list[int], raw: bool) -> None:
    request = service_pb2.ModelInferRequest(model_name="forecast_japan")
    request.inputs.add(name="history", datatype="FP32", shape=shape)
    if raw:
        request.raw_input_contents.append(b"")
    with pytest.raises(grpc.RpcError) as caught:
        service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=CALL_DEADLINE_S)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()


@pytest.mark.slow
def test_fuzz_kserve_model_infer(server: ServerProcess, channel: grpc.Channel) -> None:
    infer = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer
    seen: Counter[str] = Counter()

    @settings(FUZZ, max_examples=400)
    @given(infer_requests)
    def one(request: Any) -> None:
        _call(server, infer, request, seen)

    one()
    _assert_alive(server, channel)
    _assert_varied(seen, "OK", "INVALID_ARGUMENT", "NOT_FOUND")
