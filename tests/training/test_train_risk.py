"""Risk model: DP accounting, loss falls, calibrated ONNX export with a full card, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from healthai.serving.risk.card import parse_risk_card
from healthai_training.errors import PrivacyBudgetError, TrainingInputError
from healthai_training.export import CARD_FIELDS, run_onnx
from healthai_training.privacy import PrivacySettings, validate_privacy
from healthai_training.risk.data import load_heart
from healthai_training.risk.diabetes import load_diabetes
from healthai_training.risk.train import RiskConfig, train_risk
from healthai_training.runs import run_risk

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")
HEART = "risk/uci_heart_disease/heart_disease_4sites.csv"
CP = ["cp_typical_angina", "cp_atypical_angina", "cp_non_anginal", "cp_asymptomatic"]


@pytest.fixture(scope="module")
def heart(shared_data: Path):
    return load_heart(shared_data / HEART, seed=0)


def test_heart_features_and_patient_split(heart) -> None:
    assert heart.x.shape == (920, len(heart.features))
    assert np.isfinite(heart.x).all()
    parts = [set(v.tolist()) for v in heart.split.values()]
    assert sum(len(p) for p in parts) == 920 and not (
        parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2]
    )


def test_dp_run_respects_target_epsilon(heart) -> None:
    cfg = RiskConfig(epochs=5, batch_size=64, lr=1e-2, privacy=PrivacySettings(epsilon=1.2))
    result = train_risk(data=heart, config=cfg)
    priv = result.privacy
    assert priv["private"] and 0 < priv["epsilon"] <= 1.2
    assert priv["delta"] == 1e-5 and priv["max_grad_norm"] == 1.0 and priv["accountant"] == "rdp"
    assert priv["noise_multiplier"] > 0


def test_non_private_loss_falls_and_model_is_calibrated(heart) -> None:
    result = train_risk(
        data=heart,
        config=RiskConfig(epochs=15, batch_size=64, lr=1e-2, privacy=PrivacySettings(epsilon=None)),
    )
    losses = [c["train_loss"] for c in result.curve]
    assert losses[-1] < losses[0]
    assert result.metrics["test"]["auroc"] > 0.75
    assert result.test_probabilities.min() >= 0 and result.test_probabilities.max() <= 1
    assert result.privacy["private"] is False and result.privacy["epsilon"] is None


def test_cli_run_exports_onnx_with_full_card(shared_data: Path, tmp_path: Path) -> None:
    cfg = RiskConfig(epochs=3, batch_size=64, lr=1e-2, privacy=PrivacySettings(epsilon=3.0))
    run_dir, _ = run_risk(
        dataset="heart",
        data_root=shared_data,
        config=cfg,
        runs_dir=tmp_path / "runs",
        export_repo=tmp_path / "repo",
    )
    for name in ("metrics.json", "training_curve.png", "calibration.png"):
        assert (run_dir / name).is_file()
    card = json.loads((tmp_path / "repo/risk_heart/1/model_card.json").read_text())
    assert set(CARD_FIELDS) <= set(card)
    assert {"features", "risk_bands"} <= set(card)
    for field in (
        "privacy_unit",
        "epsilon",
        "delta",
        "max_grad_norm",
        "accountant",
        "noise_multiplier",
        "epochs",
        "sample_rate",
    ):
        assert field in card["privacy"]
    assert card["privacy"]["epsilon"] <= 3.0
    assert all({"name", "description", "unit", "baseline", "domain"} <= set(f) for f in card["features"])
    domain = {f["name"]: f["domain"] for f in card["features"]}
    assert (domain["age"]["min"], domain["age"]["max"]) == (18, 110)
    assert domain["sex_male"] == {"kind": "binary"}
    assert {"name": "chest_pain", "features": CP, "rule": "exactly_one"} in card["domains"]["one_hot"]
    served = parse_risk_card(card, n_inputs=len(card["features"]), where="exported")
    assert served.domains is not None and served.domains.groups[0][0] == "chest_pain"
    assert card["onnx"]["parity_max_rel_err"] < 1e-4
    config = (tmp_path / "repo/risk_heart/config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in config and "max_queue_delay_microseconds" in config
    x = np.array([[f["baseline"] for f in card["features"]]] * 3, dtype=np.float32)
    p = run_onnx(tmp_path / "repo/risk_heart/1/model.onnx", {"features": x})
    assert p.shape == (3, 1) and np.all((p > 0) & (p < 1))


def test_bad_privacy_settings_are_refused() -> None:
    with pytest.raises(TrainingInputError, match="epsilon must be a finite number > 0"):
        validate_privacy(PrivacySettings(epsilon=0.0), sample_rate=0.1, epochs=5)
    with pytest.raises(TrainingInputError, match="epsilon must be a finite number > 0"):
        validate_privacy(PrivacySettings(epsilon=-1.0), sample_rate=0.1, epochs=5)
    with pytest.raises(TrainingInputError, match=r"delta must be in \(0, 1\)"):
        validate_privacy(PrivacySettings(delta=1.0), sample_rate=0.1, epochs=5)
    with pytest.raises(TrainingInputError, match="max_grad_norm"):
        validate_privacy(PrivacySettings(max_grad_norm=0.0), sample_rate=0.1, epochs=5)
    with pytest.raises(PrivacyBudgetError, match=r"epsilon=0\.001"):
        validate_privacy(PrivacySettings(epsilon=1e-3), sample_rate=1.0, epochs=200)
    assert validate_privacy(PrivacySettings(epsilon=None), sample_rate=0.1, epochs=5) is None
    sigma = validate_privacy(PrivacySettings(epsilon=1.2), sample_rate=0.01, epochs=10)
    assert sigma is not None and math.isfinite(sigma)


def test_unreachable_epsilon_stops_before_training(heart) -> None:
    cfg = RiskConfig(epochs=300, batch_size=920, privacy=PrivacySettings(epsilon=0.01))
    with pytest.raises(PrivacyBudgetError, match=r"cannot be reached|noise multiplier"):
        train_risk(data=heart, config=cfg)


def test_heart_missing_column_and_nan_label(shared_data: Path, tmp_path: Path) -> None:
    df = pd.read_csv(shared_data / HEART)
    df.drop(columns=["chol"]).to_csv(tmp_path / "no_chol.csv", index=False)
    with pytest.raises(TrainingInputError, match=r"missing required columns \['chol'\]"):
        load_heart(tmp_path / "no_chol.csv")
    df.loc[5, "target"] = np.nan
    df.to_csv(tmp_path / "nan_label.csv", index=False)
    with pytest.raises(TrainingInputError, match="'target' has 1 NaN"):
        load_heart(tmp_path / "nan_label.csv")


def _diabetes_part(shared_data: Path, tmp_path: Path) -> pd.DataFrame:
    return pd.read_csv(
        shared_data / "risk/diabetes130/diabetic_data.part01.csv",
        keep_default_na=False,
        na_values=["?"],
        dtype={"diag_1": str, "diag_2": str, "diag_3": str},
        nrows=3000,
    )


def test_diabetes_bad_input(shared_data: Path, tmp_path: Path) -> None:
    df = _diabetes_part(shared_data, tmp_path)
    (tmp_path / "a").mkdir()
    df.drop(columns=["number_inpatient"]).to_csv(tmp_path / "a/diabetic_data.part01.csv", index=False)
    with pytest.raises(TrainingInputError, match="number_inpatient"):
        load_diabetes(tmp_path / "a")
    (tmp_path / "b").mkdir()
    df.assign(readmitted=df["readmitted"].where(df.index != 3)).to_csv(
        tmp_path / "b/diabetic_data.part01.csv", index=False
    )
    with pytest.raises(TrainingInputError, match="'readmitted' has 1 missing"):
        load_diabetes(tmp_path / "b")
    with pytest.raises(TrainingInputError, match="no diabetic_data"):
        load_diabetes(tmp_path / "empty")


def test_diabetes_one_encounter_per_patient(shared_data: Path, tmp_path: Path) -> None:
    df = _diabetes_part(shared_data, tmp_path)
    (tmp_path / "d").mkdir()
    df.to_csv(tmp_path / "d/diabetic_data.part01.csv", index=False)
    data = load_diabetes(tmp_path / "d", seed=0)
    kept = df[~df["discharge_disposition_id"].isin({11, 13, 14, 19, 20, 21})]
    assert len(data.y) == kept["patient_nbr"].nunique()
    names = [f.name for f in data.features]
    assert {"charlson_index", "primary_dx_circulatory", "age_risk", "number_inpatient"} <= set(names)
    assert data.description["privacy_unit"].startswith("patient")
