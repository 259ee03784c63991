"""Risk.Score derives the engineered features (age_risk, primary_dx_*, charlson_*) with the training
code when the caller sends raw columns + diagnosis codes: same answers as sending every feature."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest

from healthai.serving.risk.features import derivable_features
from healthai.serving.settings import DEFAULT_MODEL_REPOSITORY, ServingSettings
from healthai.v1 import risk_pb2, risk_pb2_grpc
from healthai_training.risk.diabetes import DEATH_OR_HOSPICE, load_diabetes, read_diabetes
from tests.serving.conftest import ServerThread

MODEL = "risk_readmission"


@pytest.fixture(scope="module")
def patients(shared_data: Path) -> tuple[tuple[str, ...], np.ndarray, list[risk_pb2.DiagnosisCodes]]:
    """100 real Diabetes 130 patients as training sees them: features in card order + their ICD-9 codes."""
    folder = shared_data / "risk" / "diabetes130"
    data = load_diabetes(folder, seed=0, encounter="first")
    df = read_diabetes(folder)
    df = df[~df["discharge_disposition_id"].isin(DEATH_OR_HOSPICE)]
    df = df.sort_values("encounter_id").drop_duplicates("patient_nbr", keep="first").reset_index(drop=True)
    assert len(df) == len(data.x)
    rows = np.flatnonzero(df["diag_1"].notna().to_numpy())[:100]
    codes = [risk_pb2.DiagnosisCodes(codes=[c for c in df.loc[i, ["diag_1", "diag_2", "diag_3"]]
                                            if isinstance(c, str)], system="icd9") for i in rows]
    return tuple(f.name for f in data.features), data.x[rows].astype(np.float32), codes


@pytest.fixture(scope="module")
def stub() -> risk_pb2_grpc.RiskStub:
    server = ServerThread(ServingSettings(model_repository=DEFAULT_MODEL_REPOSITORY, reload_poll_s=0.0))
    yield risk_pb2_grpc.RiskStub(server.channel)
    server.close()


def test_raw_columns_and_codes_score_like_all_features(stub, patients) -> None:
    card, x, codes = patients
    full = stub.Score(risk_pb2.ScoreRequest(model_name=MODEL, features=x.reshape(-1).tolist(),
                                            diagnoses=codes), timeout=60)
    raw = [n for n in card if n not in derivable_features(card)]
    assert len(raw) < len(card)
    x_raw = x[:, [card.index(n) for n in raw]]
    derived = stub.Score(risk_pb2.ScoreRequest(model_name=MODEL, feature_names=raw,
                                               features=x_raw.reshape(-1).tolist(), diagnoses=codes),
                         timeout=60)
    np.testing.assert_array_equal(derived.probability, full.probability)
    assert list(derived.top_feature_name) == list(full.top_feature_name)


def test_left_out_features_without_codes_name_what_is_missing(stub, patients) -> None:
    card, x, _ = patients
    raw = [n for n in card if n not in derivable_features(card)]
    x_raw = x[:2, [card.index(n) for n in raw]]
    with pytest.raises(grpc.RpcError) as err:
        stub.Score(risk_pb2.ScoreRequest(model_name=MODEL, feature_names=raw,
                                         features=x_raw.reshape(-1).tolist()), timeout=60)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "charlson_index" in err.value.details() and "diagnoses" in err.value.details()
