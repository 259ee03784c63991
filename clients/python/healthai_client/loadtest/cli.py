"""``healthai-client load``: drive one RPC closed- or open-loop; print a summary, write JSON + PNG."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from functools import partial
from pathlib import Path
from typing import Any

from healthai_client.connection import ConnectionConfig
from healthai_client.loadtest import workloads
from healthai_client.loadtest.multiproc import run_load_processes
from healthai_client.loadtest.report import text_summary, write_json, write_png
from healthai_client.loadtest.rss import RssSampler
from healthai_client.loadtest.runner import LoadConfig, LoadResult, run_load
from healthai_client.plotting import HINT, can_plot
from healthai_client.requests import load_json
from healthai_client.retry import RetryPolicy


def add_load_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("load", help="load test: closed loop (N callers) or open loop (fixed arrival rate)")
    p.add_argument("--rpc", choices=workloads.RPCS, default="echo")
    p.add_argument("--mode", choices=("closed", "open"), default="closed")
    p.add_argument("--concurrency", "-c", default="8", help="closed loop: concurrent callers; a "
                   "comma-separated list (1,8,32) runs a sweep and prints a table")
    p.add_argument("--rate", "-r", default="100", help="open loop: requests per second (or a list)")
    p.add_argument("--processes", "-p", type=int, default=1, help="generate the load from N processes "
                   "(one Python process tops out at a few thousand calls/s)")
    p.add_argument("--poisson", action="store_true", help="open loop: Poisson arrivals (default fixed)")
    p.add_argument("--requests", "-n", type=int, default=1000, help="stop after this many (0 = no limit)")
    p.add_argument("--duration", "-d", type=float, default=30.0, help="stop after seconds (0 = no limit)")
    p.add_argument("--out", type=Path, help="write <out>.json and <out>.png (e.g. results/echo-c8)")
    p.add_argument("--rss-pid", type=int, help="sample this server process's resident memory during "
                   "the run (automatic with --spawn)")
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


def _levels(text: str, cast: type, flag: str) -> list[Any]:
    try:
        levels = [cast(x) for x in str(text).split(",") if x.strip()]
    except ValueError as e:
        raise ValueError(f"{flag} {text!r}: expected a number or a comma-separated list") from e
    if not levels:
        raise ValueError(f"{flag}: give at least one value")
    return levels


def _configs(args: argparse.Namespace) -> list[LoadConfig]:
    common = dict(mode=args.mode, poisson=args.poisson, max_requests=args.requests or None,
                  duration_s=args.duration or None, timeout_s=args.timeout,
                  retry=RetryPolicy(max_attempts=args.retries + 1) if args.retries > 0 else None)
    if args.mode == "closed":
        return [LoadConfig(concurrency=c, **common) for c in _levels(args.concurrency, int, "--concurrency")]
    return [LoadConfig(rate=r, **common) for r in _levels(args.rate, float, "--rate")]


def sweep_table(results: list[LoadResult]) -> str:
    head = "concurrency" if results[0].config.mode == "closed" else "rate/s"
    lines = [f"{head:>11} {'ok/s':>10} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'p99.9 ms':>9}  errors"]
    for r in results:
        d = r.to_dict()
        lat = d["latency_ms"]
        level = d["concurrency"] if r.config.mode == "closed" else d["target_rate_per_s"]
        errors = ", ".join(f"{k} {v}" for k, v in sorted(d["errors"].items())) or "-"
        lines.append(f"{level:>11g} {d['throughput_per_s']:>10.1f} " + " ".join(
            f"{lat[k]:>9.3f}" for k in ("p50", "p90", "p99", "p99.9")) + f"  {errors}")
    return "\n".join(lines)


def load(args: argparse.Namespace) -> int:
    configs = _configs(args)
    if args.out and not can_plot():
        print(f"--out writes JSON only: its PNG {HINT}", file=sys.stderr)
    workload = build_workload(args)
    results: list[LoadResult] = []
    with contextlib.ExitStack() as stack:
        address = args.address
        if args.spawn:
            from healthai_client.loadtest.spawn import spawned_server

            address, pid = stack.enter_context(spawned_server())
            args.rss_pid = args.rss_pid or pid
        conn = ConnectionConfig(tuple(a.strip() for a in address.split(",") if a.strip()), tls=args.tls,
                                root_cert=args.root_cert, client_cert=args.client_cert,
                                client_key=args.client_key, server_name=args.server_name,
                                api_key=args.api_key)
        for cfg in configs:
            with contextlib.ExitStack() as watch:
                sampler = watch.enter_context(RssSampler(args.rss_pid)) if args.rss_pid else None
                if args.processes > 1:
                    result = run_load_processes(conn, partial(build_workload, args), cfg, args.processes)
                else:
                    result = run_load(conn, workload, cfg)
            if sampler is not None:
                result.rss_samples = sampler.samples
            results.append(result)
            if args.out:
                suffix = "" if len(configs) == 1 else (
                    f"-c{cfg.concurrency}" if cfg.mode == "closed" else f"-r{cfg.rate:g}")
                out = args.out.with_name(args.out.name + suffix)
                write_json(result, out.with_suffix(".json"))
                if can_plot():
                    write_png(result, out.with_suffix(".png"))
            if not args.json:
                print(text_summary(result))
    if args.json:
        dicts = [r.to_dict() for r in results]
        print(json.dumps(dicts[0] if len(dicts) == 1 else dicts, indent=2))
    elif len(results) > 1:
        print(sweep_table(results))
    if any(r.succeeded == 0 for r in results):
        return 3
    return 0 if not any(r.errors for r in results) else 1
