#!/usr/bin/env python3
"""Container health check over the gRPC health protocol (``grpc.health.v1.Health/Check``).

Used by the image's ``HEALTHCHECK``; Kubernetes uses its native ``grpc`` probes instead. Exit 0 when
the server answers SERVING, 1 otherwise (NOT_SERVING, unreachable, deadline exceeded).

The port defaults to ``HEALTHAI_HEALTH_PORT`` (a plaintext health-only listener, needed when the main
port requires TLS), else ``HEALTHAI_PORT``, else 50051; always on loopback, inside the container.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

DEFAULT_PORT = 50051


def default_address(environ: Mapping[str, str] = os.environ) -> str:
    port = environ.get("HEALTHAI_HEALTH_PORT") or environ.get("HEALTHAI_PORT") or str(DEFAULT_PORT)
    return f"127.0.0.1:{port}"


def check(address: str, service: str = "", timeout_s: float = 3.0) -> tuple[bool, str]:
    """(serving?, what was seen) for one Health/Check call on a plaintext channel."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as e:
            return False, f"{e.code().name}: {e.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default=default_address(), help="host:port (default: %(default)s)")
    parser.add_argument("--service", default="", help="service name; empty = the whole server")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds (default: %(default)s)")
    args = parser.parse_args(argv)
    ok, seen = check(args.address, args.service, args.timeout)
    print(f"{args.address} {args.service or '<server>'}: {seen}", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
