"""Federated training on Flower's deployment engine: a SuperLink and 4 SuperNodes (``healthai federate
site``, real processes on loopback) on the 4 UCI heart sites, over TLS (a CA made here) with SuperNode
authentication (keys made by ``healthai federate keygen``'s function, registered at the
coordinator), DP-SGD at every site, SecAgg+, min 3 sites. One site is SIGKILLed as soon as round 2
reaches it: the round goes on with the 3 others and the card names it. A SuperNode with an
unregistered key is refused. The exported model is served by Risk.Score. Offline:
runtime dependency installation is off and every process gets a dead proxy and no package index,
so a download attempt would fail the run."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
import pytest

from healthai.app.settings import Settings
from healthai.app.testing import serve_in_thread
from healthai.serving.plugin import plugin
from healthai.serving.settings import ServingSettings
from healthai.v1 import risk_pb2, risk_pb2_grpc
from healthai_training.export import run_onnx
from healthai_training.federated import deploy
from healthai_training.federated.coordinator import FederationSettings, export_federated, run_federation
from tests.clients.pki import make_pki
from tests.conftest import free_port

pytestmark = [pytest.mark.timeout(900),
              pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")]
HEART = "risk/uci_heart_disease/heart_disease_4sites.csv"
SPEC = Path(__file__).resolve().parents[2] / "training/examples/heart_cohort.toml"
SITES = ("cleveland", "hungarian", "switzerland", "va_long_beach")
KILLED = "switzerland"  # SIGKILLed when round 2 reaches it
LIVE = tuple(s for s in SITES if s != KILLED)
ROUNDS = 2


def _wait_for_lines(paths: list[Path], text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(text in p.read_text(errors="replace") for p in paths if p.exists()) and all(
                p.exists() for p in paths):
            return
        time.sleep(0.3)
    missing = [p.name for p in paths if not p.exists() or text not in p.read_text(errors="replace")]
    raise AssertionError(f"{missing} never logged {text!r}")


def _kill_when(log: Path, text: str, proc: subprocess.Popen[bytes], stop: threading.Event) -> None:
    """SIGKILL ``proc`` (the spare site's SuperNode) once its log shows ``text``."""
    while not stop.is_set():
        if log.exists() and text in log.read_text(errors="replace"):
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()  # reaped: its SuperExec sees its parent gone and exits
            return
        time.sleep(0.2)


@pytest.fixture(scope="module")
def federation(shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("federation")
    df = pd.read_csv(shared_data / HEART)
    tables = {}
    for site in SITES:
        tables[site] = root / f"{site}.csv"
        df[df["site"] == site].to_csv(tables[site], index=False)
    pki = make_pki(root)  # CA + a server certificate for 127.0.0.1
    keys = {s: deploy.write_site_key(root / "keys" / f"{s}.key") for s in (*SITES, "intruder")}
    mp = pytest.MonkeyPatch()
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        mp.setenv(var, "http://127.0.0.1:9")  # discard port: any download would fail
    mp.setenv("NO_PROXY", "127.0.0.1,localhost")
    mp.setenv("no_proxy", "127.0.0.1,localhost")
    mp.setenv("PIP_NO_INDEX", "1")
    mp.setenv("UV_OFFLINE", "1")
    sites: dict[str, subprocess.Popen[bytes]] = {}
    healthai = str(Path(sys.executable).parent / "healthai")
    stop = threading.Event()

    def start_site(address: str, site: str, table: Path, seed: int) -> None:
        cmd = [healthai, "federate", "site", "--superlink", address, "--table", str(table),
               "--spec", str(SPEC), "--site", site, "--seed", str(seed), "--runtime-port", str(free_port()),
               "--flwr-home", str(root / f"home-{site}"), "--record-updates", str(root / "plain"),
               "--tls-ca", str(pki["ca.crt"]), "--auth-key", str(keys[site][0])]
        with (root / f"{site}.log").open("wb") as out:  # the child keeps its own descriptor
            sites[site] = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)

    def start_sites(address: str) -> None:
        for i, site in enumerate(SITES):
            start_site(address, site, tables[site], i)
        start_site(address, "intruder", tables["hungarian"], 9)  # its key was never registered
        # every site connected before the run: round 1 samples all 4 (min 3 would not wait)
        _wait_for_lines([root / f"{s}.log" for s in SITES], "SuperNode ID", timeout=300)
        sites["intruder"].wait(timeout=300)  # refused: exits on its own (reaped, its SuperExec follows)
        threading.Thread(target=_kill_when, args=(root / f"{KILLED}.log", "ROUND 2]", sites[KILLED], stop),
                         daemon=True).start()

    settings = FederationSettings(spec=SPEC, rounds=ROUNDS, min_sites=3, secagg=True, epsilon=1.2,
                                  round_timeout=300, record_received=True, batch_size=32, lr=0.05,
                                  evaluate_every=ROUNDS)  # sites evaluate once, after the last round
    tls = deploy.Tls(ca=pki["ca.crt"], cert=pki["server.crt"], key=pki["server.key"])
    try:
        report = run_federation(settings, workdir=root / "coordinator", port=free_port(), tls=tls,
                                site_keys=tuple(keys[s][1] for s in SITES),
                                on_ready=start_sites, timeout=800)
    finally:
        stop.set()
        codes = {site: proc.poll() for site, proc in sites.items()}
        for proc in sites.values():
            deploy.stop(proc)
        mp.undo()
    yield root, settings, report, codes


def test_tls_and_an_unregistered_supernode_key_is_refused(federation) -> None:
    root, _, report, codes = federation
    assert codes["intruder"] not in (None, 0)  # exited on its own, refused
    log = (root / "intruder.log").read_text(errors="replace")
    assert "Failed to activate SuperNode" in log  # the SuperLink knows no node with its key
    assert "intruder" not in json.dumps(report["rounds"])
    cmd = (root / "coordinator/superlink.cmd").read_text().split()
    assert "--insecure" not in cmd and "--ssl-certfile" in cmd and "--enable-supernode-auth" in cmd
    assert "root-certificates" in (root / "coordinator/flwr-home/config.toml").read_text()


def test_a_site_killed_mid_round_is_reported_and_training_goes_on(federation) -> None:
    _, _, report, codes = federation
    assert codes[KILLED] == -signal.SIGKILL
    assert set(report["rounds"][0]["fit"]) == set(SITES)
    assert set(report["rounds"][1]["fit"]) == set(LIVE)  # the round went on with the 3 others
    assert set(report["rounds"][1]["evaluate"]) == set(LIVE) and report["rounds"][0]["evaluate"] == {}
    assert list(report["failed_sites"]) == ["2"] and list(report["failed_sites"]["2"]) == [KILLED]
    assert "Node Unavailable" in report["failed_sites"]["2"][KILLED]  # its heartbeats stopped


def test_every_live_site_trained_each_round_with_cumulative_epsilon(federation) -> None:
    _, _, report, _ = federation
    assert [r["round"] for r in report["rounds"]] == list(range(1, ROUNDS + 1))
    assert report["refused"] == []
    eps = {site: [r["fit"][site]["epsilon"] for r in report["rounds"]] for site in LIVE}
    for site, series in eps.items():
        assert all(a < b for a, b in itertools.pairwise(series)), (site, series)
        assert 0 < series[-1] <= 1.2 + 1e-6, (site, series)
    assert report["rounds"][-1]["mean_site_accuracy"] > 0.6


def test_coordinator_only_saw_masked_vectors_and_the_aggregate_is_the_weighted_mean(federation) -> None:
    root, _, report, _ = federation
    assert not (root / "plain" / f"{KILLED}-round{ROUNDS}.npz").exists()  # killed before training
    plain = {}
    for site in LIVE:
        with np.load(root / "plain" / f"{site}-round{ROUNDS}.npz") as z:
            plain[site] = ([z[f"arr_{i}"] for i in range(len(report["shapes"]))], int(z["num_examples"]))
    received = sorted((root / "coordinator/out").glob("received-node*.npz"))
    assert len(received) == len(SITES)
    for path in received:
        with np.load(path) as z:
            arrays = [z[k] for k in z.files if k != "lengths"]
        masked = arrays[-len(report["shapes"]):]  # the last round's vector (factor first, then params)
        assert all(np.issubdtype(a.dtype, np.integer) for a in masked)  # quantized and masked field elements
        for weights, _ in plain.values():
            for m, w in zip(masked, weights, strict=True):
                assert m.shape == w.shape
                assert not np.allclose(m.astype(np.float64), w, atol=1.0)
    total = sum(n for _, n in plain.values())
    mean = [sum(w[i] * n for w, n in plain.values()) / total for i in range(len(report["shapes"]))]
    for agg, expected in zip(report["weights"], mean, strict=True):
        np.testing.assert_allclose(agg, expected, atol=1e-4)


def test_exported_model_card_and_risk_score(federation, tmp_path: Path) -> None:
    _, settings, report, _ = federation
    repo = tmp_path / "repo"
    _, card = export_federated(report, settings, runs_dir=tmp_path / "runs", name="risk_federated",
                               export_repo=repo)
    saved = json.loads((repo / "risk_federated/1/model_card.json").read_text())
    assert saved["federation"]["sites"] == sorted(SITES) and saved["federation"]["secagg"] is True
    assert list(saved["federation"]["failed_sites_by_round"]["2"]) == [KILLED]
    assert saved["federation"]["rounds"] == ROUNDS and saved["federation"]["strategy"] == "fedavg"
    per_site = saved["privacy"]["per_site"]
    assert set(per_site) == set(SITES) and saved["privacy"]["delta"] == 1e-5
    assert saved["privacy"]["epsilon"] == max(s["epsilon"] for s in per_site.values())
    domain = {f["name"]: f["domain"] for f in saved["features"]}
    assert domain["age"] == {"kind": "range", "min": 18.0, "max": 110.0, "integer": False,
                             "clinical": [18.0, 110.0]}
    assert {g["name"] for g in saved["domains"]["one_hot"]} == {"cp", "ecg"}
    names = [f["name"] for f in saved["features"]]
    x = np.array([[f["baseline"] for f in saved["features"]]] * 3, np.float32)
    x[1, 0], x[2, names.index("cp_asymptomatic")] = 70.0, 1.0
    expected = run_onnx(repo / "risk_federated/1/model.onnx", {"features": x}).ravel()
    serving = ServingSettings(model_repository=repo, reload_poll_s=0.0)
    settings_ = Settings(port=0, dev_mode=True, serving=serving)
    with serve_in_thread(settings_, [plugin(settings=settings_)]) as running, \
            grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        reply = risk_pb2_grpc.RiskStub(channel).Score(
            risk_pb2.ScoreRequest(model_name="risk_federated", features=x.reshape(-1).tolist()), timeout=30)
    np.testing.assert_allclose(reply.probability, expected, rtol=1e-5)
    assert reply.model_name == "risk_federated" and card["name"] == "risk_federated"


def test_runs_offline_from_the_installed_environment(federation) -> None:
    root, _, _, _ = federation
    app = (root / "coordinator/app/pyproject.toml").read_text()
    assert "dependencies = []" in app and "healthai_training.federated.server_app:app" in app
    logs = [root / "coordinator/superlink.log", *(root / f"{site}.log" for site in SITES)]
    for path in logs:  # flwr's dependency installer logs these before any uv sync
        text = path.read_text(errors="replace")
        assert "Installing application dependencies" not in text and "Created env for run" not in text
    cmd = (root / "coordinator/superlink.cmd").read_text()
    assert "--disable-runtime-dependency-installation" in cmd.split()
