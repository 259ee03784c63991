"""``healthai federate coordinator``: SuperLink + one run of the federated app, then export.

The exported model is a risk model like any other (``features`` FP32 [-1, F] raw values →
``probability``): the spec's domain scaling is inside the graph; no Platt step (the coordinator holds
no patients to calibrate on). The card lists the sites, rounds, strategy, SecAgg+, refused updates,
the sites that failed each round (and why), each site's accountant epsilon after every round, the
cohort spec's SHA-256 every site agreed to (``data.spec_sha256``) and the ``imputation`` sites did
(domain midpoints, flags 0: Risk.Score fills a missing value the spec allows the same way). Metrics
a site could not compute (AUROC of a one-class test split, epsilon of a non-private run) are null.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from healthai_training.common import make_run_dir, write_json
from healthai_training.export import base_card, export_risk
from healthai_training.federated import deploy, task
from healthai_training.risk.cohort import fill_value, load_spec
from healthai_training.risk.model import CalibratedRisk

logger = logging.getLogger(__name__)
STRATEGIES = ("fedavg", "fedadam", "fedyogi", "fedadagrad")
FIXED_BANDS = [{"name": "low", "min": 0.0, "max": 0.2}, {"name": "medium", "min": 0.2, "max": 0.5},
               {"name": "high", "min": 0.5, "max": 1.0}]


@dataclass(frozen=True)
class FederationSettings:
    spec: Path
    rounds: int = 5
    strategy: str = "fedavg"
    min_sites: int = 2
    fraction_fit: float = 1.0
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    server_lr: float = 0.1
    hidden: int = 0
    epsilon: float | None = 1.2
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    secagg: bool = False
    round_timeout: float = 120.0
    evaluate_every: int = 1  # sites evaluate the global model every N rounds and after the last
    task_start_window: float = deploy.TASK_START_WINDOW_S  # see federated.launch
    # SecAgg+ scales each update by num_examples / max_weight before quantizing: keep it near the
    # largest site's patient count (too large loses precision, smaller than a site's count overflows)
    secagg_max_weight: float = 1000.0
    seed: int = 0
    record_received: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.strategy not in STRATEGIES:
            raise deploy.FederationError(f"strategy must be one of {', '.join(STRATEGIES)}, got "
                                         f"{self.strategy!r}", field="strategy")
        if min(self.rounds, self.min_sites, self.local_epochs, self.evaluate_every) < 1:
            raise deploy.FederationError("rounds, min_sites, local_epochs and evaluate_every must be >= 1",
                                         field="rounds")
        if not 0 < self.fraction_fit <= 1:
            raise deploy.FederationError(f"fraction_fit must be in (0, 1], got {self.fraction_fit}",
                                         field="fraction_fit")
        if self.epsilon is not None and not self.epsilon > 0:
            raise deploy.FederationError(f"epsilon must be > 0, got {self.epsilon}", field="epsilon")
        if not 0 < self.delta < 1:
            raise deploy.FederationError(f"delta must be in (0, 1), got {self.delta}", field="delta")
        if self.secagg and self.min_sites < 3:
            raise deploy.FederationError("SecAgg+ needs min_sites >= 3 (a share threshold below the site "
                                         "count)", field="secagg")
        task.model_features(load_spec(self.spec))  # every feature needs a bounded domain

    def run_config(self, out: Path) -> dict[str, Any]:
        return {
            "num-rounds": self.rounds, "strategy": self.strategy, "fraction-fit": float(self.fraction_fit),
            "min-sites": self.min_sites, "local-epochs": self.local_epochs, "batch-size": self.batch_size,
            "lr": float(self.lr), "server-lr": float(self.server_lr), "hidden": self.hidden,
            "epsilon": float(self.epsilon or 0.0), "delta": float(self.delta),
            "max-grad-norm": float(self.max_grad_norm), "secagg": self.secagg,
            "secagg-max-weight": float(self.secagg_max_weight), "secagg-clip": 8.0,
            "round-timeout": float(self.round_timeout), "evaluate-every": self.evaluate_every,
            "seed": self.seed, "record-received": self.record_received,
            "spec": str(Path(self.spec).resolve()), "out": str(out.resolve()), **self.extra,
        }


def run_federation(
    settings: FederationSettings, *, workdir: Path, host: str = "127.0.0.1", port: int = 9092,
    tls: deploy.Tls | None = None, site_keys: tuple[Path, ...] = (), supernode_auth: bool = False,
    timeout: float = 1800.0, on_ready: Any = None,
) -> dict[str, Any]:
    """Start the SuperLink, run the app to completion, stop the SuperLink; returns the report.

    ``on_ready(address)`` is called once the SuperLink listens (tests start their sites there).
    """
    settings.validate()
    keys = deploy.check_site_keys(site_keys)
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "out"
    out.mkdir(exist_ok=True)
    for stale in ("superlink.db", "superlink.db-journal", "superlink.db-wal", "superlink.db-shm",
                  "out/report.json", f"out/{deploy.REGISTERED}"):
        (workdir / stale).unlink(missing_ok=True)  # each run: a fresh SuperLink state, no old report
    app = deploy.write_app(workdir / "app", settings.run_config(out))
    started = time.monotonic()
    if keys:  # registered before the SuperLink sites dial listens (see deploy.register_sites)
        nodes = deploy.register_sites(workdir, keys, host=host, tls=tls,
                                      task_start_window=settings.task_start_window)
        registered = json.dumps({str(k): v for k, v in nodes.items()}, indent=2)
        (out / deploy.REGISTERED).write_text(registered + "\n")
    deploy.write_connection(workdir / "flwr-home", f"{host}:{port}", tls)
    link = deploy.start_superlink(host=host, port=port, workdir=workdir, tls=tls,
                                  supernode_auth=supernode_auth or bool(site_keys),
                                  task_start_window=settings.task_start_window)
    try:
        if on_ready is not None:
            on_ready(f"{host}:{port}")
        deploy.run_cli(["run", str(app), "coordinator", "--stream"], workdir, timeout=timeout,
                       log=workdir / "run.log")
    finally:
        deploy.stop(link)
    if not (out / "report.json").is_file():
        raise deploy.FederationError(f"the run ended without a report; ServerApp log:\n"
                                     f"{deploy.tail(workdir / 'run.log', 40)}", field="run")
    report = json.loads((out / "report.json").read_text())
    report["wall_time_total_s"] = time.monotonic() - started
    report["weights"] = [np.asarray(a) for a in np.load(out / "weights.npz").values()]
    return report


def site_privacy(report: dict[str, Any], settings: FederationSettings) -> dict[str, Any]:
    """Per site: its accountant epsilon after each round it took part in."""
    per_site: dict[str, dict[str, Any]] = {}
    for entry in report["rounds"]:
        for site, m in entry["fit"].items():
            s = per_site.setdefault(site, {"epsilon_by_round": {}, "noise_multiplier": m["noise_multiplier"],
                                           "sample_rate": m["sample_rate"]})
            s["epsilon_by_round"][str(entry["round"])] = m["epsilon"]
    for s in per_site.values():
        s["epsilon"] = list(s["epsilon_by_round"].values())[-1]
    private = settings.epsilon is not None
    return {
        "private": private,
        "privacy_unit": "patient (each site's DP-SGD samples and clips per patient)",
        "guarantee": "per site: (epsilon, delta)-DP for adding or removing one of that site's patients, "
        "over all rounds (RDP accountant over every local step); the released global model is "
        "post-processing of the sites' DP updates" if private else "none (non-private)",
        "epsilon": max((s["epsilon"] for s in per_site.values()), default=None) if private else None,
        "target_epsilon": settings.epsilon, "delta": settings.delta if private else None,
        "max_grad_norm": settings.max_grad_norm if private else None,
        "accountant": "rdp" if private else None,
        "per_site": per_site,
    }


def served_domain(declared: dict[str, Any]) -> dict[str, Any]:
    """A feature's domain in the card schema the server enforces (``healthai.serving.risk.domains``)."""
    if declared["type"] in ("binary", "onehot"):
        return {"kind": "binary"}
    return {"kind": "range", "min": declared["min"], "max": declared["max"], "integer": False,
            "clinical": [declared["min"], declared["max"]]}


