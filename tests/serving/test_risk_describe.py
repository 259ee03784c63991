"""Risk.Describe over a real server: each feature of the default risk models in input order with its
description, unit, domain, one-hot group, missing-value handling and derivation, the card's privacy
essentials, no training statistic; the same model/version errors as Score; the Score scope; reflection."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from healthai.security.interceptor import AuthInterceptor
from healthai.security.settings import SecuritySettings
from healthai.serving.settings import DEFAULT_MODEL_REPOSITORY, ServingSettings, newest_version_dir
from healthai.v1 import risk_pb2, risk_pb2_grpc
from tests.serving.conftest import ServerThread

from .tiny_models import write_risk_version

HEART, READMISSION = "risk_heart", "risk_readmission"


def _copy(repo: Path, name: str) -> None:
    shutil.copytree(DEFAULT_MODEL_REPOSITORY / name, repo / name)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    repo = tmp_path_factory.mktemp("models")
    _copy(repo, HEART)
    _copy(repo, READMISSION)
    write_risk_version(repo, "risk_tiny", 1, np.array([1.0, 0.5, -0.25, 2.0]))
    s = ServerThread(ServingSettings(model_repository=repo, reload_poll_s=0.0))
    yield s
    s.close()


def describe(srv: ServerThread, name: str, version: int = 0) -> risk_pb2.DescribeResponse:
    request = risk_pb2.DescribeRequest(model_name=name, model_version=version)
    return risk_pb2_grpc.RiskStub(srv.channel).Describe(request, timeout=30)


def raw_card(name: str) -> dict:
    return json.loads((newest_version_dir(name) / "model_card.json").read_text())


def test_heart_features_domains_missing_values_and_privacy(server: ServerThread) -> None:
    card = raw_card(HEART)
    r = describe(server, HEART)
    assert (r.model_name, r.model_version) == (HEART, int(newest_version_dir(HEART).name))
    assert [f.name for f in r.features] == [f["name"] for f in card["features"]]
    by = {f.name: f for f in r.features}
    age = by["age"]
    assert (age.description, age.unit, age.kind, age.min, age.max, age.integer) == (
        "age", "years", "range", 18.0, 110.0, False)
    sex = by["sex_male"]
    assert sex.kind == "binary" and not sex.HasField("min") and not sex.HasField("max")
    assert {n for n, f in by.items() if f.one_hot_group == "chest_pain"} == {
        "cp_typical_angina", "cp_atypical_angina", "cp_non_anginal", "cp_asymptomatic"}
    assert by["cp_asymptomatic"].one_hot_rule == "exactly_one"
    assert by["ecg_lvh"].one_hot_rule == "at_most_one"
    assert by["cholesterol"].may_be_missing and by["cholesterol"].missing_flag == "cholesterol_missing"
    assert by["resting_sbp"].may_be_missing and by["resting_sbp"].missing_flag == ""
    assert not by["age"].may_be_missing and not by["age"].derived
    flag = by["cholesterol_missing"]
    assert flag.derived and list(flag.derived_from) == ["cholesterol"]
    assert sorted(by["exercise_test_missing"].derived_from) == ["max_heart_rate", "st_depression"]
    assert list(r.risk_bands) == [b["name"] for b in card["risk_bands"]]
    p = card["privacy"]
    assert (r.privacy.private, r.privacy.epsilon, r.privacy.delta, r.privacy.privacy_unit) == (
        True, pytest.approx(p["epsilon"]), pytest.approx(p["delta"]), p["privacy_unit"])
    # no training statistic: no baseline, fill value, mean or std travels (fields and values)
    fields = {f.name for f in risk_pb2.FeatureInfo.DESCRIPTOR.fields}
    assert not fields & {"baseline", "mean", "std", "fill"}
    released = p["released"]["features"]["cholesterol"]
    assert released["fill"] not in (by["cholesterol"].min, by["cholesterol"].max)


def test_readmission_derived_features(server: ServerThread) -> None:
    by = {f.name: f for f in describe(server, READMISSION).features}
    assert by["age_risk"].derived and list(by["age_risk"].derived_from) == ["age"]
    for name in ("charlson_index", "charlson_chf", "primary_dx_circulatory"):
        assert by[name].derived and list(by[name].derived_from) == ["diagnoses"], name
    assert not by["num_medications"].derived


def test_card_without_domains_or_privacy(server: ServerThread) -> None:
    r = describe(server, "risk_tiny", 1)
    assert r.model_version == 1 and len(r.features) == 4
    assert all(f.kind == "" and not f.HasField("min") and not f.may_be_missing for f in r.features)
    assert not r.privacy.private and r.privacy.epsilon == 0


@pytest.mark.parametrize(("name", "version", "code", "text"), [
    (HEART, -1, grpc.StatusCode.INVALID_ARGUMENT, "model_version"),
    ("", 0, grpc.StatusCode.INVALID_ARGUMENT, "model_name"),
    ("no_such_model", 0, grpc.StatusCode.NOT_FOUND, "no_such_model"),
    (HEART, 99, grpc.StatusCode.NOT_FOUND, "99"),
])
def test_errors_like_score(server: ServerThread, name: str, version: int, code: grpc.StatusCode,
                           text: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        describe(server, name, version)
    assert err.value.code() == code and text in err.value.details()


def test_describe_needs_the_score_scope(tmp_path: Path) -> None:
    (tmp_path / "keys.json").write_text(json.dumps({"keys": []}))
    auth = AuthInterceptor(SecuritySettings(api_keys_file=tmp_path / "keys.json"))
    assert auth.required_scope("/healthai.v1.Risk/Describe") == auth.required_scope("/healthai.v1.Risk/Score")
    assert auth.required_scope("/healthai.v1.Risk/Describe") == "score"


def test_reflection_lists_describe(server: ServerThread) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(server.channel)
    request = reflection_pb2.ServerReflectionRequest(file_containing_symbol="healthai.v1.Risk")
    reply = next(stub.ServerReflectionInfo(iter([request]), timeout=10))
    files = [descriptor_pb2.FileDescriptorProto.FromString(b)
             for b in reply.file_descriptor_response.file_descriptor_proto]
    methods = {m.name for f in files for s in f.service if s.name == "Risk" for m in s.method}
    assert {"Score", "Describe"} <= methods
