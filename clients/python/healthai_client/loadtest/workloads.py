"""What the load harness sends: one RPC and a request factory per workload (echo, score, forecast,
ingest). Requests are built up front (ingest makes fresh record ids per request so the store does the
full write path, not the duplicate shortcut)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from healthai.v1 import (
    diagnostics_pb2,
    diagnostics_pb2_grpc,
    forecast_pb2_grpc,
    ingest_pb2,
    ingest_pb2_grpc,
    risk_pb2_grpc,
)
from healthai_client.requests import fhir_request, flat_request, forecast_request, score_request

RPCS = ("echo", "score", "forecast", "ingest")


@dataclass
class Workload:
    name: str
    method: Callable[[grpc.aio.Channel], Callable[..., Any]]  # channel -> unary-unary multicallable
    next_request: Callable[[], Any]
    records_per_request: int = 1  # patients (score) or records (ingest): for "records/s"


def echo(payload_bytes: int = 0) -> Workload:
    request = diagnostics_pb2.EchoRequest(payload=b"x" * payload_bytes)
    return Workload("echo", lambda ch: diagnostics_pb2_grpc.DiagnosticsStub(ch).Echo, lambda: request)


def score(model: str, features: Mapping[str, float], patients: int = 1) -> Workload:
    if not features:
        raise ValueError("score workload needs --features NAME=VALUE,... (one patient's model features)")
    request = score_request(model, [dict(features)] * patients, top_features=0)
    return Workload("score", lambda ch: risk_pb2_grpc.RiskStub(ch).Score, lambda: request, patients)


def forecast(graph: str | None, model: str | None, history: Mapping[str, Sequence[float]] | None,
             stored: str | None, quantile_levels: Sequence[float] = ()) -> Workload:
    request = forecast_request(graph, model=model, history=history, stored=stored,
                               quantile_levels=quantile_levels)
    return Workload("forecast", lambda ch: forecast_pb2_grpc.ForecastStub(ch).Forecast, lambda: request)


def _flat_batch(records: int, run: str, counter: itertools.count[int]) -> ingest_pb2.IngestRequest:
    n = next(counter)
    patients = [{"patient_id": f"load-{run}-{n}-{i}", "sex": "female" if i % 2 else "male",
                 "birth_date": f"{1940 + i % 60}-0{1 + i % 9}", "region": "US-MA"} for i in range(records)]
    return flat_request(f"loadtest/{run}", patients=patients)


def ingest(records: int = 10, fhir_file: Path | None = None) -> Workload:
    """Flat patient records (fresh ids per request), or one FHIR file re-sent (duplicates after the
    first request: the idempotent path)."""
    def method(ch: grpc.aio.Channel) -> Callable[..., Any]:
        return ingest_pb2_grpc.IngestStub(ch).IngestBatch

    if fhir_file is not None:
        request = fhir_request(fhir_file, "loadtest/fhir")
        return Workload("ingest", method, lambda: request)
    if records < 1:
        raise ValueError(f"--records must be >= 1, got {records}")
    run, counter = uuid.uuid4().hex[:8], itertools.count()
    return Workload("ingest", method, lambda: _flat_batch(records, run, counter), records)
