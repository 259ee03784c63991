"""Risk.Score over gRPC on a real server with a tiny logistic model (probabilities checked exactly)."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from healthai.v1 import risk_pb2, risk_pb2_grpc

from .tiny_models import RISK_FEATURES

W = np.array([1.0, 0.5, -0.25, 2.0], np.float32)


def prob(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-(x @ W - 1.0)))


@pytest.fixture
def stub(risk_repo, make_server):
    return risk_pb2_grpc.RiskStub(make_server(risk_repo, max_patients_per_request=100).channel)


def score(stub, x: np.ndarray, **kw) -> risk_pb2.ScoreResponse:
    kw.setdefault("model_name", "risk_tiny")
    return stub.Score(risk_pb2.ScoreRequest(features=x.reshape(-1).tolist(), **kw), timeout=10)


def test_scores_a_batch_with_bands_and_top_features(stub):
    x = np.array([[0, 0, 0, 0], [3, 0, 0, 0], [0.2, 0.1, 0.3, -0.2], [0, 0, 4, 1.5]], np.float32)
    r = score(stub, x)
    assert (r.model_name, r.model_version) == ("risk_tiny", 1)
    p = prob(x)
    np.testing.assert_allclose(r.probability, p, rtol=1e-5)
    assert list(r.risk_band) == ["medium" if 0.2 < q <= 0.5 else "low" if q <= 0.2 else "high" for q in p]
    assert r.top_k == 3
    names = np.array(r.top_feature_name).reshape(4, 3)
    contrib = np.array(r.top_feature_contribution).reshape(4, 3)
    # patient 1: only 'age' differs from the baseline (0) -> it is the top feature; the rest move nothing
    assert names[1, 0] == "age"
    assert contrib[1, 0] == pytest.approx(p[1] - prob(np.zeros(4, np.float32)), rel=1e-5)
    np.testing.assert_allclose(contrib[1, 1:], 0, atol=1e-7)
    # patient 3: hba1c (weight 2 x 1.5) outweighs systolic_bp (-0.25 x 4)
    assert list(names[3, :2]) == ["hba1c", "systolic_bp"]
    assert contrib[3, 0] > 0 > contrib[3, 1]
    assert list(r.charlson_index) == [-1] * 4 and list(r.charlson_available) == [False] * 4


def test_feature_names_reorder_columns_and_top_features_can_be_off(stub):
    x = np.array([[0.5, 1.0, -1.0, 0.25]], np.float32)
    order = [2, 0, 3, 1]
    r = score(stub, x[:, order], feature_names=[RISK_FEATURES[i] for i in order], top_features=0)
    np.testing.assert_allclose(r.probability, prob(x), rtol=1e-5)
    assert r.top_k == 0 and not r.top_feature_name


def test_charlson_index_from_icd10_and_icd9_codes(stub):
    diagnoses = [risk_pb2.DiagnosisCodes(codes=["I21.9", "e1165", "C78.0"]),  # mi 1 + diab 1 + metacanc 6
                 risk_pb2.DiagnosisCodes(codes=["410.1", "250.4"], system="icd9"),  # mi 1 + diabwc 2
                 risk_pb2.DiagnosisCodes(codes=["I21.9", "22298006"]),  # a SNOMED code: cannot be mapped
                 risk_pb2.DiagnosisCodes()]
    r = score(stub, np.zeros((4, 4), np.float32), diagnoses=diagnoses)
    assert list(r.charlson_index) == [8, 3, -1, -1]
    assert list(r.charlson_available) == [True, True, False, False]


def test_requests_batched_together_keep_their_own_top_k(risk_repo, make_server):
    from concurrent.futures import ThreadPoolExecutor

    stub = risk_pb2_grpc.RiskStub(make_server(risk_repo).channel)
    x = np.random.default_rng(3).normal(size=(7, 4)).astype(np.float32)

    def call(i: int) -> risk_pb2.ScoreResponse:
        return score(stub, x[i:i + 1 + i % 2], top_features=i % 4)

    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(call, range(6)))
    for i, r in enumerate(responses):
        n = 1 + i % 2
        np.testing.assert_allclose(r.probability, prob(x[i:i + n]), rtol=1e-5)
        assert r.top_k == i % 4 and len(r.top_feature_name) == n * (i % 4)


def test_features_raw_bytes_give_the_same_scores(stub):
    x = np.random.default_rng(5).normal(size=(3, 4)).astype(np.float32)
    r = stub.Score(risk_pb2.ScoreRequest(model_name="risk_tiny", features_raw=x.astype("<f4").tobytes()))
    np.testing.assert_allclose(r.probability, prob(x), rtol=1e-5)
    assert len(r.top_feature_name) == 9


def test_pinned_version(stub):
    r = score(stub, np.zeros((1, 4), np.float32), model_version=1)
    assert r.model_version == 1


def _status(stub, x_or_values, **kw) -> grpc.RpcError:
    values = np.asarray(x_or_values, np.float32)
    with pytest.raises(grpc.RpcError) as err:
        score(stub, values, **kw)
    return err.value

INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(("values", "kw", "code", "message"), [
    (np.zeros(4), {"model_name": "nope"}, NOT_FOUND, "model 'nope' is not in the model repository"),
    (np.zeros(4), {"model_version": 3}, NOT_FOUND, "has no version 3"),
    (np.zeros(4), {"model_name": ""}, INVALID, "model_name: required"),
    (np.zeros(5), {}, INVALID, "features: 5 values is not a multiple of the 4 features per patient"),
    (np.zeros(0), {}, INVALID, "features: empty"),
    (np.zeros(4), {"features_raw": b"\0" * 16}, INVALID, "give features or features_raw, not both"),
    (np.zeros(0), {"features_raw": b"\0" * 15}, INVALID, "features_raw: 15 bytes is not a whole number"),
    (np.zeros(0), {"features_raw": np.array([0, 0, np.nan, 0], "<f4").tobytes()}, INVALID,
     "features[0].systolic_bp: non-finite value nan"),
    (np.zeros(404), {}, INVALID, "101 patients is over the limit of 100"),
    ([0, 0, 0, 0, 1, np.nan, 0, 0], {}, INVALID, "features[1].bmi: non-finite value nan"),
    ([0, 0, 0, np.inf], {}, INVALID, "features[0].hba1c: non-finite value inf"),
    (np.zeros(4), {"feature_names": ["age", "bmi", "sbp", "hba1c"]}, INVALID,
     "feature_names[2]: unknown feature 'sbp'"),
    (np.zeros(4), {"feature_names": ["age", "bmi", "bmi", "hba1c"]}, INVALID,
     "feature_names: 'bmi' given twice"),
    (np.zeros(3), {"feature_names": ["age", "bmi", "hba1c"]}, INVALID,
     "feature_names: missing model features (systolic_bp: give it)"),
    (np.zeros(8), {"diagnoses": [risk_pb2.DiagnosisCodes(codes=["I21.9"])]}, INVALID,
     "diagnoses: 1 entries for 2 patients"),
    (np.zeros(4), {"diagnoses": [risk_pb2.DiagnosisCodes(codes=["I21.9"], system="snomed")]}, INVALID,
     "diagnoses[0].system: 'snomed' is not icd10 or icd9"),
], ids=["unknown-model", "unknown-version", "no-model", "ragged", "empty", "too-many", "nan", "inf",
        "unknown-feature", "duplicate-feature", "missing-feature", "diagnoses-count", "code-system",
        "raw-and-typed", "raw-ragged-bytes", "raw-nan"])
def test_bad_input_status(stub, values, kw, code, message):
    err = _status(stub, values, **kw)
    assert err.code() == code
    assert message in err.details()


def test_model_with_no_loadable_version_is_failed_precondition(tmp_path, make_server):
    bad = tmp_path / "models" / "risk_broken" / "1"
    bad.mkdir(parents=True)
    (bad / "model.onnx").write_bytes(b"not an onnx file")
    stub = risk_pb2_grpc.RiskStub(make_server(tmp_path / "models").channel)
    err = _status(stub, np.zeros(4), model_name="risk_broken")
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION  # refused at load: retrying cannot help
    assert "not a valid ONNX model" in err.details()
