"""Feature domains from the model card, over a real server with the default risk models: Risk.Score and
KServe ModelInfer refuse out-of-domain values with INVALID_ARGUMENT naming the patient and the feature,
accept the exact bounds, still derive features, and a card without domains still serves."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from healthai.errors import InvalidInput
from healthai.serving.risk.card import RiskCard, parse_risk_card
from healthai.serving.risk.domains import FUNCTIONS
from healthai.serving.risk.features import derivable_features
from healthai.serving.runtime.repository import RepositoryError
from healthai.serving.settings import DEFAULT_MODEL_REPOSITORY, ServingSettings, newest_version_dir
from healthai.v1 import risk_pb2, risk_pb2_grpc
from tests.serving.conftest import ServerThread

HEART, READMISSION, NO_DOMAINS = "risk_heart", "risk_readmission", "risk_heart_no_domains"
CP = ["cp_typical_angina", "cp_atypical_angina", "cp_non_anginal", "cp_asymptomatic"]


def _copy_model(src: str, dst: Path, name: str, *, domains: bool = True) -> None:
    shutil.copytree(DEFAULT_MODEL_REPOSITORY / src, dst / name)
    config = dst / name / "config.pbtxt"
    config.write_text(config.read_text().replace(f'name: "{src}"', f'name: "{name}"'))
    if not domains:
        path = newest_version_dir(name, dst) / "model_card.json"
        card = json.loads(path.read_text())
        card.pop("domains")
        for f in card["features"]:
            f.pop("domain")
        path.write_text(json.dumps(card))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerThread, list[str]]]:
    """The two default risk models and risk_heart's card stripped of its domains (warning logged)."""
    repo = tmp_path_factory.mktemp("models")
    _copy_model(HEART, repo, HEART)
    _copy_model(READMISSION, repo, READMISSION)
    _copy_model(HEART, repo, NO_DOMAINS, domains=False)
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    card_logger = logging.getLogger("healthai.serving.risk.card")
    card_logger.addHandler(handler)
    try:
        s = ServerThread(ServingSettings(model_repository=repo, reload_poll_s=0.0))
    finally:
        card_logger.removeHandler(handler)
    yield s, records
    s.close()


def card(name: str) -> RiskCard:
    raw = json.loads((newest_version_dir(name) / "model_card.json").read_text())
    return parse_risk_card(raw, n_inputs=0, where=name)


def patients(name: str, n: int = 2) -> tuple[RiskCard, np.ndarray]:
    c = card(name)
    assert c.domains is not None, f"the default {name} card has no domains"
    return c, np.repeat(c.domains.typical_patient(c.baseline), n, axis=0)


def score(srv: ServerThread, model: str, x: np.ndarray, **kw) -> risk_pb2.ScoreResponse:
    request = risk_pb2.ScoreRequest(model_name=model, features=x.reshape(-1).tolist(), **kw)
    return risk_pb2_grpc.RiskStub(srv.channel).Score(request, timeout=30)


def infer(srv: ServerThread, model: str, x: np.ndarray) -> np.ndarray:
    request = service_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name="features", datatype="FP32", shape=list(x.shape))
    request.raw_input_contents.append(np.ascontiguousarray(x, "<f4").tobytes())
    reply = service_pb2_grpc.GRPCInferenceServiceStub(srv.channel).ModelInfer(request, timeout=30)
    return np.frombuffer(reply.raw_output_contents[0], "<f4")


def refused(call, *args) -> str:
    with pytest.raises(grpc.RpcError) as err:
        call(*args)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    return err.value.details()


def with_values(c: RiskCard, x: np.ndarray, patient: int, **values: float) -> np.ndarray:
    x = x.copy()
    for name, v in values.items():
        x[patient, c.feature_names.index(name)] = v
    return x


