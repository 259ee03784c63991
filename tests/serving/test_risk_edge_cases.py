"""Edge cases of Risk.Score over a real server: the shipped risk_heart fills and flags missing values as
its training did (its card's ``imputation`` block), a charlson_index feature that disagrees with the
patient's codes is refused, a negative model_version is refused, a version refused at load answers
FAILED_PRECONDITION (not the retried UNAVAILABLE) without server paths, the log line of a refused call
withholds the values, and a card whose version is not its folder's is served with a warning."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from healthai.errors import FailedPrecondition, NotReady
from healthai.serving.risk.card import RiskCard, parse_risk_card
from healthai.serving.runtime.manager import ModelManager
from healthai.serving.settings import DEFAULT_MODEL_REPOSITORY, ServingSettings, newest_version_dir
from healthai.v1 import risk_pb2, risk_pb2_grpc
from tests.serving.conftest import ServerThread

from .tiny_models import write_risk_version

HEART, READMISSION = "risk_heart", "risk_readmission"
HEART_ROW = dict(age=67, sex_male=1, cp_typical_angina=0, cp_atypical_angina=0, cp_non_anginal=0,
                 cp_asymptomatic=1, resting_sbp=160, cholesterol=286, cholesterol_missing=0,
                 fasting_glucose_high=0, ecg_st_t_abnormal=0, ecg_lvh=1, max_heart_rate=108,
                 exercise_angina=1, st_depression=1.5, exercise_test_missing=0)


def _card(name: str) -> dict:
    return json.loads((newest_version_dir(name) / "model_card.json").read_text())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    repo = tmp_path_factory.mktemp("models")
    for name in (HEART, READMISSION):
        shutil.copytree(DEFAULT_MODEL_REPOSITORY / name, repo / name)
    s = ServerThread(ServingSettings(model_repository=repo, reload_poll_s=0.0))
    yield s
    s.close()


def score(channel: grpc.Channel, model: str, rows: list[dict[str, float]], **kw) -> risk_pb2.ScoreResponse:
    names = list(rows[0])
    values = [float(r[n]) for r in rows for n in names]
    request = risk_pb2.ScoreRequest(model_name=model, feature_names=names, features=values, top_features=0,
                                    **kw)
    return risk_pb2_grpc.RiskStub(channel).Score(request, timeout=30)


def status(call, *args, **kw) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call(*args, **kw)
    return err.value


# -- 1. the shipped risk_heart's missing values ---------------------------------------------------------

def test_the_shipped_heart_card_fills_what_its_dp_training_filled() -> None:
    """The block holds the released (public-bounds) fill of every feature the heart loader fills; no
    training value; risk_readmission had no missing value and fills none."""
    card = _card(HEART)
    released = card["privacy"]["released"]["features"]
    block = card["imputation"]
    assert block["values"] == {n: released[n]["fill"] for n in block["values"]}
    assert block["values"] == {"resting_sbp": 175.0, "cholesterol": 525.0, "max_heart_rate": 140.0,
                               "st_depression": 2.5}
    assert all(released[n]["from"] == "public bounds" for n in block["values"])
    assert block["indicators"] == {"cholesterol": "cholesterol_missing",
                                   "max_heart_rate": "exercise_test_missing",
                                   "st_depression": "exercise_test_missing"}
    assert "imputation" not in _card(READMISSION)


def test_a_flag_beside_a_measured_value_is_derived(server: ServerThread) -> None:
    base = score(server.channel, HEART, [HEART_ROW]).probability[0]
    flagged = score(server.channel, HEART, [dict(HEART_ROW, cholesterol_missing=1)]).probability[0]
    assert flagged == base  # the 1 beside cholesterol=286 is set to 0
    left_out = {k: v for k, v in HEART_ROW.items()
                if k not in ("cholesterol_missing", "exercise_test_missing")}
    assert score(server.channel, HEART, [left_out]).probability[0] == base  # flags derived


def test_nan_is_filled_and_flagged_as_training_did(server: ServerThread) -> None:
    filled = score(server.channel, HEART, [dict(HEART_ROW, cholesterol=525.0, cholesterol_missing=1)])
    nan = score(server.channel, HEART, [dict(HEART_ROW, cholesterol=float("nan"))])
    measured = score(server.channel, HEART, [HEART_ROW])
    assert nan.probability[0] == filled.probability[0] != measured.probability[0]


def test_a_flag_shared_by_two_features_stays_1_while_either_is_missing(server: ServerThread) -> None:
    """exercise_test_missing marks max_heart_rate or st_depression missing (the heart loader's rule)."""
    nan = score(server.channel, HEART, [dict(HEART_ROW, st_depression=float("nan"))]).probability[0]
    prefilled = dict(HEART_ROW, st_depression=2.5, exercise_test_missing=1)  # the heart rate is measured
    assert score(server.channel, HEART, [prefilled]).probability[0] == nan
    wrong = dict(HEART_ROW, exercise_test_missing=1)  # both measured: 0
    assert score(server.channel, HEART, [wrong]).probability[0] == score(
        server.channel, HEART, [HEART_ROW]).probability[0]


def test_the_heart_loader_writes_the_block(tmp_path: Path) -> None:
    data_mod = pytest.importorskip("healthai_training.risk.data")
    rows = ["site,age,sex,cp,trestbps,chol,fbs,restecg,thalach,exang,oldpeak,target"]
    rng = np.random.default_rng(0)
    for i in range(40):
        chol = 0 if i % 5 == 0 else 200 + i
        thalach = "" if i % 7 == 0 else str(120 + i)
        rows.append(f"a,{50 + i % 20},{i % 2},{1 + i % 4},{120 + i},{chol},0,{i % 3},{thalach},0,"
                    f"{rng.uniform(0, 2):.1f},{i % 2}")
    path = tmp_path / "heart.csv"
    path.write_text("\n".join(rows) + "\n")
    data = data_mod.load_heart(path, seed=0)
    block = data.imputation
    assert list(block["values"]) == ["resting_sbp", "cholesterol", "max_heart_rate", "st_depression"]
    train = data.split["train"]
    names = [f.name for f in data.features]
    chol = names.index("cholesterol")
    measured = train[~data.missing[train, chol]]
    assert block["values"]["cholesterol"] == pytest.approx(float(data.x[measured, chol].mean()))
    assert block["indicators"]["max_heart_rate"] == "exercise_test_missing"
    parsed = parse_risk_card({"features": [{"name": n} for n in names], "risk_bands": {"all": 1.0},
                              "imputation": block}, n_inputs=0, where="heart")
    assert isinstance(parsed, RiskCard) and parsed.imputation is not None


# -- 2. charlson_index against the codes -------------------------------------------------------------

def _readmission_row() -> dict[str, float]:
    card = parse_risk_card(_card(READMISSION), n_inputs=0, where=READMISSION)
    row = dict(zip(card.feature_names, card.domains.typical_patient(card.baseline)[0].tolist(), strict=True))
    return {n: (0.0 if n.startswith("charlson_") else v) for n, v in row.items()}


def test_a_charlson_index_the_codes_contradict_is_refused(server: ServerThread) -> None:
    row = _readmission_row()
    codes = [risk_pb2.DiagnosisCodes(codes=["V57.89"], system="icd9")]  # no comorbidity
    assert score(server.channel, READMISSION, [row], diagnoses=codes).charlson_index[0] == 0  # agree
    wrong = dict(row, charlson_aids=1.0, charlson_metacanc=1.0, charlson_diabwc=1.0, charlson_index=14.0)
    err = status(score, server.channel, READMISSION, [row, wrong], diagnoses=codes * 2)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details().startswith("features[1].charlson_index=14 disagrees with diagnoses[1], whose codes "
                                    "give charlson_index=0")


# -- 3. model_version ----------------------------------------------------------------------------------

def test_a_negative_model_version_is_refused(server: ServerThread) -> None:
    err = status(score, server.channel, HEART, [HEART_ROW], model_version=-1)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and err.details().startswith("model_version: -1")
    newest = int(newest_version_dir(HEART).name)
    assert score(server.channel, HEART, [HEART_ROW], model_version=0).model_version == newest


# -- 5. refused versions ---------------------------------------------------------------------------

def test_a_version_refused_at_load_is_failed_precondition_without_paths(risk_repo: Path, make_server) -> None:
    server = make_server(risk_repo)
    bad = risk_repo / "risk_tiny" / "2"
    bad.mkdir()
    (bad / "model.onnx").write_bytes(b"\x08\x07garbage" * 10)
    server.poll()
    request = risk_pb2.ScoreRequest(model_name="risk_tiny", model_version=2, features=[1.0] * 4)
    err = status(risk_pb2_grpc.RiskStub(server.channel).Score, request, timeout=10)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION  # clients retry only UNAVAILABLE
    assert "version 2 is not served: refused at load" in err.details()
    assert "risk_tiny/2/model.onnx: not a valid ONNX model" in err.details()
    assert str(risk_repo.parent) not in err.details() and "/tmp" not in err.details()


def test_a_model_with_no_loadable_version_is_failed_precondition(tmp_path: Path, make_server) -> None:
    bad = tmp_path / "models" / "risk_broken" / "1"
    bad.mkdir(parents=True)
    (bad / "model.onnx").write_bytes(b"not an onnx file")
    server = make_server(tmp_path / "models")
    err = status(risk_pb2_grpc.RiskStub(server.channel).Score,
                 risk_pb2.ScoreRequest(model_name="risk_broken", features=[1.0] * 4), timeout=10)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and str(tmp_path) not in err.details()


def test_a_version_waiting_on_triton_stays_unavailable(tmp_path: Path) -> None:
    manager = ModelManager(ServingSettings(model_repository=tmp_path))
    manager._refused[("m", 1)] = ((), "Triton at triton:8001 is not reachable")  # no fingerprint: retried
    with pytest.raises(NotReady):
        manager.resolve("m", 1)
    reason = f"{tmp_path}/m/1/model.onnx: not a valid ONNX model"
    manager._refused[("m", 1)] = ((("model.onnx", 1, 1),), reason)
    with pytest.raises(FailedPrecondition) as err:
        manager.resolve("m")
    assert "m/1/model.onnx: not a valid" in err.value.message and str(tmp_path) not in err.value.message


# -- 6. the log line of a refused call ----------------------------------------------------------------

def test_the_log_line_withholds_the_clinical_value(server: ServerThread,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="healthai.app.interceptors"):
        err = status(score, server.channel, HEART, [dict(HEART_ROW, age=110.01)])
    assert err.details().startswith("features[0].age=110.01 is outside [18, 110]")  # the caller reads it
    lines = [r.getMessage() for r in caplog.records if "INVALID_ARGUMENT" in r.getMessage()]
    assert lines and all("features[0].age=<value> is outside [18, 110]" in line for line in lines)
    assert not any("110.01" in line for line in lines)


# -- a card whose version is not its folder's -----------------------------------------------------------

def test_a_card_version_other_than_its_folder_is_warned(risk_repo: Path, make_server,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    server = make_server(risk_repo)
    vdir = write_risk_version(risk_repo, "risk_tiny", 3, np.ones(4))
    card = json.loads((vdir / "model_card.json").read_text())
    (vdir / "model_card.json").write_text(json.dumps({**card, "version": 2}))
    with caplog.at_level(logging.WARNING, logger="healthai.serving.runtime.manager"):
        server.poll()
    lines = [r.getMessage() for r in caplog.records if "model_card.json says version" in r.getMessage()]
    assert lines == ["model risk_tiny version folder 3: its model_card.json says version 2; serving it as "
                     "version 3 (the folder's number)"]
