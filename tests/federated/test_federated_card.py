"""The exported federated model card: strict JSON (a one-class test split's AUROC and a non-private
site's epsilon are null, with a note), the cohort spec's digest, and the ``imputation`` the sites did
(domain midpoints, flags 0), so Risk.Score fills a missing value the spec allows instead of refusing
it. Fast: a report as the ServerApp writes it, no Flower processes; Score through the real server."""

from __future__ import annotations

import json
import math
from pathlib import Path

import grpc
import numpy as np
import pytest
from flwr.common import Code, EvaluateRes, Status

from healthai.app.settings import Settings
from healthai.app.testing import serve_in_thread
from healthai.serving.plugin import plugin
from healthai.serving.settings import ServingSettings
from healthai.v1 import risk_pb2, risk_pb2_grpc
from healthai_training.export import run_onnx
from healthai_training.federated import task
from healthai_training.federated.coordinator import FederationSettings, export_federated
from healthai_training.federated.server_app import AUROC_NOTE, Report, checked
from healthai_training.risk.cohort import load_spec

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")
SPEC = Path(__file__).resolve().parents[2] / "training/examples/heart_cohort.toml"


class Proxy:
    def __init__(self, node_id: int) -> None:
        self.node_id = node_id


def _strict(path: Path) -> dict:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{path.name} holds {constant}: not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_a_one_class_test_split_is_recorded_as_null_auroc_with_a_note() -> None:
    report = Report([(1, 17), (1,)])
    from flwr.common import ndarrays_to_parameters
    from flwr.server.strategy import FedAvg

    init = ndarrays_to_parameters([np.zeros((1, 17), np.float32), np.zeros(1, np.float32)])
    strategy = checked(FedAvg, report, rounds=1)(min_evaluate_clients=1, min_available_clients=1,
                                                 initial_parameters=init)
    res = EvaluateRes(Status(Code.OK, ""), 0.2, 3, {"accuracy": 1.0, "auroc": float("nan"), "site": "tiny"})
    strategy.aggregate_evaluate(1, [(Proxy(5), res)], [])
    assert report.rounds[0]["evaluate"]["tiny"] == {"accuracy": 1.0, "auroc": None, "auroc_note": AUROC_NOTE,
                                                    "num_examples": 3}


@pytest.fixture
def exported(tmp_path: Path):
    settings = FederationSettings(spec=SPEC, rounds=1, epsilon=None, min_sites=2)
    features = task.model_features(load_spec(SPEC))
    weights = task.get_weights(task.new_model_for(features, hidden=0, seed=3))
    nan = float("nan")
    fit = {"epsilon": nan, "train_loss": 0.6, "noise_multiplier": 0.0, "sample_rate": 0.1, "num_examples": 9}
    report = {  # as report.json was before its NaNs became null (export must not trust that)
        "rounds": [{"round": 1, "fit": {"big": fit, "tiny": fit}, "failures": 0, "mean_site_accuracy": 0.7,
                    "evaluate": {"big": {"accuracy": 0.7, "auroc": 0.8, "num_examples": 40},
                                 "tiny": {"accuracy": 0.66, "auroc": nan, "num_examples": 3}}}],
        "refused": [], "failed_sites": {}, "wall_time_s": 1.0, "weights": weights,
    }
    repo = tmp_path / "repo"
    run_dir, _ = export_federated(report, settings, runs_dir=tmp_path / "runs", name="risk_fed",
                                  export_repo=repo)
    return run_dir, repo


def test_every_json_written_is_strict_json(exported) -> None:
    run_dir, repo = exported
    card = _strict(repo / "risk_fed/1/model_card.json")
    _strict(run_dir / "metrics.json")
    assert card["metrics"]["per_site_test"]["tiny"]["auroc"] is None
    assert card["metrics"]["per_site_test"]["big"]["auroc"] == 0.8
    assert card["privacy"]["per_site"]["tiny"]["epsilon"] is None  # non-private: no epsilon
    assert card["data"]["spec_sha256"] == task.spec_digest(load_spec(SPEC))


def test_the_card_imputes_as_the_sites_did_and_score_fills_a_missing_value(exported) -> None:
    _, repo = exported
    card = _strict(repo / "risk_fed/1/model_card.json")
    imputation = card["imputation"]
    assert imputation["values"]["cholesterol"] == 380.0  # (60 + 700) / 2: the site's build_cohort(midpoint)
    assert imputation["indicators"] == {"cholesterol": "cholesterol_missing",
                                        "max_heart_rate": "max_heart_rate_missing"}
    names = [f["name"] for f in card["features"]]
    row = np.array([f["baseline"] for f in card["features"]], np.float32)
    row[names.index("age")] = 61.0
    missing = row.copy()
    missing[names.index("cholesterol")] = math.nan
    filled = row.copy()
    filled[names.index("cholesterol")] = 380.0
    filled[names.index("cholesterol_missing")] = 1.0
    expected = run_onnx(repo / "risk_fed/1/model.onnx", {"features": filled[None]}).ravel()
    serving = ServingSettings(model_repository=repo, reload_poll_s=0.0)
    settings = Settings(port=0, dev_mode=True, serving=serving)
    with serve_in_thread(settings, [plugin(settings=settings)]) as running, \
            grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        reply = risk_pb2_grpc.RiskStub(channel).Score(
            risk_pb2.ScoreRequest(model_name="risk_fed", features=missing.tolist()), timeout=30)
    np.testing.assert_allclose(reply.probability, expected, rtol=1e-5)