HEART_CASES = [  # (patient, values, expected message)
    (0, {"age": 500}, "features[0].age=500 is outside [18, 110]"),
    (0, {"age": -67}, "features[0].age=-67 is outside [18, 110]"),
    (1, {"resting_sbp": 1600}, "features[1].resting_sbp=1600 is outside [50, 300]"),
    (0, {"sex_male": 7}, "features[0].sex_male=7 is not 0 or 1"),
    (0, {"sex_male": 0.5}, "features[0].sex_male=0.5 is not 0 or 1"),
    (1, dict.fromkeys(CP[:3], 1.0) | {CP[3]: 0.0},
     "features[1].chest_pain: one-hot group 'chest_pain' has 3 set (cp_typical_angina, cp_atypical_angina, "
     "cp_non_anginal); exactly one of"),
    (0, dict.fromkeys(CP, 0.0), "features[0].chest_pain: one-hot group 'chest_pain' has none set"),
    (0, {"ecg_st_t_abnormal": 1, "ecg_lvh": 1},
     "features[0].resting_ecg: one-hot group 'resting_ecg' has 2 set"),
]


@pytest.mark.parametrize(("patient", "values", "message"), HEART_CASES)
@pytest.mark.parametrize("rpc", ["Risk.Score", "ModelInfer"])
def test_heart_out_of_domain_is_refused(server, rpc, patient, values, message) -> None:
    srv, _ = server
    c, x = patients(HEART)
    bad = with_values(c, x, patient, **values)
    details = refused(score if rpc == "Risk.Score" else infer, srv, HEART, bad)
    assert details.startswith(message), details


def test_tritonclient_sees_the_same_refusal(server) -> None:
    srv, _ = server
    c, x = patients(HEART, 1)
    with triton.InferenceServerClient(f"127.0.0.1:{srv.port}") as client:
        tensor = triton.InferInput("features", list(x.shape), "FP32")
        tensor.set_data_from_numpy(with_values(c, x, 0, age=500))
        with pytest.raises(InferenceServerException) as err:
            client.infer(HEART, [tensor])
    assert "INVALID_ARGUMENT" in str(err.value.status()) and "features[0].age=500" in err.value.message()


def bounds(c: RiskCard, x: np.ndarray) -> np.ndarray:
    """Patient 0 with every range feature at its min, patient 1 at its max (derived ones recomputed)."""
    d = c.domains
    derived = {dv.column: dv for dv in d.derived}
    ranged = [j for j in range(c.n_features) if not d.binary[j] and j not in derived]
    x = x[:2].copy()
    x[0, ranged], x[1, ranged] = d.lo[ranged], d.hi[ranged]
    for j, dv in derived.items():
        x[:, j] = dv.fn(x[:, dv.sources].astype(np.float64))
    return x


@pytest.mark.parametrize("model", [HEART, READMISSION])
def test_exact_bounds_are_accepted_and_one_step_beyond_is_not(server, model) -> None:
    srv, _ = server
    c, x = patients(model)
    edge = bounds(c, x)
    p = score(srv, model, edge).probability
    np.testing.assert_allclose(infer(srv, model, edge), p, rtol=1e-5)
    j = c.feature_names.index("age")
    beyond = edge.copy()
    beyond[1, j] = np.nextafter(c.domains.hi[j], np.float32(np.inf))
    if "age_risk" in c.feature_names:
        beyond[1, c.feature_names.index("age_risk")] = FUNCTIONS[
            "healthai.normalize.features.age_risk"][1](beyond[1:, [j]].astype(np.float64))[0]
    assert "features[1].age=" in refused(score, srv, model, beyond)


READMISSION_CASES = [
    ({"num_procedures": 2.5}, "features[0].num_procedures=2.5 is not a whole number"),
    ({"number_inpatient": -1}, "features[0].number_inpatient=-1 is outside [0, 3.40282e+38]"),  # open above
    ({"hba1c_above_7": 1, "hba1c_measured": 0}, "features[0].hba1c_above_7=1 needs hba1c_measured=1"),
    ({"age": 30, "age_risk": 0.9}, "features[0].age_risk=0.9 does not match age_risk(age) = 0.1192"),
    ({"charlson_chf": 1, "charlson_index": 0},
     "features[0].charlson_index=0 does not match index_from_matrix"),
]


