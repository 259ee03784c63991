"""``healthai federate coordinator ...`` and ``healthai federate site ...`` (Flower deployment engine).

    healthai federate coordinator --spec cohort.toml --rounds 5 --min-sites 4 --strategy fedadam \\
        --secagg --export-to server/healthai/data/models
    healthai federate site --superlink coordinator:9092 --table site.csv --spec cohort.toml --site north
    healthai federate keygen keys/north.key      # north.key stays at the site, north.key.pub goes to
                                                 # the coordinator (--site-key)

Relative paths are the caller's (resolved before Flower runs in its own folders). SIGTERM or SIGINT
stops the coordinator's SuperLink and everything under it (exit 128 + signal). A site first waits
up to ``--connect-timeout`` seconds for the SuperLink's address to accept connections (naming the
address and the error), then exits 2; Flower's own reconnection is bounded by the same time.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import time
from pathlib import Path

from healthai.errors import InputFileError
from healthai_training.errors import TrainingInputError
from healthai_training.federated.deploy import TASK_START_WINDOW_S

logger = logging.getLogger(__name__)


def _tls(args: argparse.Namespace):
    from healthai_training.federated.deploy import Tls

    given = [f for f in ("tls_cert", "tls_key") if getattr(args, f, None) is not None]
    if args.tls_ca is None and given:  # never a plaintext link the user asked to be TLS
        raise TrainingInputError(f"--{given[0].replace('_', '-')} needs --tls-ca (TLS is on only with a CA)",
                                 field="tls_ca")
    if args.tls_ca is None:
        return None
    cert, key = getattr(args, "tls_cert", None), getattr(args, "tls_key", None)
    return Tls(ca=args.tls_ca.resolve(), cert=cert.resolve() if cert else None,
               key=key.resolve() if key else None)


def _coordinator(args: argparse.Namespace) -> int:
    from healthai_training.federated import deploy
    from healthai_training.federated.coordinator import FederationSettings, export_federated, run_federation

    settings = FederationSettings(
        spec=args.spec, rounds=args.rounds, strategy=args.strategy, min_sites=args.min_sites,
        fraction_fit=args.fraction_fit, local_epochs=args.local_epochs, batch_size=args.batch_size,
        lr=args.lr,
        server_lr=args.server_lr, hidden=args.hidden, epsilon=None if args.non_private else args.epsilon,
        delta=args.delta, max_grad_norm=args.max_grad_norm, secagg=args.secagg,
        round_timeout=args.round_timeout, evaluate_every=args.evaluate_every,
        task_start_window=args.task_start_window,
        seed=args.seed, secagg_max_weight=args.secagg_max_weight,
    )
    workdir = (args.workdir or Path(args.runs_dir) / "federation").resolve()  # flwr runs in it: no relative
    try:
        with deploy.stop_on_signals():  # every child stopped (run_federation's finally), then exit
            report = run_federation(settings, workdir=workdir, host=args.host, port=args.port, tls=_tls(args),
                                    site_keys=tuple(k.resolve() for k in args.site_key), timeout=args.timeout)
    except deploy.Stopped as exc:
        name = signal.Signals(exc.signum).name
        print(f"error: stopped by {name}; the SuperLink and every process under it were stopped")
        return 128 + exc.signum
    run_dir, card = export_federated(report, settings, runs_dir=args.runs_dir, name=args.model_name,
                                     export_repo=args.export_to)
    summary = {"run_dir": str(run_dir), "mean_site_accuracy": card["metrics"]["mean_site_accuracy"],
               "epsilon": card["privacy"]["epsilon"], "refused": len(report["refused"]),
               "refused_sites": sorted({str(r.get("site", r["node_id"])) for r in report["refused"]}),
               "failed_sites_by_round": report.get("failed_sites", {}),
               "wall_time_s": report["wall_time_s"]}
    print(json.dumps(summary))
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


def _address(superlink: str) -> tuple[str, int]:
    host, sep, port = superlink.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise TrainingInputError(f"--superlink must be HOST:PORT, got {superlink!r}", field="superlink")
    return host, int(port)


def wait_for_superlink(superlink: str, *, timeout: float, site: str) -> None:
    """Until ``superlink`` accepts a TCP connection; a clean error naming it after ``timeout`` s."""
    host, port = _address(superlink)
    deadline = time.monotonic() + timeout
    logged = 0.0
    while True:
        try:
            with socket.create_connection((host, port), timeout=5):
                logger.info("site %s: SuperLink %s is reachable", site, superlink)
                return
        except OSError as exc:
            error = exc.strerror or str(exc) or type(exc).__name__
            now = time.monotonic()
            if now >= deadline:
                raise TrainingInputError(f"SuperLink {superlink} not reachable after {timeout:.0f} s: "
                                         f"{error} (check --superlink, and that the coordinator runs)",
                                         field="superlink") from exc
            if now - logged >= 30:
                logger.warning("site %s: SuperLink %s not reachable (%s); retrying for up to %.0f s more",
                               site, superlink, error, deadline - now)
                logged = now
        time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))


def _site(args: argparse.Namespace) -> int:
    from healthai_training.federated import deploy
    from healthai_training.risk.cohort import build_cohort, load_spec, read_table

    # A site's data: a table + spec (issue 9). Not wired yet: ``--from-store URI`` would build the
    # site's cohort here with ``risk.store_cohort.build_store_cohort(uri, StoreCohortOptions(
    # min_measured=0, ...))``, write its table beside the site's FLWR home and pass that path as
    # ``table`` (the spec stays the coordinator's ``--spec``, so every site has the same features).
    # Bad table/spec: exit 2 before connecting (what ``task.load_site`` builds, without torch)
    build_cohort(read_table(args.table), load_spec(args.spec), seed=args.seed, source=Path(args.table).name,
                 impute="midpoint")
    cmd = deploy.supernode_command(superlink=args.superlink, table=args.table, spec=args.spec,
                                   site=args.site, seed=args.seed, tls_ca=args.tls_ca, auth_key=args.auth_key,
                                   runtime_port=args.runtime_port, task_start_window=args.task_start_window,
                                   max_wait_time=args.connect_timeout,
                                   extra_config={"record-updates": str(args.record_updates.resolve())}
                                   if args.record_updates else None)
    home = Path(args.flwr_home or Path.home() / ".flwr-healthai" / args.site)
    wait_for_superlink(args.superlink, timeout=args.connect_timeout, site=args.site)
    # exec: this process becomes the SuperNode (signals, SIGKILL included, reach it; no orphan)
    os.execve(cmd[0], cmd, deploy.tool_env(home))
    return 1  # not reached


def _keygen(args: argparse.Namespace) -> int:
    from healthai_training.federated import deploy

    private, public = deploy.write_site_key(args.path)
    print(json.dumps({"private_key": str(private), "public_key": str(public)}))
    return 0


def _guard(func):
    def run(args: argparse.Namespace) -> int:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("healthai_training").setLevel(logging.INFO)
        try:
            return func(args)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] == "flwr":
                print("error: flwr is not installed; pip install -r training/requirements-federated.txt")
                return 2
            raise
        except InputFileError as exc:  # TrainingInputError, or a table / spec the shared readers refused
            print(f"error: {exc.message}")
            return 2

    return run


def register(sub: argparse._SubParsersAction) -> None:
    fed = sub.add_parser("federate", help="federated risk training across sites (Flower, DP at each site)")
    roles = fed.add_subparsers(dest="role", required=True)
    co = roles.add_parser("coordinator", help="SuperLink + ServerApp: run the federation, export the model")
    co.add_argument("--spec", type=Path, required=True, help="the cohort spec every site uses (TOML)")
    co.add_argument("--rounds", type=int, default=5)
    co.add_argument("--strategy", choices=("fedavg", "fedadam", "fedyogi", "fedadagrad"), default="fedavg")
    co.add_argument("--min-sites", type=int, default=2, help="sites needed to start a round and to aggregate")
    co.add_argument("--fraction-fit", type=float, default=1.0)
    co.add_argument("--local-epochs", type=int, default=1)
    co.add_argument("--batch-size", type=int, default=32)
    co.add_argument("--lr", type=float, default=0.05, help="site SGD learning rate")
    co.add_argument("--server-lr", type=float, default=0.1, help="server learning rate (adaptive strategies)")
    co.add_argument("--hidden", type=int, default=0, help="0: logistic regression; >0: one hidden layer")
    g = co.add_mutually_exclusive_group()
    g.add_argument("--epsilon", type=float, default=1.2, help="each site's target epsilon over all rounds")
    g.add_argument("--non-private", action="store_true")
    co.add_argument("--delta", type=float, default=1e-5)
    co.add_argument("--max-grad-norm", type=float, default=1.0)
    co.add_argument("--secagg", action="store_true", help="Flower SecAgg+ (needs --min-sites >= 3)")
    co.add_argument("--secagg-max-weight", type=float, default=1000.0,
                    help="SecAgg+ weight scale: at least the largest site's patient count")
    co.add_argument("--round-timeout", type=float, default=120.0, help="seconds to wait for site replies")
    co.add_argument("--evaluate-every", type=int, default=1,
                    help="sites evaluate the global model every N rounds (and after the last)")
    co.add_argument("--timeout", type=float, default=3600.0, help="seconds for the whole run")
    co.add_argument("--task-start-window", type=float, default=TASK_START_WINDOW_S,
                    help="seconds the ServerApp process may take to start (Flower's own: 30)")
    co.add_argument("--seed", type=int, default=0)
    co.add_argument("--host", default="127.0.0.1")
    co.add_argument("--port", type=int, default=9092)
    co.add_argument("--tls-ca", type=Path, default=None, help="CA certificate (enables TLS)")
    co.add_argument("--tls-cert", type=Path, default=None)
    co.add_argument("--tls-key", type=Path, default=None)
    co.add_argument("--site-key", type=Path, action="append", default=[],
                    help="a site's public key (OpenSSH EC); enables SuperNode authentication (repeat)")
    co.add_argument("--workdir", type=Path, default=None)
    co.add_argument("--runs-dir", type=Path, default=Path("runs"))
    co.add_argument("--export-to", type=Path, default=None, help="model repository to publish into")
    co.add_argument("--model-name", default="risk_federated")
    co.add_argument("--json", type=Path, default=None)
    co.set_defaults(func=_guard(_coordinator))
    site = roles.add_parser("site", help="SuperNode + ClientApp on this site's own table + spec")
    site.add_argument("--superlink", required=True, help="coordinator host:port")
    site.add_argument("--table", type=Path, required=True)
    site.add_argument("--spec", type=Path, required=True)
    site.add_argument("--site", required=True, help="this site's name (in the model card)")
    site.add_argument("--seed", type=int, default=0)
    site.add_argument("--tls-ca", type=Path, default=None,
                      help="CA that signed the coordinator's certificate")
    site.add_argument("--auth-key", type=Path, default=None, help="this site's private key (OpenSSH EC)")
    site.add_argument("--runtime-port", type=int, default=9094,
                      help="local port of the ClientApp runtime API")
    site.add_argument("--task-start-window", type=float, default=TASK_START_WINDOW_S,
                      help="seconds a ClientApp process may take to start (Flower's own: 30)")
    site.add_argument("--flwr-home", type=Path, default=None)
    site.add_argument("--connect-timeout", type=float, default=600.0,
                      help="seconds to wait for the SuperLink (before and while connecting), then exit")
    site.add_argument("--record-updates", type=Path, default=None,
                      help="keep this site's own plain updates here (audit of secure aggregation)")
    site.set_defaults(func=_guard(_site))
    key = roles.add_parser("keygen", help="a site's SuperNode key pair (PATH private, PATH.pub public)")
    key.add_argument("path", type=Path)
    key.set_defaults(func=_guard(_keygen))
