"""A DP risk card reports exactly what the accountant composed (q, steps, every mechanism) and
publishes no exact statistic of a training patient; targets, rows wording and publishing versions."""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
from opacus.accountants import RDPAccountant

from healthai.errors import InputFileError
from healthai_training import cli
from healthai_training.privacy import PrivacySettings
from healthai_training.publish import publish
from healthai_training.risk.cohort import build_cohort, parse_spec
from healthai_training.risk.train import RiskConfig
from healthai_training.runs import run_risk

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")
SPEC = """
[cohort]
name = "fix"
target = "outcome"
positive = ["yes"]
patient_id = "pid"
[features.age]
type = "numeric"
min = 18
max = 110
[features.crp]
type = "numeric"
min = 0
missing = "indicator"
"""


def _cohort(n: int = 1500, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    pid = np.repeat(np.arange(n), 2)
    age = rng.uniform(20, 90, 2 * n).round()
    crp = rng.gamma(2.0, 3.0, 2 * n)
    crp[7] = 31337.0  # one patient's outlier: must not appear in the card
    crp[rng.random(2 * n) < 0.1] = np.nan
    logit = 0.04 * (age - 55) + 0.1 * np.nan_to_num(crp, nan=6.0).clip(0, 40) - 0.6
    y = np.where(rng.random(2 * n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    return pd.DataFrame({"pid": pid, "age": age, "crp": crp, "outcome": y})


def _train(tmp_path: Path, epsilon: float | None) -> dict:
    table, spec = tmp_path / "cohort.csv", tmp_path / "spec.toml"
    _cohort().to_csv(table, index=False)
    spec.write_text(SPEC)
    cfg = RiskConfig(epochs=3, batch_size=256, lr=0.25, hidden=0, optimizer="sgd", shrink_inputs=True,
                     privacy=PrivacySettings(epsilon=epsilon))
    run_risk(dataset="fix", data_root=tmp_path, config=cfg, runs_dir=tmp_path / "runs",
             export_repo=tmp_path / "repo", table=table, spec=spec)
    return json.loads((tmp_path / "repo/risk_fix/1/model_card.json").read_text())


def test_dp_card_recomputes_its_epsilon_and_leaks_no_training_value(tmp_path: Path) -> None:
    card = _train(tmp_path, 1.2)
    p = card["privacy"]
    patients = card["metrics"]["training_examples"]["count"]
    q = 1 / math.ceil(patients / 256)
    assert p["sample_rate"] == pytest.approx(q) and p["expected_batch_size"] == pytest.approx(q * patients)
    assert p["steps"] <= 3 * math.ceil(patients / 256)
    assert p["mechanisms"][0]["sample_rate"] == p["sample_rate"]
    accountant = RDPAccountant()
    accountant.history = [(m["noise_multiplier"], m["sample_rate"], m["steps"]) for m in p["mechanisms"]]
    assert accountant.get_epsilon(p["delta"]) == pytest.approx(p["epsilon"], rel=1e-9)
    assert p["epsilon"] <= 1.2 and [m["name"] for m in p["mechanisms"]] == ["dp_sgd", "bounds", "moments"]
    text = json.dumps(card)
    assert "31337" not in text and '"observed"' not in text
    released = p["released"]["features"]
    assert [f["baseline"] for f in card["features"]] == pytest.approx([released[f["name"]]["mean"]
                                                                        for f in card["features"]])
    assert card["imputation"]["values"]["crp"] == released["crp"]["fill"]
    domain = {f["name"]: f["domain"] for f in card["features"]}
    assert (domain["age"]["min"], domain["age"]["max"]) == (18.0, 110.0)  # the spec's, not the data's
    _, hi = released["crp"]["bounds"]
    assert domain["crp"]["min"] == 0.0 and domain["crp"]["max"] == pytest.approx(np.finfo(np.float32).max)
    assert math.log2(hi).is_integer()  # a histogram edge, never a patient's value
    # an open side stays open: the model scores a value past the DP bound as the bound, as it trained
    session = ort.InferenceSession(str(tmp_path / "repo/risk_fix/1/model.onnx"))
    names = [f["name"] for f in card["features"]]
    rows = np.tile(np.array([f["baseline"] for f in card["features"]], np.float32), (3, 1))
    rows[:, names.index("crp")] = [hi, 10 * hi, 1e6]
    probability = session.run(None, {session.get_inputs()[0].name: rows})[0].reshape(-1)
    assert probability[1] == pytest.approx(probability[0]) and probability[2] == pytest.approx(probability[0])
    assert "Platt" in p["scope"] and "counts" in p["scope"]
    assert card["domains"]["rows"].endswith(f"rows of {patients} patients)")


def test_non_private_card_keeps_observed_ranges(tmp_path: Path) -> None:
    card = _train(tmp_path, None)
    domain = {f["name"]: f["domain"] for f in card["features"]}
    assert "observed" in domain["age"] and "released" not in card["privacy"]


def test_target_with_unmatched_labels_is_refused() -> None:
    df = pd.DataFrame({"pid": range(8), "age": [30.0] * 8, "crp": [1.0] * 8,
                       "outcome": ["no", "no", "yes", "Yes", "Yes", "unknown", "no", "yes"]})
    with pytest.raises(InputFileError, match=r"'no' \(3 rows\).*'Yes' \(2 rows\).*'unknown' \(1 rows\)"):
        build_cohort(df, parse_spec(SPEC), seed=0, source="t")
    two = df.assign(outcome=["no", "no", "yes", "yes", "yes", "no", "no", "yes"])
    assert build_cohort(two, parse_spec(SPEC), seed=0, source="t").y.sum() == 4


def _export(tmp_path: Path, seed: int) -> Path:
    model = tmp_path / f"run{seed}/risk_x"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text("dims: [ 2 ]")
    (model / "1/model_card.json").write_text(json.dumps({"version": 1, "seed": seed}))
    return model


def test_publish_names_the_version_and_warns_about_a_newer_one(tmp_path: Path, caplog) -> None:
    repo = tmp_path / "repo"
    publish(_export(tmp_path, 0), repo)
    assert publish(_export(tmp_path, 1), repo, new_version=True) == 2
    with caplog.at_level(logging.INFO, logger="healthai_training.publish"):
        assert publish(_export(tmp_path, 3), repo) == 1
    assert "as version 1" in caplog.text and "version 2" in caplog.text and "--new-version" in caplog.text
    assert any(r.levelno == logging.WARNING for r in caplog.records)


def test_train_risk_has_new_version(tmp_path: Path, capsys) -> None:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "risk", "--dataset", "heart", "--new-version"])
    assert args.new_version and args.func(args) == 2
    assert "--new-version needs --export-to" in capsys.readouterr().out