def served_block(features: list[Any]) -> dict[str, Any]:
    groups = dict.fromkeys(f.group for f in features if f.group)
    return {"schema": 1, "rule": "declared in the cohort spec (the coordinator holds no training rows)",
            "rows": "none (federated)", "implies": [], "derived": [],
            "one_hot": [{"name": g, "features": [f.name for f in features if f.group == g],
                         "rule": "at_most_one"} for g in groups]}


def export_federated(
    report: dict[str, Any], settings: FederationSettings, *, runs_dir: Path, name: str,
    export_repo: Path | None,
) -> tuple[Path, dict[str, Any]]:
    from healthai_training.publish import publish

    spec = load_spec(settings.spec)
    features = task.model_features(spec)
    net = task.new_model_for(features, hidden=settings.hidden)
    task.set_weights(net, report["weights"], who="final global model")
    model = CalibratedRisk(net, 1.0, 0.0).eval()
    names, domains = features
    last = report["rounds"][-1] if report["rounds"] else {"evaluate": {}}
    metrics = {"per_site_test": last["evaluate"], "mean_site_accuracy": last.get("mean_site_accuracy"),
               "rounds": report["rounds"]}
    privacy = site_privacy(report, settings)
    sites = sorted({s for r in report["rounds"] for s in r["fit"]})
    card = base_card(
        name=name, task="binary risk (federated)", metrics=metrics, privacy=privacy,
        data={"sites": sites, "spec": str(settings.spec), "spec_sha256": task.spec_digest(spec),
              "spec_agreed": "every site's spec was checked against this one each round (sites refuse "
              "another spec; updates without its digest are refused)",
              "note": "site data never left the sites"},
        split={"method": "per site: random by patient (train+val for training, test for evaluation)",
               "calibration": "none (the coordinator holds no patients)"},
        inputs=[{"name": "features", "datatype": "FP32", "shape": [-1, len(names)]}],
        outputs=[{"name": "probability", "datatype": "FP32", "shape": [-1, 1]}],
        risk_bands=FIXED_BANDS, domains=served_block(names),
        federation={"engine": "flwr deployment engine (SuperLink + SuperNodes)", "sites": sites,
                    "rounds": settings.rounds, "strategy": settings.strategy, "secagg": settings.secagg,
                    "min_sites": settings.min_sites, "refused_updates": report["refused"],
                    "failures_by_round": {str(r["round"]): r["failures"] for r in report["rounds"]},
                    "failed_sites_by_round": report.get("failed_sites", {}),
                    "wall_time_s": report["wall_time_s"],
                    "settings": {k: v for k, v in asdict(settings).items() if k not in ("extra",)}},
        imputation=task.spec_imputation(spec),  # what every site did (build_cohort impute="midpoint")
    )
    card_features = [{"name": f.name, "description": f.description, "unit": f.unit,
                      "baseline": fill_value(domains[f.name], f.name),
                      "domain": served_domain(domains[f.name])}
                     for f in names]
    run_dir = make_run_dir(runs_dir, f"federated-{name}-{settings.strategy}")
    card = task.json_safe(card)  # JSON has no NaN: null (an AUROC note says why where it is one)
    write_json(run_dir / "metrics.json",
               task.json_safe({**metrics, "privacy": privacy, "refused": report["refused"]}))
    export_risk(model=model, features=card_features, card={**card, "features": card_features},
                repo=run_dir / "models", name=name)
    publish(run_dir / "models" / name, export_repo)
    return run_dir, card
