"""What a data scientist hands the SDK straight from pandas / numpy / pyarrow, against a real server:
DataFrames scored by column name, missing values as NaN, datetimes as ISO 8601, big narrow tables split
by rows, FHIR as JSON text, plots that leave the session's matplotlib backend alone."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from healthai_client import Client, read_history
from healthai_client import requests as req
from healthai_client.exchange import write_hubverse
from healthai_client.requests import flat_request, score_request

from .model_repo import (
    FORECAST_MODEL,
    REGIONS,
    RISK_FEATURES,
    RISK_MODEL,
    blood_pressures,
    expected_forecast,
    expected_probability,
)

X = np.array([[70, 28, 140, 7.5], [30, 22, 110, 5.0]], np.float32)


def test_a_dataframe_is_scored_by_its_column_names_in_any_order(server: str) -> None:
    frame = pd.DataFrame(X, columns=RISK_FEATURES)
    shuffled = frame[sorted(RISK_FEATURES)]  # alphabetical, as pd.get_dummies orders its columns
    assert list(shuffled.columns) != RISK_FEATURES
    assert list(score_request(RISK_MODEL, shuffled).feature_names) == sorted(RISK_FEATURES)
    with Client(server) as c:
        by_card = c.score(RISK_MODEL, frame).probabilities
        by_name = c.score(RISK_MODEL, shuffled).probabilities
        # feature_names picks (and orders) columns of a wider frame
        wider = shuffled.assign(note_length=3.0)
        picked = c.score(RISK_MODEL, wider, feature_names=RISK_FEATURES).probabilities
    np.testing.assert_allclose(by_card, expected_probability(X), rtol=1e-5)
    np.testing.assert_array_equal(by_name, by_card)
    np.testing.assert_array_equal(picked, by_card)
    with pytest.raises(ValueError, match=r"feature_names \['bmi'\] are not columns"):
        score_request(RISK_MODEL, frame.drop(columns="bmi"), feature_names=RISK_FEATURES)


def test_missing_feature_values_travel_as_nan() -> None:
    """None / pd.NA (nullable dtypes, object columns, dicts) are NaN: the card fills or refuses them."""
    frame = pd.DataFrame(X, columns=RISK_FEATURES).astype({"age": "Int64"})
    frame.loc[0, "age"] = pd.NA
    as_dict = [dict(zip(RISK_FEATURES, [None, 28, 140, 7.5], strict=True))]
    for features in (frame, frame.astype(object), as_dict, [[pd.NA, 28, 140, 7.5]]):
        request = score_request(RISK_MODEL, features, raw=False)
        assert np.isnan(request.features[0]) and request.features[1] == 28
    with pytest.raises(ValueError, match=r"features\[0\]\.age must be a number, got a str"):
        score_request(RISK_MODEL, [dict(zip(RISK_FEATURES, ["old", 28, 140, 7.5], strict=True))])
    with_id = frame.assign(patient_id="p-1")  # a text column left out by feature_names is never read
    request = score_request(RISK_MODEL, with_id, feature_names=RISK_FEATURES, raw=False)
    assert list(request.feature_names) == RISK_FEATURES and request.features[1] == 28
    with pytest.raises(ValueError, match=r"features\.age\[0\]"):
        score_request(RISK_MODEL, frame.astype(object).assign(age="old"))
    with pytest.raises(ValueError, match="top_features must be a whole number >= 0"):
        score_request(RISK_MODEL, X, top_features=-1)


def test_flat_datetimes_are_iso_8601_and_missing_values_are_left_out(server: str) -> None:
    patients = [
        {"patient_id": "dt-1", "birth_date": dt.datetime(1980, 5, 6, 12, 0)},
        {"patient_id": "dt-2", "birth_date": pd.Timestamp("1980-05-06")},
        {"patient_id": "dt-3", "birth_date": pd.NaT, "region": pd.NA, "sex": None},
        {"patient_id": "dt-4", "birth_date": np.datetime64("1980-05-06"), "county": 25025.0},
        {"patient_id": 77.0, "deceased": "false",
         "deceased_date": pd.Timestamp("2024-01-02 03:04", tz="UTC+02:00")},
    ]
    sent = flat_request("s", patients=patients).flat.patients
    assert [p.birth_date for p in sent] == ["1980-05-06T12:00:00", "1980-05-06T00:00:00", "", "1980-05-06",
                                            ""]
    assert not sent[2].HasField("deceased") and sent[2].region == "" and sent[2].sex == ""
    assert sent[3].county == "25025" and sent[4].patient_id == "77"
    assert sent[4].deceased is False and sent[4].deceased_date == "2024-01-02T03:04:00+02:00"
    obs = {"observation_id": "dt-o", "patient_id": "dt-1", "loinc": "8867-4", "value": pd.NA, "unit": "/min"}
    assert not flat_request("s", observations=[obs]).flat.observations[0].HasField("value")
    with pytest.raises(ValueError, match=r"patients\[0\]\.deceased must be a bool"):
        flat_request("s", patients=[{"patient_id": "x", "deceased": "maybe"}])
    with pytest.raises(ValueError, match=r"observations\[0\]\.value must be a number, got a str") as e:
        flat_request("s", observations=[{**obs, "value": "seventy"}])
    assert "seventy" not in str(e.value)  # never a patient's value
    with Client(server, source="sdk-inputs-dates") as c:
        r = c.ingest_flat(patients=patients)
    assert r.statuses == ("accepted",) * len(patients), r.outcomes


def test_a_narrow_table_is_split_by_rows_in_ingest_arrow_and_ingest_stream(server: str, monkeypatch) -> None:
    """Parts hold at most ARROW_PART_ROWS rows (the server's max_records_per_request), not only at most
    ARROW_PART_BYTES: outcomes keep their table row and their item in the stream."""
    monkeypatch.setattr(req, "ARROW_PART_ROWS", 100)
    n = 350
    table = blood_pressures(n, 233, "rows", "p-rows")
    assert table.nbytes < req.ARROW_PART_BYTES
    assert [p.num_rows for p in req.arrow_parts(table)] == [100, 100, 100, 50]
    with Client(server, source="sdk-rows") as c:
        whole = c.ingest_arrow(table, "observation")
        flat = {"observations": [{"observation_id": "rows-flat", "patient_id": "p-rows", "loinc": "8480-6",
                                  "value": 9999.0, "unit": "mm[Hg]"}]}
        mixed = c.ingest_stream([flat, (table, "observation")], source="sdk-rows-2")
    assert (whole.accepted, whole.rejected) == (n - 1, 1)
    (bad,) = whole.rejected_outcomes()
    assert (bad.index, bad.request_index, bad.issues[0].field_path) == (233, 0, "arrow.rows[233].value")
    assert [o.index for o in whole.outcomes] == list(range(n))
    assert (mixed.accepted, mixed.rejected) == (n - 1, 2)
    assert [(o.request_index, o.index) for o in mixed.rejected_outcomes()] == [(0, 0), (1, 233)]
    assert [o.index for o in mixed.outcomes if o.request_index == 1] == list(range(n))


def test_fhir_json_text_is_sent_and_errors_never_echo_it(server: str) -> None:
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": {"resourceType": "Patient", "id": "js-1", "gender": "female"}}]}
    with Client(server, source="sdk-json-text") as c:
        assert c.ingest_fhir("\n " + json.dumps(bundle)).statuses == ("accepted",)
    for secret, message in (("<Bundle>Jane Doe 1980-05-06 " + "x" * 300, "FHIR XML is not supported"),
                            ('<Patient><family value="Jane"/></Patient>', "FHIR XML is not supported"),
                            ("Jane Doe 1980-05-06 " + "x" * 300, "neither a path nor JSON text"),
                            ('"Jane Doe", 1980-05-06', "neither a path nor JSON text")):
        with pytest.raises(ValueError, match=message) as e:
            req.fhir_request(secret, "s")
        assert "Jane" not in str(e.value) and e.value.__cause__ is None
    bom = req.fhir_request("\ufeff" + json.dumps(bundle), "s")  # a byte-order mark before the JSON
    assert json.loads(bom.fhir.json)["type"] == "collection"


def test_plot_forecast_leaves_the_backend_alone(tmp_path: Path) -> None:
    import matplotlib

    from healthai_client.exchange import plot_forecast
    from healthai_client.results import ForecastResult

    fc = ForecastResult("m", 1, ("A",), (1, 2), (0.1, 0.5, 0.9), np.ones((2, 1), np.float32),
                        np.ones((2, 1, 3), np.float32), _region_index={"A": 0})
    before = matplotlib.get_backend()
    matplotlib.use("svg")  # stands in for a notebook's inline backend
    try:
        plot_forecast(fc, tmp_path / "fan.png")
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    assert (tmp_path / "fan.png").read_bytes()[:4] == b"\x89PNG"


def test_forecast_and_read_history_take_a_dataframe_and_write_hubverse_a_str_path(server: str,
                                                                                  tmp_path: Path) -> None:
    history = np.arange(18, dtype=np.float64).reshape(6, 3) * 10
    undated = pd.DataFrame(history, columns=REGIONS)
    dated = undated.set_index(pd.date_range("2026-01-05", periods=6, freq="W-MON"))
    assert read_history(dated).last_period.isoformat() == "2026-02-09"
    with Client(server) as c:
        plain = c.forecast(model=FORECAST_MODEL, history=undated)
        r = c.forecast(model=FORECAST_MODEL, history=dated)
    np.testing.assert_allclose(plain.quantiles, expected_forecast(history), rtol=1e-5)
    np.testing.assert_allclose(r.quantiles, expected_forecast(history), rtol=1e-5)
    assert (plain.first_forecast_period, r.first_forecast_period) == ("", "2026-02-16")
    assert write_hubverse(r, str(tmp_path / "h.csv")) == (tmp_path / "h.csv").read_text().count("\n") - 1
    with pytest.raises(ValueError, match="give a file path or a pandas DataFrame, got int"):
        read_history(42)  # type: ignore[arg-type]


def test_an_ingest_result_repr_is_a_summary() -> None:
    from healthai_client.results import IngestResult, RecordOutcome

    outcomes = tuple(RecordOutcome(i, "patient", "Patient", f"id-{i}", "accepted", ()) for i in range(5000))
    r = IngestResult(5000, 0, outcomes, ("accepted",) * 5000, "b1", 1, {"patient": 5000}, 0, ("f",))
    assert len(repr(r)) < 400 and "4995 more" in repr(r) and "accepted=5000" in repr(r)