@pytest.mark.parametrize(("values", "message"), READMISSION_CASES)
@pytest.mark.parametrize("rpc", ["Risk.Score", "ModelInfer"])
def test_readmission_counts_implications_and_derived_features(server, rpc, values, message) -> None:
    srv, _ = server
    c, x = patients(READMISSION, 3)
    if "charlson_chf" in values:
        x = with_values(c, x, 0, **{n: 0.0 for n in c.feature_names if n.startswith("charlson_")})
    bad = with_values(c, x, 0, **values)
    details = refused(score if rpc == "Risk.Score" else infer, srv, READMISSION, bad)
    assert details.startswith(message), details


def test_derived_features_are_still_derived_and_checked(server) -> None:
    """Raw columns + ICD-9 codes: the server derives age_risk, primary_dx_* and charlson_*; the values it
    derives pass the domains, and a raw value out of domain is named in the caller's terms."""
    srv, _ = server
    c, x = patients(READMISSION, 2)
    raw = [n for n in c.feature_names if n not in derivable_features(c.feature_names)]
    cols = [c.feature_names.index(n) for n in raw]
    codes = [risk_pb2.DiagnosisCodes(codes=["428.0", "250.01"], system="icd9")] * 2
    got = score(srv, READMISSION, x[:, cols], feature_names=raw, diagnoses=codes)
    assert len(got.probability) == 2 and all(0 < p < 1 for p in got.probability)
    bad = x[:, cols].copy()
    bad[1, raw.index("age")] = 500
    details = refused(lambda: score(srv, READMISSION, bad, feature_names=raw, diagnoses=codes))
    assert details.startswith("features[1].age=500 is outside [0, 120]"), details


def test_card_without_domains_still_serves_with_a_warning(server) -> None:
    srv, records = server
    c, x = patients(HEART, 1)
    wild = with_values(c, x, 0, age=500)
    assert 0 <= score(srv, NO_DOMAINS, wild).probability[0] <= 1  # the old behaviour, knowingly
    assert infer(srv, NO_DOMAINS, wild).shape == (1,)
    assert [m for m in records if NO_DOMAINS in m and "no feature domains" in m]
    assert not [m for m in records if f"/{HEART}/" in m and "no feature domains" in m]


@pytest.mark.parametrize(("edit", "message"), [
    (lambda c: c["domains"].update(schema=2), "domains schema 2 is not 1"),
    (lambda c: c["features"][0].pop("domain"), r"features\[0\] \(age\): no domain"),
    (lambda c: c["features"][0]["domain"].update(min=200), r"range \[200.0, 110.0\] is not"),
    (lambda c: c["domains"]["one_hot"][0]["features"].append("age"), "needs binary features"),
    (lambda c: c["domains"]["one_hot"][0]["features"].append("no_such"), "lists unknown features"),
])
def test_a_malformed_domains_block_refuses_the_version(edit, message) -> None:
    raw = json.loads((newest_version_dir(HEART) / "model_card.json").read_text())
    edit(raw)
    with pytest.raises(RepositoryError, match=message):
        parse_risk_card(raw, n_inputs=16, where=HEART)


@pytest.mark.parametrize(("block", "message"), [
    ({"values": {"no_such": 1.0}}, "imputation names unknown feature 'no_such'"),
    ({"values": {"age": float("nan")}}, "imputation value of 'age' is not a finite number"),
    ({"values": {"age": 50.0}, "indicators": {"sex_male": "cp_asymptomatic"}}, "have no value"),
    ([1, 2], "imputation must be"),
])
def test_a_malformed_imputation_block_refuses_the_version(block, message) -> None:
    raw = json.loads((newest_version_dir(HEART) / "model_card.json").read_text())
    raw["imputation"] = block
    with pytest.raises(RepositoryError, match=message):
        parse_risk_card(raw, n_inputs=16, where=HEART)


