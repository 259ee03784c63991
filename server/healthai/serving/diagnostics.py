"""Diagnostics.Echo: the trivial RPC on the same server stack that latency benchmarks compare to."""

from __future__ import annotations

import grpc

from healthai.v1 import diagnostics_pb2, diagnostics_pb2_grpc

SERVICE_NAME = "healthai.v1.Diagnostics"


class DiagnosticsServicer(diagnostics_pb2_grpc.DiagnosticsServicer):
    async def Echo(self, request: diagnostics_pb2.EchoRequest,
                   context: grpc.aio.ServicerContext) -> diagnostics_pb2.EchoResponse:
        return diagnostics_pb2.EchoResponse(payload=request.payload)
