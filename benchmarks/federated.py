"""FLamby Fed-Heart-Disease protocol: pooled, local, FedAvg, adaptive (FedAdam), DP and DP + SecAgg+.

Data: ../shared/data/risk/uci_heart_disease, 4 sites, FLamby's 740 complete rows (spec
benchmarks/flamby_heart.toml), per site a seeded train/test split of FLamby's sizes (199/104,
172/89, 30/16, 85/45; FLamby's own row assignment is not reproduced). Metric: mean over the 4 sites
of per-site test accuracy; mean ± sd over seeds. Model: logistic regression on domain-scaled
features (``--hidden N`` for the small MLP).

The pooled / local / FedAvg / adaptive / DP rows run the sites' own code (``federated.task``:
Opacus DP-SGD per site, RDP accountant over all rounds) and Flower's strategy objects for the
aggregation, in one process: the algorithm, not the transport. ``--deployment`` adds the DP + SecAgg+
row from real deployment-engine runs (SuperLink + 4 SuperNodes on loopback) with their wall time.

    python benchmarks/federated.py --seeds 0,1,2,3,4 [--deployment]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.strategy import FedAdam, FedAvg
from torch.utils.data import TensorDataset

from healthai_training.federated import task
from healthai_training.risk.cohort import build_cohort, load_spec

ROOT = Path(__file__).resolve().parent
DATA = ROOT.parent.parent / "shared/data/risk/uci_heart_disease/heart_disease_4sites.csv"
SPEC = ROOT / "flamby_heart.toml"
SIZES = {"cleveland": (199, 104), "hungarian": (172, 89), "switzerland": (30, 16), "va_long_beach": (85, 45)}


class _Proxy:
    def __init__(self, node_id: int) -> None:
        self.node_id = node_id


def load_sites(seed: int) -> dict[str, tuple]:
    df = pd.read_csv(DATA)
    spec = load_spec(SPEC)
    sites = {}
    for i, (site, (n_train, n_test)) in enumerate(SIZES.items()):
        data = build_cohort(df[df["site"] == site].reset_index(drop=True), spec, seed=seed, source=site,
                            impute="midpoint")
        assert len(data.y) == n_train + n_test, (site, len(data.y))
        order = np.random.default_rng(seed * 10 + i).permutation(len(data.y))
        sites[site] = (data, order[:n_train], order[n_train:])
    return sites


def site_accuracy(weights: list[np.ndarray], sites: dict, hidden: int) -> list[float]:
    out = []
    for data, _, test in sites.values():
        net = task.new_model(data, hidden=hidden)
        task.set_weights(net, weights)
        out.append(task.evaluate(net, data, test)["accuracy"])
    return out


def federate(sites: dict, *, seed: int, rounds: int, strategy: str, cfg: task.LocalConfig, hidden: int,
             server_lr: float) -> tuple[list[np.ndarray], dict[str, float]]:
    first = next(iter(sites.values()))[0]
    init = task.get_weights(task.new_model_for((first.features, first.domains), hidden=hidden, seed=seed))
    kwargs = {"min_fit_clients": 1, "min_available_clients": 1,
              "initial_parameters": ndarrays_to_parameters(init)}
    agg = (FedAvg(**kwargs) if strategy == "fedavg"
           else FedAdam(**kwargs, eta=server_lr, eta_l=cfg.lr, tau=1e-3))
    weights, histories = init, {s: [] for s in sites}
    eps = {}
    for rnd in range(1, rounds + 1):
        results = []
        for i, (site, (data, train, _)) in enumerate(sites.items()):
            net = task.new_model(data, hidden=hidden)
            task.set_weights(net, weights)
            out = task.local_round(net, task.training_set(data, train, seed=seed), cfg,
                                   history=histories[site], seed=seed * 1000 + rnd * 10 + i)
            eps[site] = out["epsilon"]
            update = ndarrays_to_parameters(task.get_weights(net))
            results.append((_Proxy(i), FitRes(Status(Code.OK, ""), update, len(train), {})))
        params, _ = agg.aggregate_fit(rnd, results, [])
        weights = parameters_to_ndarrays(params)
    return weights, eps


def run_rows(seed: int, args: argparse.Namespace) -> dict[str, object]:
    sites = load_sites(seed)
    base = {"rounds": args.rounds, "local_epochs": args.local_epochs, "batch_size": args.batch_size,
            "lr": args.lr, "seed": seed}
    rows: dict[str, object] = {}
    # pooled: every site's training rows in one place (non-private), same optimiser and epochs
    first = next(iter(sites.values()))[0]
    pooled = TensorDataset(*(torch.cat(parts) for parts in zip(
        *(task.training_set(d, tr, seed=seed).tensors for d, tr, _ in sites.values()), strict=True)))
    net = task.new_model_for((first.features, first.domains), hidden=args.hidden, seed=seed)
    epochs = args.rounds * args.local_epochs
    single = task.LocalConfig(**{**base, "rounds": 1, "local_epochs": epochs, "epsilon": None})
    task.local_round(net, pooled, single, history=[], seed=seed)
    rows["pooled"] = float(np.mean(site_accuracy(task.get_weights(net), sites, args.hidden)))
    local = []
    for data, train, _ in sites.values():
        net = task.new_model_for((data.features, data.domains), hidden=args.hidden, seed=seed)
        task.local_round(net, task.training_set(data, train, seed=seed),
                         single, history=[], seed=seed)
        local.append(float(np.mean(site_accuracy(task.get_weights(net), sites, args.hidden))))
    rows["local_min"], rows["local_max"] = min(local), max(local)
    runs = (("fedavg", "fedavg", None), ("fedadam", "fedadam", None),
            ("dp_fedavg", "fedavg", args.epsilon), ("dp_fedadam", "fedadam", args.epsilon))
    for name, strategy, eps in runs:
        cfg = task.LocalConfig(**{**base, "epsilon": eps, "delta": 1e-5, "max_grad_norm": 1.0})
        weights, spent = federate(sites, seed=seed, rounds=args.rounds, strategy=strategy, cfg=cfg,
                                  hidden=args.hidden, server_lr=args.server_lr)
        rows[name] = float(np.mean(site_accuracy(weights, sites, args.hidden)))
        if eps is not None:
            rows[f"{name}_max_site_epsilon"] = max(spent.values())
    return rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def site_train_tables(seed: int, folder: Path) -> dict[str, Path]:
    """Each site's FLamby training rows (the rows ``load_sites`` trains on) as the site's own table:
    the deployment sites never see the FLamby test rows they are scored on here."""
    df, spec = pd.read_csv(DATA), load_spec(SPEC)
    columns = [f.name for f in spec.features]
    sites, tables = load_sites(seed), {}
    for site, (data, train, _) in sites.items():
        rows = df[df["site"] == site].dropna(subset=columns).reset_index(drop=True)  # the rows kept
        assert len(rows) == len(data.y) and np.array_equal(rows[spec.target].to_numpy(), data.y), site
        tables[site] = folder / f"{site}.csv"
        rows.iloc[np.sort(train)].to_csv(tables[site], index=False)
    return tables


def deployment_run(seed: int, args: argparse.Namespace) -> dict[str, float]:
    """One DP + SecAgg+ federation on the deployment engine (SuperLink + 4 SuperNodes, separate
    processes on loopback, plain HTTP). A site trains on its table's own train+val patient split (the
    ClientApp's rule), i.e. ~90 % of its FLamby training rows; the global model is scored here on the
    FLamby-sized test sets."""
    from healthai_training.federated import deploy
    from healthai_training.federated.coordinator import FederationSettings, run_federation

    sites = load_sites(seed)
    with tempfile.TemporaryDirectory() as tmp:
        tables = site_train_tables(seed, Path(tmp))
        procs = []

        def start(address: str) -> None:
            for i, (site, table) in enumerate(tables.items()):
                cmd = deploy.supernode_command(superlink=address, table=table, spec=SPEC, site=site,
                                               seed=seed, tls_ca=None, auth_key=None,
                                               runtime_port=free_port())
                procs.append(subprocess.Popen(cmd, env=deploy.tool_env(Path(tmp) / f"h{i}"),
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        settings = FederationSettings(spec=SPEC, rounds=args.rounds, strategy=args.strategy_deployment,
                                      min_sites=4, local_epochs=args.local_epochs, batch_size=args.batch_size,
                                      lr=args.lr, server_lr=args.server_lr, hidden=args.hidden,
                                      epsilon=args.epsilon, secagg=True, round_timeout=600, seed=seed,
                                      evaluate_every=args.rounds)
        started = time.monotonic()
        try:
            report = run_federation(settings, workdir=Path(tmp) / "co", port=free_port(), on_ready=start,
                                    timeout=3600)
        finally:
            for p in procs:
                deploy.stop(p)
    acc = float(np.mean(site_accuracy(report["weights"], sites, args.hidden)))
    eps = max(r["fit"][s]["epsilon"] for r in report["rounds"] for s in r["fit"])
    return {"dp_secagg": acc, "dp_secagg_max_site_epsilon": eps, "wall_time_s": time.monotonic() - started}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--local-epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--server-lr", type=float, default=0.05)
    p.add_argument("--hidden", type=int, default=0)
    p.add_argument("--epsilon", type=float, default=1.2)
    p.add_argument("--deployment", action="store_true")
    p.add_argument("--deployment-seeds", default=None, help="seeds of the deployment runs (default: --seeds)")
    p.add_argument("--strategy-deployment", default="fedadam")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    per_seed = [run_rows(s, args) for s in seeds]
    if args.deployment:
        chosen = {int(s) for s in (args.deployment_seeds or args.seeds).split(",")}
        for s, rows in zip(seeds, per_seed, strict=True):
            if s in chosen:
                rows.update(deployment_run(s, args))
    keys = list(per_seed[0])
    keys += [k for r in per_seed for k in r if k not in keys]
    summary = {k: (float(np.mean([r[k] for r in per_seed if k in r])),
                   float(np.std([r[k] for r in per_seed if k in r])), sum(k in r for r in per_seed))
               for k in keys}
    print("| row | mean over seeds | sd | seeds |\n|---|---|---|---|")
    for k, (m, sd, n) in summary.items():
        print(f"| {k} | {m:.4f} | {sd:.4f} | {n} |")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "per_seed": per_seed,
                                         "summary": summary}, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
