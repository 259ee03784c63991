"""The coordinator's ServerApp: FedAvg or an adaptive server optimizer, optionally SecAgg+.

Run by the SuperLink (started by ``healthai federate coordinator``) from the installed environment.
Its run config (``healthai_training.federated.app``) names the shared cohort spec, the strategy and
the local DP settings sent to every site, with the spec itself (``spec-digest``, ``spec-canonical``:
each site refuses to train on another spec). Every site update is checked before it is averaged in
(the site's spec digest, array count, shapes, dtype, finiteness); a malformed one, or one from a
site whose spec differs, is refused, logged with its reason and listed in the report with its site.
Under SecAgg+ the coordinator only ever holds masked vectors: their shapes (and the spec digest of
the site's metrics) are checked the same way, and a refused site is handled like a site that
dropped out (its masks are reconstructed from the other sites' shares). The report
(``report.json``) and the final weights (``weights.npz``) go to the run config's ``out`` folder;
the coordinator exports them. Sites are
named from their replies (``client_app.SITE_RECORD``, or ``[site NAME]`` in an error's reason), else
from the name their key was registered under (``registered-sites.json`` in ``out``), else by node id.
NaN metrics (a one-class test split's AUROC, a non-private site's epsilon) are written as null.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context, Message, MessageType
from flwr.common import bytes_to_ndarray, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import FedAdagrad, FedAdam, FedAvg, FedYogi
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_PARAMS_RECORD

from healthai_training.federated import task
from healthai_training.federated.client_app import SITE_RECORD
from healthai_training.federated.deploy import REGISTERED
from healthai_training.risk.cohort import load_spec

logger = logging.getLogger(__name__)
STRATEGIES = {"fedavg": FedAvg, "fedadam": FedAdam, "fedyogi": FedYogi, "fedadagrad": FedAdagrad}
SITE_IN_REASON = re.compile(r"\[site ([^\]]{1,200})\]")
AUROC_NOTE = "undefined: the site's test split holds one class"


class Report:
    """What the coordinator learns per round: per-site epsilon and metrics, refusals, failures."""

    def __init__(self, shapes: list[tuple[int, ...]], *, spec_digest: str | None = None,
                 registered: dict[int, str] | None = None) -> None:
        self.shapes = shapes
        self.spec_digest = spec_digest  # None: updates carry no digest check (unit tests)
        self.registered = dict(registered or {})  # node id -> the name its key was registered under
        self.rounds: list[dict[str, Any]] = []
        self.refused: list[dict[str, Any]] = []
        self.received: dict[str, list[list[np.ndarray]]] = {}  # masked vectors per node (audit)
        self.failed: dict[tuple[int, int], str] = {}  # (round, node) -> first reason seen
        self.node_sites: dict[int, str] = {}  # node id -> site name (from its replies)

    def site(self, node: int) -> str:
        return self.node_sites.get(node) or self.registered.get(node) or f"node {node}"

    def spec_problem(self, metrics: dict[str, Any]) -> str | None:
        """Why an update's spec digest is not the coordinator's (None: it is, or nothing to check)."""
        if self.spec_digest is None or metrics.get("spec-digest") == self.spec_digest:
            return None
        got = metrics.get("spec-digest")
        return (f"{task.SPEC_MISMATCH} (sha256 {str(got)[:12]}, coordinator {self.spec_digest[:12]})"
                if got is not None else "the update names no cohort spec digest")

    def round(self, rnd: int) -> dict[str, Any]:
        while len(self.rounds) < rnd:
            self.rounds.append({"round": len(self.rounds) + 1, "fit": {}, "evaluate": {}, "failures": 0})
        return self.rounds[rnd - 1]

    def fail(self, rnd: int, node: int, reason: str) -> None:
        if (rnd, node) not in self.failed:
            logger.warning("round %d: node %d failed: %s", rnd, node, reason)
            self.failed[(rnd, node)] = reason

    def failed_sites(self) -> dict[str, dict[str, str]]:
        """Per round: the sites (node id where a site never reported its name) that failed."""
        out: dict[str, dict[str, str]] = {}
        for (rnd, node), reason in sorted(self.failed.items()):
            out.setdefault(str(rnd), {})[self.site(node)] = reason
        return out

    def refuse(self, rnd: int, node: int, reason: str) -> None:
        logger.warning("round %d: refused the update of %s: %s", rnd, self.site(node), reason)
        self.refused.append({"round": rnd, "node_id": node, "site": self.site(node), "reason": reason})


def update_problem(arrays: list[np.ndarray], shapes: list[tuple[int, ...]]) -> str | None:
    got = [tuple(np.shape(a)) for a in arrays]
    if got != shapes:
        return f"{len(got)} arrays of shapes {got}, the model has {shapes}"
    for i, a in enumerate(arrays):
        if not np.issubdtype(np.asarray(a).dtype, np.number):
            return f"array {i} has dtype {np.asarray(a).dtype}"
        if not np.all(np.isfinite(a)):
            return f"array {i} holds NaN or inf"
    return None


def checked(base: type, report: Report, *, evaluate_every: int = 1, rounds: int = 0) -> type:
    """``base`` strategy that refuses malformed updates before aggregating and records site metrics;
    sites evaluate every ``evaluate_every`` rounds and after the last one."""

    class Checked(base):  # type: ignore[misc, valid-type]
        def configure_evaluate(self, server_round, parameters, client_manager):
            if server_round % max(1, evaluate_every) and server_round != rounds:
                return []
            return super().configure_evaluate(server_round, parameters, client_manager)

        def aggregate_fit(self, server_round, results, failures):
            kept = []
            for proxy, res in results:
                if "site" in res.metrics:
                    report.node_sites[proxy.node_id] = str(res.metrics["site"])
                problem = report.spec_problem(res.metrics) or update_problem(
                    parameters_to_ndarrays(res.parameters), report.shapes)
                if problem is None:
                    kept.append((proxy, res))
                else:
                    report.refuse(server_round, proxy.node_id, problem)
            entry = report.round(server_round)
            entry["failures"] += len(failures) + len(results) - len(kept)
            for proxy, res in kept:
                report.node_sites[proxy.node_id] = str(res.metrics.get("site", proxy.node_id))
                entry["fit"][str(res.metrics.get("site", proxy.node_id))] = task.json_safe({
                    k: v for k, v in res.metrics.items() if k not in ("site", "spec-digest")}) | {
                    "num_examples": res.num_examples}
            return super().aggregate_fit(server_round, kept, failures)

        def aggregate_evaluate(self, server_round, results, failures):
            entry = report.round(server_round)
            for proxy, res in list(results):
                report.node_sites[proxy.node_id] = str(res.metrics.get("site", proxy.node_id))
                if (problem := report.spec_problem(res.metrics)) is not None:
                    report.fail(server_round, proxy.node_id, f"evaluation not used: {problem}")
                    results.remove((proxy, res))
                    continue
                metrics = task.json_safe({k: v for k, v in res.metrics.items()
                                          if k not in ("site", "spec-digest")})
                if "auroc" in metrics and metrics["auroc"] is None:
                    metrics["auroc_note"] = AUROC_NOTE
                entry["evaluate"][str(res.metrics.get("site", proxy.node_id))] = metrics | {
                    "num_examples": res.num_examples}
            accs = [r["accuracy"] for r in entry["evaluate"].values()]
            entry["mean_site_accuracy"] = float(np.mean(accs)) if accs else None
            return super().aggregate_evaluate(server_round, results, failures)

    Checked.__name__ = f"Checked{base.__name__}"
    return Checked


def _round(msg: Message) -> int:
    try:
        return int(msg.metadata.group_id or 0)
    except ValueError:
        return 0


class GuardedGrid:
    """The Grid, with a reply deadline on every exchange and shape checks on SecAgg+ masked vectors;
    records the sites that failed each round (an error reply, e.g. a node that stopped sending
    heartbeats, or no reply before the deadline)."""

    def __init__(self, grid: Grid, report: Report, *, timeout: float, context: LegacyContext) -> None:
        self._grid, self._report, self._timeout, self._context = grid, report, timeout, context

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        messages = list(messages)
        replies = list(self._grid.send_and_receive(messages, timeout=timeout or self._timeout))
        # a reply's source is unreliable for errors the SuperLink writes itself (node unavailable):
        # map every reply to the node its request went to
        dst = {m.metadata.message_id: m.metadata.dst_node_id for m in messages}
        answered = {msg.metadata.reply_to_message_id for msg in replies}
        for msg in messages:
            if msg.metadata.message_id not in answered:
                self._report.fail(_round(msg), msg.metadata.dst_node_id,
                                  f"no reply within {timeout or self._timeout:.0f} s")
        kept = []
        for msg in replies:
            node = dst.get(msg.metadata.reply_to_message_id, msg.metadata.src_node_id)
            if msg.has_error():
                reason = str(msg.error.reason)
                if (named := SITE_IN_REASON.search(reason)) is not None:
                    self._report.node_sites.setdefault(node, named.group(1))
                self._report.fail(_round(msg), node, f"error {msg.error.code}: {reason}")
                if task.SPEC_MISMATCH in reason and msg.metadata.message_type == MessageType.TRAIN:
                    # the site refused to train on the coordinator's spec: a refused update
                    self._report.refuse(_round(msg), node, reason)
                kept.append(msg)
                continue
            if (named := msg.content.config_records.get(SITE_RECORD)) is not None:
                self._report.node_sites[node] = str(named.get("site", ""))[:200] or self._report.site(node)
            configs = msg.content.config_records.get(RECORD_KEY_CONFIGS)
            if configs is not None and Key.MASKED_PARAMETERS in configs:
                vector = [bytes_to_ndarray(b) for b in configs[Key.MASKED_PARAMETERS]]
                metrics = msg.content.config_records.get("fitres.metrics")
                problem = self._report.spec_problem(dict(metrics) if metrics is not None else {}) or (
                    update_problem(vector[1:], self._report.shapes) if vector else "empty")
                if problem is not None:  # dropped: SecAgg+ then treats the site as a dropout
                    self._report.refuse(_round(msg), node, f"masked vector: {problem}")
                    continue
                self._report.received.setdefault(str(node), []).append(vector)
            kept.append(msg)
        return kept


class SecAggPlusDropouts(SecAggPlusWorkflow):
    """Flower's SecAgg+ workflow, where a site that drops before sending its public keys (stage 0)
    leaves the round: flwr 1.42 keeps it among the sampled sites, so the unmask stage asks the
    others for key shares of a site that never shared any (KeyError at every site: the round is
    lost). A site that drops later is a SecAgg+ dropout as usual (its masks are reconstructed)."""

    def setup_stage(self, grid: Grid, context: LegacyContext, state: Any) -> bool:
        ok = super().setup_stage(grid, context, state)
        if ok:
            state.sampled_node_ids = set(state.active_node_ids)
        return ok


def settings(rc: dict[str, Any]) -> dict[str, Any]:
    return {k: rc[k] for k in rc}


def registered_sites(out: Path) -> dict[int, str]:
    try:
        return {int(k): str(v) for k, v in json.loads((out / REGISTERED).read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    rc = context.run_config
    out = Path(str(rc["out"]))
    out.mkdir(parents=True, exist_ok=True)
    spec_path = str(rc["spec"])
    # The model's shapes come from the shared spec alone: an empty table with the spec's columns.
    spec = load_spec(spec_path)
    features = task.model_features(spec)
    spec_config = {"spec-digest": task.spec_digest(spec), "spec-canonical": task.canonical_json(spec)}
    hidden, rounds = int(rc["hidden"]), int(rc["num-rounds"])
    net = task.new_model_for(features, hidden=hidden, seed=int(rc["seed"]))
    initial = task.get_weights(net)
    report = Report([tuple(a.shape) for a in initial], spec_digest=spec_config["spec-digest"],
                    registered=registered_sites(out))
    fit_config = {k: rc[k] for k in ("local-epochs", "batch-size", "lr", "epsilon", "delta", "max-grad-norm",
                                     "hidden")}
    fit_config.update(rounds=rounds, **spec_config)
    name = str(rc["strategy"])
    kwargs: dict[str, Any] = {
        "fraction_fit": float(rc["fraction-fit"]), "fraction_evaluate": 1.0,
        "min_fit_clients": int(rc["min-sites"]), "min_evaluate_clients": int(rc["min-sites"]),
        "min_available_clients": int(rc["min-sites"]), "accept_failures": True,
        "initial_parameters": ndarrays_to_parameters(initial),
        "on_fit_config_fn": lambda rnd: {**fit_config, "server-round": rnd},
        "on_evaluate_config_fn": lambda rnd: {"hidden": hidden, "server-round": rnd, **spec_config},
    }
    if name != "fedavg":
        kwargs.update(eta=float(rc["server-lr"]), eta_l=float(rc["lr"]), tau=1e-3)
    strategy = checked(STRATEGIES[name], report, evaluate_every=int(rc.get("evaluate-every", 1)),
                       rounds=rounds)(**kwargs)
    timeout = float(rc["round-timeout"])
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=rounds, round_timeout=timeout),
                           strategy=strategy)
    secagg = bool(rc["secagg"])
    fit_workflow = None
    if secagg:
        # num_shares 1.0: every sampled site holds a share of every other's masks (an int share count
        # below the sampled count breaks flwr 1.42's SecAgg+ when it is even)
        fit_workflow = SecAggPlusDropouts(num_shares=1.0, reconstruction_threshold=max(
            2, math.ceil(int(rc["min-sites"]) / 2)), max_weight=float(rc["secagg-max-weight"]),
            clipping_range=float(rc["secagg-clip"]), timeout=timeout)
    started = time.monotonic()
    DefaultWorkflow(fit_workflow=fit_workflow)(GuardedGrid(grid, report, timeout=timeout, context=legacy),
                                                legacy)
    final = legacy.state.array_records[MAIN_PARAMS_RECORD].to_numpy_ndarrays()
    np.savez(out / "weights.npz", *final)
    if rc.get("record-received"):
        for node, vectors in report.received.items():
            np.savez(out / f"received-node{node}.npz", *[a for v in vectors for a in v],
                     lengths=np.array([len(v) for v in vectors]))
    payload = {"strategy": name, "rounds": report.rounds, "refused": report.refused, "secagg": secagg,
               "failed_sites": report.failed_sites(),
               "wall_time_s": time.monotonic() - started, "settings": settings(dict(rc)),
               "shapes": report.shapes, "spec_sha256": spec_config["spec-digest"]}
    plain = json.loads(json.dumps(payload, default=float))  # numpy scalars -> float (NaN kept, then null)
    text = json.dumps(task.json_safe(plain), indent=2, allow_nan=False)
    (out / "report.json").write_text(text + "\n")
