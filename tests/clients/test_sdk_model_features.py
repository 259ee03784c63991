"""The SDK against a real server: ``Client.risk_model_info`` lists a risk model's features (Risk.Describe)
under the Score scope; malformed forecast histories and scenario options are refused naming the argument
(never a bare numpy/protobuf error or an internal function's name)."""

from __future__ import annotations

from typing import Any

import pytest

from healthai_client import Client, HealthAIClientError
from healthai_client.requests import forecast_request
from healthai_client.scenario import scenario_request

from .model_repo import COHORT_FEATURES, COHORT_MODEL, FORECAST_MODEL, RISK_FEATURES, RISK_MODEL
from .pki import Secure
from .test_sdk_security import _client


def test_risk_model_info_lists_features_in_input_order(server: str) -> None:
    with Client(server) as c:
        info = c.risk_model_info(COHORT_MODEL)
        pinned = c.risk_model_info(RISK_MODEL, model_version=1)
        with pytest.raises(HealthAIClientError, match="model_version") as err:
            c.risk_model_info(RISK_MODEL, model_version=-1)
    assert err.value.code.name == "INVALID_ARGUMENT"
    assert (info["model_name"], info["model_version"]) == (COHORT_MODEL, 1)
    assert [f["name"] for f in info["features"]] == COHORT_FEATURES
    hba1c = {f["name"]: f for f in info["features"]}["hba1c"]
    assert (hba1c["description"], hba1c["unit"], hba1c["may_be_missing"], hba1c["missing_flag"]) == (
        "hba1c", "1", True, "hba1c_missing")
    flag = {f["name"]: f for f in info["features"]}["hba1c_missing"]
    assert flag["derived"] and flag["derived_from"] == ["hba1c"]
    assert [f["name"] for f in pinned["features"]] == RISK_FEATURES
    assert pinned["features"][0]["min"] is None and pinned["features"][0]["kind"] is None
    assert pinned["risk_bands"] == ["low", "medium", "high"]
    assert pinned["privacy"] == {"private": False, "epsilon": None, "delta": None, "privacy_unit": None}


def test_risk_model_info_needs_only_the_score_scope(secure_server: Secure) -> None:
    address, pki, keys = secure_server
    with _client(address, pki, keys["score"]) as c:
        assert [f["name"] for f in c.risk_model_info(RISK_MODEL)["features"]] == RISK_FEATURES


@pytest.mark.parametrize(("history", "text"), [
    ({"US-MA": {"a": 1}}, "history['US-MA']"),
    ({"US-MA": [1, "x", 3]}, "history['US-MA']: counts must be numbers"),
    ({"US-MA": "12"}, "history['US-MA']"),
    ({"US-MA": 5}, "history['US-MA']"),
    ({"US-MA": [[1, 2], [3, 4]]}, "history['US-MA']"),
    (5, "history: a int is not a history"),
    ("US-MA", "history: a str is not a history"),
    ((["US-MA"], [["x"]]), "history: counts must be numbers"),
    ((5, [[1]]), "history: region_ids must be a sequence"),
    ({7: [1, 2]}, "history: region ids must be strings"),
])
def test_malformed_history_names_history(history: Any, text: str) -> None:
    with pytest.raises(ValueError) as err:
        forecast_request(None, model=FORECAST_MODEL, history=history)
    assert text in str(err.value)


def test_forecast_history_error_over_the_client(server: str) -> None:
    with Client(server) as c, pytest.raises(ValueError, match=r"history\['US-MA'\]"):
        c.forecast(model=FORECAST_MODEL, history={"US-MA": {"2024-01-01": 3}})


def test_unknown_scenario_option_is_named_with_the_accepted_ones(server: str) -> None:
    with Client(server) as c, pytest.raises(TypeError) as err:
        c.scenario("us_counties", horizon_days=7, seeds={"06037": 5})
    message = str(err.value)
    assert "'seeds'" in message and "seed_infections" in message and "interventions" in message
    assert "scenario_request" not in message


def test_bad_intervention_key_names_the_accepted_keys() -> None:
    with pytest.raises(ValueError) as err:
        scenario_request("us_counties", horizon_days=7, seed_infections={"06037": 5},
                         interventions=[{"region": ["06037"], "start_day": 1}])
    message = str(err.value)
    assert "interventions[0]" in message and "'region'" in message and "'regions'" in message
    assert "Protocol message" not in message
    with pytest.raises(ValueError, match=r"interventions\[0\]: a list"):
        scenario_request("us_counties", horizon_days=7, interventions=[["06037"]])
