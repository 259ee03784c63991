"""Federated training on Flower's deployment engine: a SuperLink and 4 SuperNodes (``healthai federate
site``, real processes on loopback) on the 4 UCI heart sites, DP-SGD at every site, SecAgg+; the
exported model is served by Risk.Score. Offline: runtime dependency installation is off and every
process gets a dead proxy and no package index, so a download attempt would fail the run."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
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
from tests.conftest import free_port

pytestmark = [pytest.mark.timeout(900),
              pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")]
HEART = "risk/uci_heart_disease/heart_disease_4sites.csv"
SPEC = Path(__file__).resolve().parents[2] / "training/examples/heart_cohort.toml"
SITES = ("cleveland", "hungarian", "switzerland", "va_long_beach")
ROUNDS = 2


@pytest.fixture(scope="module")
def federation(shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("federation")
    df = pd.read_csv(shared_data / HEART)
    tables = {}
    for site in SITES:
        tables[site] = root / f"{site}.csv"
        df[df["site"] == site].to_csv(tables[site], index=False)
    mp = pytest.MonkeyPatch()
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        mp.setenv(var, "http://127.0.0.1:9")  # discard port: any download would fail
    mp.setenv("NO_PROXY", "127.0.0.1,localhost")
    mp.setenv("no_proxy", "127.0.0.1,localhost")
    mp.setenv("PIP_NO_INDEX", "1")
    mp.setenv("UV_OFFLINE", "1")
    sites: list[subprocess.Popen[bytes]] = []
    healthai = str(Path(sys.executable).parent / "healthai")

    def start_sites(address: str) -> None:
        for i, site in enumerate(SITES):
            cmd = [healthai, "federate", "site", "--superlink", address, "--table", str(tables[site]),
                   "--spec", str(SPEC), "--site", site, "--seed", str(i), "--runtime-port", str(free_port()),
                   "--flwr-home", str(root / f"home-{site}"), "--record-updates", str(root / "plain")]
            with (root / f"{site}.log").open("wb") as out:  # the child keeps its own descriptor
                sites.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT))

    settings = FederationSettings(spec=SPEC, rounds=ROUNDS, min_sites=4, secagg=True, epsilon=1.2,
                                  round_timeout=300, record_received=True, batch_size=32, lr=0.05)
    try:
        report = run_federation(settings, workdir=root / "coordinator", port=free_port(),
                                on_ready=start_sites, timeout=800)
    finally:
        for proc in sites:
            deploy.stop(proc)
        mp.undo()
    yield root, settings, report


def test_every_site_trained_each_round_with_cumulative_epsilon(federation) -> None:
    _, _, report = federation
    assert [r["round"] for r in report["rounds"]] == list(range(1, ROUNDS + 1))
    assert report["refused"] == []
    eps = {site: [r["fit"][site]["epsilon"] for r in report["rounds"]] for site in SITES}
    for site, series in eps.items():
        assert all(a < b for a, b in itertools.pairwise(series)), (site, series)
        assert 0 < series[-1] <= 1.2 + 1e-6, (site, series)
    assert report["rounds"][-1]["mean_site_accuracy"] > 0.6


def test_coordinator_only_saw_masked_vectors_and_the_aggregate_is_the_weighted_mean(federation) -> None:
    root, _, report = federation
    plain = {}
    for site in SITES:
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
    _, settings, report = federation
    repo = tmp_path / "repo"
    _, card = export_federated(report, settings, runs_dir=tmp_path / "runs", name="risk_federated",
                               export_repo=repo)
    saved = json.loads((repo / "risk_federated/1/model_card.json").read_text())
    assert saved["federation"]["sites"] == sorted(SITES) and saved["federation"]["secagg"] is True
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
    root, _, _ = federation
    app = (root / "coordinator/app/pyproject.toml").read_text()
    assert "dependencies = []" in app and "healthai_training.federated.server_app:app" in app
    logs = [root / "coordinator/superlink.log", *(root / f"{site}.log" for site in SITES)]
    for path in logs:  # flwr's dependency installer logs these before any uv sync
        text = path.read_text(errors="replace")
        assert "Installing application dependencies" not in text and "Created env for run" not in text
    cmd = (root / "coordinator/superlink.cmd").read_text()
    assert "--disable-runtime-dependency-installation" in cmd.split()
