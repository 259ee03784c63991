"""Fast checks of the federation's transport and fault handling (no processes): the task-start window
our launcher sets in Flower's own core state, site keys Flower accepts, the site command refusing
authentication without TLS, and the per-round record of sites that failed."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from cryptography.hazmat.primitives.serialization import load_ssh_private_key
from flwr.app import Message, RecordDict
from flwr.app.error import Error
from flwr.cli.supernode.register import try_load_public_key
from flwr.supercore.constant import TaskType
from flwr.supercore.corestate import in_memory_corestate, sql_corestate
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.task_identity import TaskIdentity
from flwr.supernode.nodestate.in_memory_nodestate import InMemoryNodeState

from healthai.cli import main
from healthai_training.federated.launch import set_task_start_window
from healthai_training.federated.server_app import GuardedGrid, Report

SPEC = Path(__file__).resolve().parents[2] / "training/examples/heart_cohort.toml"


@pytest.fixture
def flower_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """Restore Flower's window after the test (set_task_start_window changes module state)."""
    for module in (in_memory_corestate, sql_corestate):
        monkeypatch.setattr(module, "HEARTBEAT_DEFAULT_INTERVAL", module.HEARTBEAT_DEFAULT_INTERVAL)


def _claim_alive_after(seconds: float, monkeypatch: pytest.MonkeyPatch) -> bool:
    """A SuperNode's state claims a ClientApp task; is the claim still valid ``seconds`` later?"""
    state = InMemoryNodeState(ObjectStoreFactory().store())
    task_id = state.create_task(task_type=TaskType.CLIENT_APP, run_id=1, fab_hash="fab")
    token = state.claim_task(task_id)
    start = in_memory_corestate.now()
    with monkeypatch.context() as m:
        m.setattr(in_memory_corestate, "now", lambda: start + timedelta(seconds=seconds))
        return state.get_task_by_token(token) is not None


def test_the_launcher_widens_flowers_task_start_window(flower_window, monkeypatch) -> None:
    assert _claim_alive_after(20, monkeypatch) and not _claim_alive_after(45, monkeypatch)  # Flower: 30 s
    set_task_start_window(180)
    assert _claim_alive_after(170, monkeypatch) and not _claim_alive_after(190, monkeypatch)
    set_task_start_window(5)  # never below Flower's own
    assert _claim_alive_after(20, monkeypatch)


def test_keygen_writes_a_key_pair_flower_accepts(tmp_path: Path, capsys) -> None:
    path = tmp_path / "keys/north.key"
    assert main(["federate", "keygen", str(path)]) == 0
    assert path.stat().st_mode & 0o077 == 0  # private key readable by its owner only
    assert try_load_public_key(path.with_name("north.key.pub"))  # what `flwr supernode register` reads
    load_ssh_private_key(path.read_bytes(), password=None)  # what flower-supernode reads
    capsys.readouterr()
    assert main(["federate", "keygen", str(path)]) == 2  # never overwrites a site's key
    assert "not overwriting" in capsys.readouterr().out


def test_site_refuses_authentication_without_tls(shared_data: Path, tmp_path: Path, capsys) -> None:
    table = tmp_path / "north.csv"
    df = pd.read_csv(shared_data / "risk/uci_heart_disease/heart_disease_4sites.csv")
    df[df["site"] == "hungarian"].to_csv(table, index=False)
    code = main(["federate", "site", "--superlink", "127.0.0.1:9", "--table", str(table), "--spec", str(SPEC),
                 "--site", "north", "--auth-key", str(tmp_path / "north.key")])
    assert code == 2 and "needs TLS" in capsys.readouterr().out


class _Grid:
    """Replies as a SuperLink would: node 11 answers, node 12's reply is the SuperLink's own
    'node unavailable' error (source: the SuperLink, node 1), node 13 never answers."""

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for i, msg in enumerate(messages):
            msg.metadata.__dict__["_message_id"] = f"m{i}"
            if msg.metadata.dst_node_id == 11:
                replies.append(Message(RecordDict(), reply_to=msg))
            elif msg.metadata.dst_node_id == 12:
                err = Message(Error(code=5, reason="Node Unavailable"), reply_to=msg)
                err.metadata.__dict__["_src_node_id"] = 1
                replies.append(err)
        return replies


def test_failed_sites_are_recorded_per_round_by_name(monkeypatch) -> None:
    for attr in ("_run_id", "_node_id", "_task_id"):  # what Flower stamps on messages a ServerApp makes
        monkeypatch.setattr(TaskIdentity, attr, 1)
    report = Report([(1, 3)])
    report.node_sites.update({11: "north", 12: "south"})
    grid = GuardedGrid(_Grid(), report, timeout=5.0, context=None)  # type: ignore[arg-type]
    msgs = [Message(RecordDict(), dst_node_id=n, message_type="train", group_id="2") for n in (11, 12, 13)]
    kept = grid.send_and_receive(msgs)
    assert len(kept) == 2  # the workflow still sees the error reply and drops the site itself
    failed = report.failed_sites()
    assert list(failed) == ["2"]
    assert failed["2"] == {"south": "error 5: Node Unavailable", "node 13": "no reply within 5 s"}
