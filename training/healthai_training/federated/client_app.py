"""The site's ClientApp: run by a SuperNode (``healthai federate site``) from the installed environment.

Node config (set by ``healthai federate site``): ``table``, ``spec`` (the site's cohort), ``site``
(its name), ``seed``; optional ``record-updates`` (a folder where the site keeps its own plain
updates, to audit secure aggregation) and ``fault`` (drills: ``wrong-shape`` or ``nan`` updates).
Each round's config from the ServerApp carries the shared training settings and the coordinator's
cohort spec (``spec-digest``, ``spec-canonical``): a site whose own spec differs refuses to train or
evaluate (``task.SpecMismatchError``, naming what differs) and every update carries the site's
digest back. Every reply carries the site's name (``SITE_RECORD``; in the reason of an error reply,
``[site NAME]``), so the coordinator names a site whose first reply is an error. The RDP accountant's
history is kept in the node's run state, so the epsilon reported each round is cumulative.

Flower starts one ClientApp process per message; of SecAgg+'s four stages only the masked-vector
stage trains, so torch (``task``) is imported only when a message trains or evaluates.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord, Context, Message
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key

logger = logging.getLogger(__name__)
STATE_KEY = "healthai-dp-accountant"
SITE_RECORD = "healthai.site"  # config record {"site": name} on every reply


class SiteError(RuntimeError):
    """A ClientApp failure, its message prefixed ``[site NAME]`` (Flower's error reply has only a reason)."""


class SiteClient(NumPyClient):
    def __init__(self, context: Context) -> None:
        from healthai_training.federated import task

        cfg = context.node_config
        self.site = str(cfg.get("site", "site"))
        self.seed = int(cfg.get("seed", 0))
        self.data, self.spec = task.load_site(str(cfg["table"]), str(cfg["spec"]), seed=self.seed)
        self.train_rows = np.concatenate([self.data.split["train"], self.data.split["val"]])
        self.test_rows = self.data.split["test"]
        self.record = cfg.get("record-updates")
        self.fault = str(cfg.get("fault", ""))
        self.state = context.state

    def _history(self) -> list[tuple[float, float, int]]:
        rec = self.state.config_records.get(STATE_KEY)
        if rec is None:
            return []
        return list(zip(rec["sigma"], rec["q"], rec["steps"], strict=True))

    def _save_history(self, history: list[tuple[float, float, int]]) -> None:
        self.state.config_records[STATE_KEY] = ConfigRecord(
            {"sigma": [float(h[0]) for h in history], "q": [float(h[1]) for h in history],
             "steps": [int(h[2]) for h in history]}
        )

    def fit(self, parameters: list[np.ndarray], config: dict) -> tuple[list[np.ndarray], int, dict]:
        from healthai_training.federated import task

        rnd = int(config["server-round"])
        digest = task.check_spec(self.spec, config)  # before any training
        cfg = task.LocalConfig(
            rounds=int(config["rounds"]), local_epochs=int(config["local-epochs"]),
            batch_size=int(config["batch-size"]), lr=float(config["lr"]),
            epsilon=float(config["epsilon"]) if float(config["epsilon"]) > 0 else None,
            delta=float(config["delta"]), max_grad_norm=float(config["max-grad-norm"]), seed=self.seed,
        )
        net = task.new_model(self.data, hidden=int(config["hidden"]))
        task.set_weights(net, parameters, who=f"global model sent to site {self.site}")
        train = task.training_set(self.data, self.train_rows, seed=self.seed)
        history = self._history()
        out = task.local_round(net, train, cfg, history=history, seed=self.seed * 1000 + rnd)
        self._save_history(history)
        weights = task.get_weights(net)
        if self.fault == "wrong-shape":
            weights = [w[..., :-1] if w.ndim else w for w in weights]
        elif self.fault == "nan":
            weights = [np.full_like(w, np.nan) for w in weights]
        if self.record:
            folder = Path(str(self.record))
            folder.mkdir(parents=True, exist_ok=True)
            np.savez(folder / f"{self.site}-round{rnd}.npz", *weights, num_examples=len(train))
        metrics = {"epsilon": out["epsilon"], "train_loss": out["train_loss"],
                   "noise_multiplier": out["noise_multiplier"], "sample_rate": out["sample_rate"],
                   "site": self.site, "spec-digest": digest}
        logger.info("site %s round %d: epsilon so far %.3f", self.site, rnd, out["epsilon"])
        return weights, len(train), metrics

    def evaluate(self, parameters: list[np.ndarray], config: dict) -> tuple[float, int, dict]:
        from healthai_training.federated import task

        digest = task.check_spec(self.spec, config)
        net = task.new_model(self.data, hidden=int(config["hidden"]))
        task.set_weights(net, parameters, who=f"global model sent to site {self.site}")
        res = task.evaluate(net, self.data, self.test_rows)
        return res["brier"], len(self.test_rows), {"accuracy": res["accuracy"], "auroc": res["auroc"],
                                                   "site": self.site, "spec-digest": digest}


def _client_fn(context: Context):
    return SiteClient(context).to_client()


def site_named(msg: Message, ctxt: Context, call_next):
    """Name this site on every reply: a config record, or ``[site NAME]`` in an error's reason."""
    site = str(ctxt.node_config.get("site", "site"))
    try:
        out = call_next(msg, ctxt)
    except Exception as exc:
        raise SiteError(f"[site {site}] {exc}") from exc
    if not out.has_error():
        out.content.config_records[SITE_RECORD] = ConfigRecord({"site": site})
    return out


def secagg_when_asked(msg: Message, ctxt: Context, call_next):
    """Apply Flower's SecAgg+ client mod only to rounds run by the SecAgg+ workflow."""
    configs = msg.content.config_records.get(RECORD_KEY_CONFIGS)
    if configs is not None and Key.STAGE in configs:
        return secaggplus_mod(msg, ctxt, call_next)
    return call_next(msg, ctxt)


app = ClientApp(client_fn=_client_fn, mods=[site_named, secagg_when_asked])
