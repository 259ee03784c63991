"""Every site trains on the coordinator's cohort spec: the round config carries its digest and canonical
form, a site with another spec refuses to train (naming what differs) and the coordinator counts that
as a refused update of the named site; an update whose digest differs is refused too. Sites are named
in failures even when their first reply is an error. Fast: the real ClientApp (mods included) called
the way a SuperNode calls it, Flower's strategy objects, no processes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.error import Error
from flwr.common import Code, EvaluateIns, FitIns, FitRes, Status, ndarrays_to_parameters
from flwr.compat.common.recorddict_compat import evaluateins_to_recorddict, fitins_to_recorddict
from flwr.server.strategy import FedAvg
from flwr.supercore.task_identity import TaskIdentity

from healthai_training.federated import client_app, task
from healthai_training.federated.server_app import GuardedGrid, Report, checked
from healthai_training.risk.cohort import load_spec

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")
SPEC = Path(__file__).resolve().parents[2] / "training/examples/heart_cohort.toml"
SHAPES = [(1, 17), (1,)]


@pytest.fixture
def other_spec(tmp_path: Path) -> Path:
    """The tester's spec: chest pain categories reordered, cholesterol up to 1400 (same array shapes)."""
    text = SPEC.read_text()
    path = tmp_path / "other.toml"
    path.write_text(text.replace("categories = [1, 2, 3, 4]", "categories = [4, 3, 2, 1]")
                    .replace("max = 700", "max = 1400"))
    return path


@pytest.fixture
def site_table(shared_data: Path, tmp_path: Path) -> Path:
    table = tmp_path / "hungarian.csv"
    df = pd.read_csv(shared_data / "risk/uci_heart_disease/heart_disease_4sites.csv")
    df[df["site"] == "hungarian"].to_csv(table, index=False)
    return table


@pytest.fixture
def stamped(monkeypatch: pytest.MonkeyPatch) -> None:
    for attr in ("_run_id", "_node_id", "_task_id"):  # what Flower stamps on messages a ServerApp makes
        monkeypatch.setattr(TaskIdentity, attr, 1)


def coordinator_config() -> dict[str, str]:
    spec = load_spec(SPEC)
    return {"spec-digest": task.spec_digest(spec), "spec-canonical": task.canonical_json(spec)}


def test_the_digest_ignores_wording_and_number_spelling_but_not_the_spec(tmp_path: Path, other_spec) -> None:
    same = tmp_path / "same.toml"
    same.write_text(SPEC.read_text().replace("max = 700", "max = 700.0")
                    .replace('description = "chest pain type"', 'description = "angina type"'))
    digest = task.spec_digest(load_spec(SPEC))
    assert task.spec_digest(load_spec(same)) == digest
    assert task.spec_digest(load_spec(other_spec)) != digest
    diff = task.spec_differences(task.canonical_spec(load_spec(other_spec)),
                                 task.canonical_spec(load_spec(SPEC)))
    assert diff == ["features.cp.categories: site [4.0, 3.0, 2.0, 1.0], coordinator [1.0, 2.0, 3.0, 4.0]",
                    "features.cholesterol.max: site 1400.0, coordinator 700.0"]


def _train_message(config: dict) -> Message:
    params = ndarrays_to_parameters([np.zeros((1, 17), np.float32), np.zeros(1, np.float32)])
    content = fitins_to_recorddict(FitIns(params, config), keep_input=True)
    return Message(content, dst_node_id=7, message_type="train", group_id="1")


def _context(table: Path, spec: Path, site: str) -> Context:
    return Context(run_id=1, node_id=7, node_config={"table": str(table), "spec": str(spec), "site": site,
                                                     "seed": 0}, state=RecordDict(), run_config={})


