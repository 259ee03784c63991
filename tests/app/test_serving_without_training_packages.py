"""The serving install needs no training packages: ``healthai serve`` on the default models, with
torch, opacus, matplotlib, onnxscript and healthai_training made unimportable, ingests, scores and
forecasts; ``healthai train`` says what to install instead of a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from healthai.app.testing import start_server_process, stop_server_process
from healthai.serving.risk.card import example_patient
from healthai.serving.settings import DEFAULT_MODEL_REPOSITORY, newest_version_dir
from healthai.v1 import forecast_pb2, forecast_pb2_grpc, ingest_pb2, ingest_pb2_grpc, risk_pb2, risk_pb2_grpc

BLOCKED = ("torch", "opacus", "matplotlib", "onnxscript", "healthai_training")

# Loaded at interpreter start (sitecustomize on PYTHONPATH): any import of a blocked package fails,
# and the child records which ones were attempted in BLOCK_LOG.
SITECUSTOMIZE = f'''
import importlib.abc, os, sys
BLOCKED = {BLOCKED!r}
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            with open(os.environ["BLOCK_LOG"], "a") as f:
                f.write(name + "\\n")
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: serving install)", name=name)
        return None
sys.meta_path.insert(0, _Block())
'''


@pytest.fixture
def blocked_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return {"PYTHONPATH": str(tmp_path / "site"), "BLOCK_LOG": str(tmp_path / "blocked.log"),
            "HEALTHAI_LOG_LEVEL": "WARNING"}


def test_serve_ingest_score_forecast_without_training_packages(blocked_env, tmp_path: Path,
                                                                shared_data: Path) -> None:
    proc, port = start_server_process(["--dev", "--store-uri", str(tmp_path / "store")], env=blocked_env,
                                      timeout=120)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            bundle = sorted((shared_data / "fhir").glob("*.json"))[0].read_bytes()
            receipt = ingest_pb2_grpc.IngestStub(channel).IngestBatch(ingest_pb2.IngestRequest(
                source="no-torch-test", fhir=ingest_pb2.FhirPayload(json=bundle)), timeout=60)
            assert receipt.accepted > 0
            card = json.loads((newest_version_dir("risk_heart") / "model_card.json").read_text())
            patient = list(example_patient(card).values())  # valid for the card's feature domains
            score = risk_pb2_grpc.RiskStub(channel).Score(
                risk_pb2.ScoreRequest(model_name="risk_heart", features=patient), timeout=30)
            assert 0 <= score.probability[0] <= 1
            version = DEFAULT_MODEL_REPOSITORY / "forecast_japan" / "1"
            graph = json.loads((version / "graph.json").read_text())
            fcard = json.loads((version / "model_card.json").read_text())
            counts = np.full((fcard["window"], len(graph["region_ids"])), 100.0)
            forecast = forecast_pb2_grpc.ForecastStub(channel).Forecast(forecast_pb2.ForecastRequest(
                model_name="forecast_japan", history=forecast_pb2.History(
                    region_ids=graph["region_ids"], counts=counts.reshape(-1).tolist())), timeout=60)
            assert np.isfinite(forecast.point).all() and len(forecast.point) > 0
    finally:
        assert stop_server_process(proc) == 0
    log = Path(blocked_env["BLOCK_LOG"])
    attempted = log.read_text().split() if log.exists() else []
    assert attempted == [], f"the serving path tried to import {sorted(set(attempted))}"


def test_train_on_a_serving_only_install_says_what_to_install(blocked_env) -> None:
    proc = subprocess.run([sys.executable, "-m", "healthai.cli", "train", "risk", "--dataset", "heart"],
                          env={**os.environ, **blocked_env}, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "install the healthai-training distribution" in proc.stderr
    assert "Traceback" not in proc.stderr
