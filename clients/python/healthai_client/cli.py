"""``healthai-client``: ingest, score, forecast, scenario, health and load-test from the shell.

Exit codes: 0 success; 1 partial (some records rejected, the rest stored); 2 usage or unreadable local
input; 3 server unavailable or failed (UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, RESOURCE_EXHAUSTED,
NOT_SERVING health, ...); 4 request refused (INVALID_ARGUMENT, NOT_FOUND, ...); 5 UNAUTHENTICATED or
PERMISSION_DENIED.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc

from healthai_client.errors import HealthAIClientError

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_SERVER, EXIT_REFUSED, EXIT_AUTH = 0, 1, 2, 3, 4, 5
_REFUSED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS,
            grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.UNIMPLEMENTED}
_AUTH = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}


def exit_code_for(code: grpc.StatusCode) -> int:
    if code in _AUTH:
        return EXIT_AUTH
    if code in _REFUSED:
        return EXIT_REFUSED
    return EXIT_SERVER


def _connection_flags(p: argparse.ArgumentParser, retries: int) -> None:
    g = p.add_argument_group("connection")
    g.add_argument("--address", "-a", default=os.environ.get("HEALTHAI_ADDRESS", "127.0.0.1:50051"),
                   help="host:port, or several comma-separated for round-robin (env HEALTHAI_ADDRESS)")
    g.add_argument("--tls", action="store_true", help="use TLS (implied by --root-cert/--client-cert)")
    g.add_argument("--root-cert", type=Path, help="PEM CA bundle that signed the server certificate")
    g.add_argument("--client-cert", type=Path, help="PEM client certificate (mutual TLS)")
    g.add_argument("--client-key", type=Path, help="PEM client key (mutual TLS)")
    g.add_argument("--server-name", help="TLS server name override")
    g.add_argument("--api-key", default=os.environ.get("HEALTHAI_API_KEY"),
                   help="API key (env HEALTHAI_API_KEY); sent as 'authorization: Bearer <key>'")
    g.add_argument("--timeout", type=float, default=30.0, help="deadline per call in seconds, retries "
                   "included (default 30)")
    g.add_argument("--retries", type=int, default=retries,
                   help=f"retries on UNAVAILABLE, on the next address (default {retries})")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of text")


def build_parser() -> argparse.ArgumentParser:
    from healthai_client import cli_commands as cmd
    from healthai_client.loadtest.cli import add_load_parser

    parser = argparse.ArgumentParser(prog="healthai-client", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("health", help="gRPC health status of the server (or one service)")
    p.add_argument("--service", default="", help="e.g. healthai.v1.Risk (default: the whole server)")
    p.set_defaults(func=cmd.health)

    p = sub.add_parser("ingest", help="send FHIR JSON/NDJSON, or CSV/Parquet/Arrow flat records")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.add_argument("--source", default="healthai-client", help="sending system (idempotency key part)")
    p.add_argument("--kind", help="record kind of tabular files (patient, encounter, condition, "
                   "observation); default: from the file name, e.g. patients.csv")
    p.add_argument("--show", type=int, default=20, help="rejected records listed per file (default 20)")
    p.add_argument("--stream", action="store_true", help="send all files in one IngestStream call "
                   "(one batch id and receipt) instead of one IngestBatch call per file")
    p.add_argument("--issues-only", action="store_true", help="ask for full outcomes only of records "
                   "with warnings or rejections (bulk files; counts stay complete)")
    p.set_defaults(func=cmd.ingest)

    p = sub.add_parser("score", help="risk scores for patients from a JSON/CSV file or --set values")
    p.add_argument("--model", "-m", required=True, help="e.g. risk_readmission")
    p.add_argument("--model-version", type=int, default=0, help="pin a version (default newest)")
    p.add_argument("--input", "-i", type=Path, help="JSON list of {feature: value} or CSV with a header"
                   " (an optional 'diagnoses' column holds ';'-separated codes)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="one patient's feature (repeat); instead of --input")
    p.add_argument("--table", type=Path, help="patients as rows of a cohort table (CSV/Parquet), turned into "
                   "features by --spec (the spec the model was trained with); instead of --input")
    p.add_argument("--spec", type=Path, help="the cohort spec (TOML) for --table")
    p.add_argument("--batch", type=int, default=5000, help="--table: rows per Score call (default 5000)")
    p.add_argument("--out", type=Path, metavar="FILE.csv",
                   help="write one line per patient (row, patient id with --table, probability, band, "
                        "Charlson, top features) instead of printing")
    p.add_argument("--top", type=int, help="top contributing features per patient")
    p.set_defaults(func=cmd.score)

    p = sub.add_parser("forecast", help="regional forecast from stored counts or a history file")
    p.add_argument("--graph", "-g", help="named region graph, e.g. japan")
    p.add_argument("--model", "-m", help="model name (instead of --graph)")
    p.add_argument("--model-version", type=int, default=0)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--stored", nargs="?", const="ili", metavar="SYNDROME",
                     help="use the stored surveillance counts of this syndrome (default ili; also flu_lab, "
                          "covid, covid_lab, rsv, rsv_lab or one of the server's syndromes file)")
    src.add_argument("--history", type=Path,
                     help="the series as `train forecast --series` takes it (CSV/Parquet, long region,period,"
                          "count or wide period + regions: dated), a CSV of region-id columns (rows: steps, "
                          "oldest first), a headerless matrix (.csv/.txt) or JSON {region: [counts...]}")
    p.add_argument("--region-ids", type=Path, metavar="FILE",
                   help="--history as a headerless matrix: its columns' ids, one per line (id or id,name), "
                        "as given to train forecast (default: by position, r01, r02, ...)")
    p.add_argument("--negatives", choices=("refuse", "clip", "keep"), default="refuse",
                   help="--history: negative counts (reporting corrections) are refused, as train forecast "
                        "refuses them; clip sets them to 0 (a model trained with --negatives clip); keep "
                        "sends them (only a model trained with --negatives keep takes them)")
    p.add_argument("--columns", type=lambda t: tuple(n.strip() for n in t.split(",")), default=None,
                   metavar="REGION,PERIOD,COUNT",
                   help="--history as a long file with its own column names (hubverse target data is "
                        "recognised without it)")
    p.add_argument("--history-target", default=None, metavar="NAME",
                   help="--history with a 'target' column holding several series: the one to send (--target "
                        "names the hubverse rows written)")
    p.add_argument("--exclude-regions", type=lambda t: tuple(n.strip() for n in t.split(",") if n.strip()),
                   default=(), metavar="IDS",
                   help="--history with a period column: comma-separated regions to leave out (a national "
                        "total such as US beside its states), as train forecast --exclude-regions")
    p.add_argument("--missing", choices=("refuse", "interpolate"), default="refuse",
                   help="--history with a period column: missing cells or periods are refused, as train "
                        "forecast refuses them; interpolate fills them in time from the region's own counts")
    p.add_argument("--end-date", help="last period of the stored window: an ISO date in it "
                   "(default: the period of the store's last case, if it has ended, else the last ended "
                   "one; a store whose data stopped earlier forecasts from where it stopped)")
    p.add_argument("--regions", default="", help="comma-separated region ids to report")
    p.add_argument("--horizons", default="", help="comma-separated steps ahead, e.g. 1,2,4")
    p.add_argument("--quantiles", default="", help="comma-separated levels in (0,1), e.g. 0.05,0.5,0.95")
    p.add_argument("--allow-missing-regions", action="store_true",
                   help="--stored: forecast even when some regions have no stored counts (flagged)")
    p.add_argument("--nowcast", action="store_true",
                   help="--stored: correct the window's latest periods for reporting delay first (a chain "
                        "ladder on the store's ingest dates, as healthai counts --nowcast)")
    p.add_argument("--hubverse", type=Path, metavar="FILE",
                   help="also write hubverse model-output rows (CSV, or Parquet by suffix)")
    p.add_argument("--target", default=None,
                   help="hubverse target name (default 'inc <syndrome>' of --stored, else 'inc ili')")
    p.add_argument("--hubverse-location", choices=("id", "fips"), default="id",
                   help="hubverse location codes: the model's region ids (default), or US FIPS codes "
                   "(2-digit states, as FluSight's hubs use; county ids are FIPS already)")
    p.add_argument("--reference-date", help="hubverse reference date for a --history without periods "
                   "(the last day of its last period, ISO date; a dated or stored history gives its own "
                   "and refuses another)")
    p.add_argument("--plot", type=Path, metavar="FILE.png",
                   help="draw each region's recent history with the quantile fan (at most 12 regions: "
                   "the busiest, or --plot-regions)")
    p.add_argument("--plot-regions", metavar="ID,ID", default="",
                   help="the regions --plot draws (comma-separated ids of the forecast)")
    p.set_defaults(func=cmd.forecast)

    p = sub.add_parser("regions", help="a forecaster's regions (id, name, accepted aliases), "
                       "window, step and horizons (--json: one object)")
    p.add_argument("--graph", "-g", help="named region graph, e.g. japan")
    p.add_argument("--model", "-m", help="model name (instead of --graph)")
    p.add_argument("--model-version", type=int, default=0)
    p.set_defaults(func=cmd.regions)

    add_load_parser(sub)
    from healthai_client.scenario_cli import add_scenario_parsers

    add_scenario_parsers(sub)
    for name, child in sub.choices.items():
        _connection_flags(child, retries=0 if name == "load" else 4)  # load measures raw errors
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help is 0, a usage error 2
        return int(e.code or 0)
    try:
        return int(args.func(args))
    except HealthAIClientError as e:
        print(f"healthai-client: {e}", file=sys.stderr)
        return exit_code_for(e.code)
    except (ValueError, OSError) as e:
        print(f"healthai-client: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