def test_imputation_fills_only_nan_of_its_features_and_sets_the_indicator() -> None:
    raw = json.loads((newest_version_dir(HEART) / "model_card.json").read_text())
    names = [f["name"] for f in raw["features"]]
    raw["imputation"] = {"values": {"age": 54.5}, "indicators": {"age": "sex_male"}}  # any flag will do here
    fill = parse_risk_card(raw, n_inputs=16, where=HEART).imputation
    x = np.ones((3, len(names)), np.float32)
    assert fill.fill(x) is x  # nothing missing: no copy
    x[1, names.index("age")] = np.nan
    x[2, 0 if names[0] != "age" else 1] = np.inf  # another non-finite value: left for the check
    filled = fill.fill(x)
    assert filled[1, names.index("age")] == 54.5 and filled[1, names.index("sex_male")] == 1.0
    assert np.isnan(x[1, names.index("age")])  # the request's array is not changed
    assert np.array_equal(filled[[0, 2]], x[[0, 2]])


def test_lone_patient_derived_check_with_memoized_values(server) -> None:
    """One patient takes the memoized path: a repeat of the same sources must give the same verdicts."""
    srv, _ = server
    c, x = patients(READMISSION, 1)
    for _ in range(2):
        assert len(score(srv, READMISSION, x).probability) == 1
        details = refused(score, srv, READMISSION, with_values(c, x, 0, age_risk=0.5))
        assert details.startswith("features[0].age_risk=0.5 does not match age_risk(age) = "), details
        assert "features[0].charlson_index=" in refused(infer, srv, READMISSION,
                                                        with_values(c, x, 0, charlson_index=3))


def test_a_patient_with_every_charlson_group_is_scored(server) -> None:
    """charlson_index is checked exactly against its 17 flags, so its range is the definition's whole
    [0, 29], not the training range extrapolated (which refused the sickest patients)."""
    srv, _ = server
    c, x = patients(READMISSION, 1)
    groups = {n: 1.0 for n in c.feature_names if n.startswith("charlson_") and n != "charlson_index"}
    sick = with_values(c, x, 0, **groups, charlson_index=29.0)
    got = score(srv, READMISSION, sick)
    assert len(got.probability) == 1 and 0 < got.probability[0] < 1


@pytest.mark.parametrize("model", [HEART, READMISSION])
def test_one_patient_check_agrees_with_the_vectorized_check(model: str) -> None:
    """A lone patient is checked in Python floats: it must accept and refuse exactly what the
    vectorized check (several patients) does, with the same message."""
    card_json = json.loads((newest_version_dir(model) / "model_card.json").read_text())
    domains = parse_risk_card(card_json, n_inputs=len(card_json["features"]), where=model).domains
    assert domains is not None
    rng = np.random.default_rng(0)
    f = len(domains.names)
    valid = domains.project(rng.uniform(domains.lo, domains.hi, size=(400, f)))
    rows = valid.copy()
    kind = rng.integers(0, 5, size=len(rows))  # valid, off range, fraction, flag flipped, zeroed
    cols = rng.integers(0, f, size=len(rows))
    for i, (k, j) in enumerate(zip(kind, cols, strict=True)):
        if k == 1:
            rows[i, j] = domains.hi[j] + rng.uniform(0.5, 50)
        elif k == 2:
            rows[i, j] += 0.5
        elif k == 3:
            rows[i, j] = 1 - rows[i, j] if domains.binary[j] else rows[i, j]
        elif k == 4:
            rows[i, j] = 0.0
    outcomes = {"accepted": 0, "refused": 0}
    for i in range(len(rows)):
        one, many = None, None
        try:
            domains.check(rows[i:i + 1])
        except InvalidInput as exc:
            one = exc.message
        try:
            domains.check(np.concatenate([rows[i:i + 1], valid[:1]]))
        except InvalidInput as exc:
            many = exc.message
        assert one == many, (i, rows[i])
        outcomes["accepted" if one is None else "refused"] += 1
    assert min(outcomes.values()) > 50  # both branches exercised
