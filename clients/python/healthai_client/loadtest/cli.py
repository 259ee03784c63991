"""``healthai-client load``: drive one RPC closed- or open-loop; print a summary, write JSON + PNG."""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import Any

from healthai_client.connection import ConnectionConfig
from healthai_client.loadtest import workloads
from healthai_client.loadtest.report import text_summary, write_json, write_png
from healthai_client.loadtest.runner import LoadConfig, run_load
from healthai_client.requests import load_json
from healthai_client.retry import RetryPolicy


def add_load_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("load", help="load test: closed loop (N callers) or open loop (fixed arrival rate)")
    p.add_argument("--rpc", choices=workloads.RPCS, default="echo")
    p.add_argument("--mode", choices=("closed", "open"), default="closed")
    p.add_argument("--concurrency", "-c", type=int, default=8, help="closed loop: concurrent callers")
    p.add_argument("--rate", "-r", type=float, default=100.0, help="open loop: requests per second")
    p.add_argument("--poisson", action="store_true", help="open loop: Poisson arrivals (default fixed)")
    p.add_argument("--requests", "-n", type=int, default=1000, help="stop after this many (0 = no limit)")
    p.add_argument("--duration", "-d", type=float, default=30.0, help="stop after seconds (0 = no limit)")
    p.add_argument("--out", type=Path, help="write <out>.json and <out>.png (e.g. results/echo-c8)")
    p.add_argument("--spawn", action="store_true", help="start a dev server on a free loopback port "
                   "and target it (instead of --address)")
    g = p.add_argument_group("workload")
    g.add_argument("--payload-bytes", type=int, default=0, help="echo: payload size")
    g.add_argument("--model", help="score: risk model name; forecast: model name (or --graph)")
    g.add_argument("--features", default="", help="score: one patient, NAME=VALUE,NAME=VALUE,...")
    g.add_argument("--patients", type=int, default=1, help="score: patients per request")
    g.add_argument("--graph", help="forecast: named region graph, e.g. japan")
    g.add_argument("--history", type=Path, help="forecast: JSON {region: [counts...]}")
    g.add_argument("--stored", nargs="?", const="ili", help="forecast: use stored counts (syndrome)")
    g.add_argument("--quantiles", default="", help="forecast: comma-separated levels")
    g.add_argument("--records", type=int, default=10, help="ingest: flat patient records per request")
    g.add_argument("--fhir-file", type=Path, help="ingest: re-send this FHIR file instead")
    p.set_defaults(func=load)


def _features(text: str) -> dict[str, float]:
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--features item {item!r} must be NAME=VALUE")
        out[name] = float(value)
    return out


def build_workload(args: argparse.Namespace) -> workloads.Workload:
    if args.rpc == "echo":
        return workloads.echo(args.payload_bytes)
    if args.rpc == "score":
        if not args.model:
            raise ValueError("--rpc score needs --model")
        return workloads.score(args.model, _features(args.features), args.patients)
    if args.rpc == "forecast":
        history: Any = load_json(args.history) if args.history else None
        levels = [float(q) for q in args.quantiles.split(",") if q.strip()]
        return workloads.forecast(args.graph, args.model, history, args.stored, levels)
    return workloads.ingest(args.records, args.fhir_file)


def load(args: argparse.Namespace) -> int:
    cfg = LoadConfig(mode=args.mode, concurrency=args.concurrency, rate=args.rate, poisson=args.poisson,
                     max_requests=args.requests or None, duration_s=args.duration or None,
                     timeout_s=args.timeout,
                     retry=RetryPolicy(max_attempts=args.retries + 1) if args.retries > 0 else None)
    workload = build_workload(args)
    with contextlib.ExitStack() as stack:
        address = args.address
        if args.spawn:
            from healthai_client.loadtest.spawn import spawned_server

            address = stack.enter_context(spawned_server())
        conn = ConnectionConfig(tuple(a.strip() for a in address.split(",") if a.strip()), tls=args.tls,
                                root_cert=args.root_cert, client_cert=args.client_cert,
                                client_key=args.client_key, server_name=args.server_name,
                                api_key=args.api_key)
        result = run_load(conn, workload, cfg)
    if args.out:
        write_json(result, args.out.with_suffix(".json"))
        write_png(result, args.out.with_suffix(".png"))
    print(json.dumps(result.to_dict(), indent=2) if args.json else text_summary(result))
    if result.succeeded == 0:
        return 3
    return 0 if not result.errors else 1
