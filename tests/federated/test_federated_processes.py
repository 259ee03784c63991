"""The coordinator's processes: site keys (relative paths too) are registered before the SuperLink
sites dial listens, so a registered site that is already waiting is admitted at once; SIGTERM stops
the SuperLink and everything under it; a site names an unreachable SuperLink and gives up after
``--connect-timeout``. Real Flower processes on loopback, no training."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from healthai.cli import main
from healthai_training.federated import deploy
from tests.clients.pki import make_pki
from tests.conftest import free_port

pytestmark = [pytest.mark.timeout(300), pytest.mark.filterwarnings("ignore::DeprecationWarning")]
SPEC = Path(__file__).resolve().parents[2] / "training/examples/heart_cohort.toml"
HEALTHAI = str(Path(sys.executable).parent / "healthai")


def _wait_for(path: Path, text: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = path.read_text(errors="replace") if path.exists() else ""
        if text in log:
            return log
        time.sleep(0.3)
    raise AssertionError(f"{path.name} never logged {text!r}:\n{log[-2000:]}")


def test_a_registered_site_waiting_for_the_superlink_is_admitted(shared_data: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # relative key and CA paths, as in the README's commands
    pki = make_pki(tmp_path)
    deploy.write_site_key(Path("keys/north.key"))
    df = pd.read_csv(shared_data / "risk/uci_heart_disease/heart_disease_4sites.csv")
    df[df["site"] == "hungarian"].to_csv(tmp_path / "north.csv", index=False)
    port = free_port()
    # the site starts first and waits for the SuperLink (the old order: SuperLink listening, keys
    # registered seconds later, so this site was refused for good with Flower's exit code 305)
    cmd = [HEALTHAI, "federate", "site", "--superlink", f"127.0.0.1:{port}", "--table", "north.csv",
           "--spec", str(SPEC), "--site", "north", "--tls-ca", "ca.crt", "--auth-key", "keys/north.key",
           "--runtime-port", str(free_port()), "--flwr-home", "home-north", "--connect-timeout", "120"]
    with (tmp_path / "north.log").open("wb") as out:
        site = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    work = (tmp_path / "work").resolve()
    work.mkdir()
    tls = deploy.Tls(ca=Path("ca.crt"), cert=pki["server.crt"], key=pki["server.key"])
    link = None
    try:
        nodes = deploy.register_sites(work, [Path("keys/north.key.pub")], host="127.0.0.1", tls=tls)
        assert list(nodes.values()) == ["north"]
        link = deploy.start_superlink(host="127.0.0.1", port=port, workdir=work, tls=tls, supernode_auth=True)
        log = _wait_for(tmp_path / "north.log", "SuperNode ID", timeout=120)
        assert "Exit Code" not in log and site.poll() is None
        assert str(next(iter(nodes))) in log  # the node id the key was registered under
    finally:
        deploy.stop(site)
        if link is not None:
            deploy.stop(link)


def test_sigterm_stops_the_superlink_and_every_process_under_it(tmp_path: Path) -> None:
    port = free_port()
    cmd = [HEALTHAI, "federate", "coordinator", "--spec", str(SPEC), "--rounds", "1", "--min-sites", "3",
           "--non-private", "--port", str(port), "--workdir", str(tmp_path / "work"), "--runs-dir",
           str(tmp_path / "runs"), "--timeout", "240"]
    with (tmp_path / "coordinator.log").open("wb") as out:
        coordinator = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        # the ServerApp process has pulled its task: it waits for sites under the SuperExec
        _wait_for(tmp_path / "work/superlink.log", "pull-task-input", timeout=180)
        time.sleep(2)
        tree = deploy.descendants(coordinator.pid)
        assert len(tree) >= 3, tree  # flwr run, the SuperLink, its SuperExec (and the ServerApp)
        coordinator.send_signal(signal.SIGTERM)
        assert coordinator.wait(60) == 128 + signal.SIGTERM
    finally:
        deploy.stop(coordinator)
    assert "stopped by SIGTERM" in (tmp_path / "coordinator.log").read_text()
    time.sleep(1)
    alive = [p for p in tree if os.path.exists(f"/proc/{p}") and not deploy._zombie(p)]
    assert alive == [], alive
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # nothing listens any more


def test_a_site_names_an_unreachable_superlink_and_gives_up(shared_data: Path, tmp_path: Path,
                                                            capsys) -> None:
    table = tmp_path / "north.csv"
    df = pd.read_csv(shared_data / "risk/uci_heart_disease/heart_disease_4sites.csv")
    df[df["site"] == "hungarian"].to_csv(table, index=False)
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    code = main(["federate", "site", "--superlink", address, "--table", str(table), "--spec", str(SPEC),
                 "--site", "north", "--connect-timeout", "1", "--flwr-home", str(tmp_path / "home")])
    out = capsys.readouterr().out
    assert code == 2 and time.monotonic() - started < 30
    assert f"error: SuperLink {address} not reachable after 1 s: Connection refused" in out
    assert main(["federate", "site", "--superlink", "coordinator", "--table", str(table), "--spec", str(SPEC),
                 "--site", "north"]) == 2
    assert "--superlink must be HOST:PORT" in capsys.readouterr().out