def test_a_site_with_another_spec_refuses_to_train_and_is_counted_refused_by_name(
        other_spec, site_table, stamped) -> None:
    config = {"server-round": 1, "rounds": 1, "local-epochs": 1, "batch-size": 32, "lr": 0.05, "epsilon": 0.0,
              "delta": 1e-5, "max-grad-norm": 1.0, "hidden": 0, **coordinator_config()}
    msg = _train_message(config)
    with pytest.raises(client_app.SiteError) as raised:  # the real ClientApp, its mods included
        client_app.app(message=msg, context=_context(site_table, other_spec, "hungarian"))
    text = str(raised.value)
    assert text.startswith("[site hungarian] ") and task.SPEC_MISMATCH in text
    assert "features.cp.categories" in text
    assert "features.cholesterol.max: site 1400.0, coordinator 700.0" in text

    # the SuperNode answers with Flower's error reply (its reason format: run_clientapp), node 21 never
    # sent a successful reply before: the coordinator still names it
    reason = str(type(raised.value)) + ":<'" + text + "'>"

    class Grid:
        def send_and_receive(self, messages, *, timeout=None):
            return [Message(Error(code=2, reason=reason), reply_to=m) for m in messages]

    report = Report(SHAPES, spec_digest=config["spec-digest"])
    grid = GuardedGrid(Grid(), report, timeout=5.0, context=None)  # type: ignore[arg-type]
    grid.send_and_receive([Message(RecordDict(), dst_node_id=21, message_type="train", group_id="1")])
    assert [(r["site"], r["node_id"]) for r in report.refused] == [("hungarian", 21)]
    assert task.SPEC_MISMATCH in report.refused[0]["reason"]
    assert list(report.failed_sites()["1"]) == ["hungarian"]


def test_the_same_spec_trains_and_every_reply_names_its_site(site_table, stamped) -> None:
    params = ndarrays_to_parameters([np.zeros((1, 17), np.float32), np.zeros(1, np.float32)])
    content = evaluateins_to_recorddict(EvaluateIns(params, {"hidden": 0, "server-round": 1,
                                                             **coordinator_config()}), keep_input=True)
    msg = Message(content, dst_node_id=7, message_type="evaluate", group_id="1")
    reply = client_app.app(message=msg, context=_context(site_table, SPEC, "hungarian"))
    assert not reply.has_error()
    assert reply.content.config_records[client_app.SITE_RECORD]["site"] == "hungarian"
    metrics = reply.content.config_records["evaluateres.metrics"]
    assert metrics["spec-digest"] == coordinator_config()["spec-digest"]


def _fit(n: int, site: str, digest: str | None) -> FitRes:
    metrics = {"site": site, "epsilon": 0.5} | ({"spec-digest": digest} if digest else {})
    arrays = [np.ones((1, 17), np.float32), np.zeros(1, np.float32)]
    return FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), n, metrics)


class Proxy:
    def __init__(self, node_id: int) -> None:
        self.node_id = node_id


def test_an_update_with_another_or_no_spec_digest_is_refused_by_name() -> None:
    digest = coordinator_config()["spec-digest"]
    report = Report(SHAPES, spec_digest=digest)
    init = ndarrays_to_parameters([np.zeros((1, 17), np.float32), np.zeros(1, np.float32)])
    strategy = checked(FedAvg, report)(min_fit_clients=1, min_available_clients=1, initial_parameters=init)
    strategy.aggregate_fit(1, [(Proxy(1), _fit(10, "north", digest)), (Proxy(2), _fit(10, "south", "f" * 64)),
                               (Proxy(3), _fit(10, "east", None))], [])
    refused = {r["site"]: r["reason"] for r in report.refused}
    assert set(refused) == {"south", "east"}
    assert refused["south"].startswith(task.SPEC_MISMATCH) and "no cohort spec digest" in refused["east"]
    assert set(report.rounds[0]["fit"]) == {"north"}
    assert "spec-digest" not in report.rounds[0]["fit"]["north"]


def test_a_site_that_never_replied_is_named_by_its_registered_key(stamped, tmp_path: Path) -> None:
    class Silent:
        def send_and_receive(self, messages, *, timeout=None):
            return []

    (tmp_path / "registered-sites.json").write_text(json.dumps({"31": "east"}))
    from healthai_training.federated.server_app import registered_sites

    report = Report(SHAPES, registered=registered_sites(tmp_path))
    grid = GuardedGrid(Silent(), report, timeout=5.0, context=None)  # type: ignore[arg-type]
    grid.send_and_receive([Message(RecordDict(), dst_node_id=n, message_type="train", group_id="2")
                           for n in (31, 32)])
    assert report.failed_sites() == {"2": {"east": "no reply within 5 s", "node 32": "no reply within 5 s"}}
    named = Message(RecordDict({client_app.SITE_RECORD: ConfigRecord({"site": "west"})}), dst_node_id=32,
                    message_type="train", group_id="3")

    class Answers:
        def send_and_receive(self, messages, *, timeout=None):
            return [Message(m.content, reply_to=m) for m in messages]

    GuardedGrid(Answers(), report, timeout=5.0, context=None).send_and_receive([named])  # type: ignore[arg-type]
    assert report.site(32) == "west"
