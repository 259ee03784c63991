"""The Python SDK against a real server: typed results with the right numbers, errors with the
right status, retries only for UNAVAILABLE, round-robin over addresses, deadlines."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import numpy as np
import pyarrow as pa
import pytest

from healthai_client import Client, HealthAIClientError, RetryPolicy, read_history
from healthai_client.requests import score_request
from tests.conftest import free_port

from .model_repo import (
    FORECAST_MODEL,
    QUANTILES,
    REGIONS,
    RISK_FEATURES,
    RISK_MODEL,
    blood_pressures,
    expected_forecast,
    expected_probability,
)


def test_health_and_echo(server: str) -> None:
    with Client(server) as c:
        assert c.health() == "SERVING"
        assert c.health("healthai.v1.Risk") == "SERVING"
        assert c.echo(b"\x00ping") == b"\x00ping"


def test_ingest_fhir_accounts_for_every_entry_and_is_idempotent(server: str, fhir_bundle: Path) -> None:
    entries = len(json.loads(fhir_bundle.read_bytes())["entry"])
    with Client(server, source="sdk-test/fhir") as c:
        first = c.ingest_fhir(fhir_bundle)
        again = c.ingest_fhir(fhir_bundle.read_bytes())
    assert len(first.outcomes) == len(first.statuses) == entries == first.accepted + first.rejected
    assert first.accepted > 0 and first.batch_id and first.sequence > 0
    assert sum(first.stored.values()) > 0
    assert {o.status for o in first.outcomes} <= {"accepted", "accepted_with_warnings", "rejected"}
    assert again.stored == {} and again.duplicates > 0  # same source + ids: nothing stored twice


def test_ingest_flat_partial_rejection_names_the_field(server: str) -> None:
    with Client(server, source="sdk-test/flat") as c:
        r = c.ingest_flat(
            patients=[{"patient_id": "sdk-p1", "sex": "female", "birth_date": "1950-02-03",
                       "region": "US-MA"}],
            observations=[{"observation_id": "sdk-o1", "patient_id": "sdk-p1", "loinc": "8480-6",
                           "value": 900.0, "unit": "mm[Hg]"}])
    assert (r.accepted, r.rejected, r.partial) == (1, 1, True)
    [bad] = r.rejected_outcomes()
    assert bad.kind == "observation" and bad.issues[0].field_path.endswith("observations[0].value")
    assert r.stored == {"patient": 1}


def test_ingest_issues_only_keeps_every_status(server: str) -> None:
    patients = [{"patient_id": f"sdk-i{i}", "sex": "female", "region": "US-MA"} for i in range(5)]
    observations = [{"observation_id": "sdk-io", "patient_id": "sdk-i0", "loinc": "8480-6", "value": -5.0,
                     "unit": "mm[Hg]"}]
    with Client(server, source="sdk-test/issues") as c:
        r = c.ingest_flat(patients=patients, observations=observations, outcome_detail="issues")
    assert (r.accepted, r.rejected) == (5, 1)
    assert len(r.statuses) == 6 and r.statuses.count("rejected") == 1
    assert [o.kind for o in r.outcomes] == ["observation"]  # only the record with an issue
    with Client(server) as c, pytest.raises(ValueError, match="outcome_detail"):
        c.ingest_flat(patients=patients, outcome_detail="some")


def test_ingest_arrow_table(server: str) -> None:
    table = pa.table({"patient_id": ["sdk-a1", "sdk-a2"], "sex": ["male", "female"],
                      "birth_date": ["1961-05", "1977-11-02"], "region": ["US-NY", "US-CA"]})
    with Client(server, source="sdk-test/arrow") as c:
        r = c.ingest_arrow(table, "patient")
    assert (r.accepted, r.rejected, r.stored) == (2, 0, {"patient": 2})


def test_ingest_stream_mixes_payloads_in_one_batch(server: str, fhir_bundle: Path) -> None:
    table = pa.table({"patient_id": ["sdk-s1"], "sex": ["male"], "region": ["US-NY"]})
    flat = {"observations": [{"observation_id": "sdk-so", "patient_id": "sdk-s1", "loinc": "8480-6",
                              "value": 1000.0, "unit": "mm[Hg]"}]}
    with Client(server, source="sdk-test/stream") as c:
        r = c.ingest_stream([fhir_bundle, (table, "patient"), flat])
    entries = len(json.loads(fhir_bundle.read_bytes())["entry"])
    assert r.accepted + r.rejected == entries + 2 == len(r.statuses)
    assert {o.request_index for o in r.outcomes} == {0, 1, 2}
    [bad] = [o for o in r.outcomes if o.request_index == 2]
    assert bad.status == "rejected" and bad.issues[0].code
    with Client(server) as c, pytest.raises(ValueError, match="stream item"):
        c.ingest_stream([42])


def test_score_matches_the_model(server: str) -> None:
    x = np.array([[70, 28, 140, 7.5], [30, 22, 110, 5.0], [85, 35, 170, 10.0]], np.float32)
    rows = [dict(zip(RISK_FEATURES[::-1], row[::-1], strict=True)) for row in x]  # any column order
    with Client(server) as c:
        r = c.score(RISK_MODEL, rows, top_features=2, diagnoses=[["I21.0", "E11.9"], [], ["J45.909"]])
    np.testing.assert_allclose(r.probabilities, expected_probability(x), rtol=1e-5)
    assert (r.model_name, r.model_version) == (RISK_MODEL, 1)
    assert [p.risk_band for p in r.patients] == ["high", "medium", "high"]
    assert r.patients[0].charlson_index is not None and r.patients[1].charlson_index is None
    assert all(len(p.top_features) == 2 and p.top_features[0][0] in RISK_FEATURES for p in r.patients)


def test_score_large_batch_travels_raw_with_the_same_answers(server: str) -> None:
    x = np.random.default_rng(3).uniform([20, 18, 90, 4], [90, 40, 180, 12], size=(500, 4)).astype(np.float32)
    assert score_request(RISK_MODEL, x).features_raw and not score_request(RISK_MODEL, x[:2]).features_raw
    with Client(server) as c:
        raw = c.score(RISK_MODEL, x, top_features=0)
        packed = c.score(RISK_MODEL, x[:40], top_features=0)
    np.testing.assert_allclose(raw.probabilities, expected_probability(x), rtol=1e-5)
    np.testing.assert_array_equal(raw.probabilities[:40], packed.probabilities)
    assert all(p.top_features == () for p in raw.patients)


def test_forecast_matches_the_model(server: str) -> None:
    history = np.arange(18, dtype=np.float32).reshape(6, 3) * 10
    with Client(server) as c:
        r = c.forecast(model=FORECAST_MODEL, history={rid: history[:, j] for j, rid in enumerate(REGIONS)})
    assert r.region_ids == tuple(REGIONS) and r.quantile_levels == tuple(QUANTILES)
    np.testing.assert_allclose(r.quantiles, expected_forecast(history), rtol=1e-5)
    point, q = r.at("US-NY", 2)
    assert point == pytest.approx(expected_forecast(history)[1, 1, 1], rel=1e-5)
    assert list(q) == list(QUANTILES)


def test_forecast_from_a_daily_wide_file_is_dated(server: str, tmp_path: Path) -> None:
    """``read_history`` gives the trainer's wide layout; its last period dates the result, and a
    daily file for this weekly model is refused after the answer (the server knows the step)."""
    history = np.arange(18, dtype=np.float32).reshape(6, 3) * 10
    path = tmp_path / "weekly.csv"
    periods = ["2026-W01", "2026-W02", "2026-W03", "2026-W04", "2026-W05", "2026-W06"]  # ISO weeks
    rows = [f"{p}," + ",".join(f"{v:g}" for v in row) for p, row in zip(periods, history, strict=True)]
    path.write_text("\n".join(["period," + ",".join(REGIONS), *rows]) + "\n")
    sent = read_history(path)
    assert (sent.region_ids, sent.last_period.isoformat(), sent.step) == (tuple(REGIONS), "2026-02-02", "W")
    with Client(server) as c:
        r = c.forecast(model=FORECAST_MODEL, history=sent)
        np.testing.assert_allclose(r.quantiles, expected_forecast(history), rtol=1e-5)
        assert (r.first_forecast_period, r.step) == ("2026-02-09", "W")
        np.testing.assert_array_equal(r.history, history)  # kept for plots
        daily = tmp_path / "daily.csv"
        daily.write_text(path.read_text().replace("2026-W0", "2026-02-0"))
        with pytest.raises(ValueError, match="the history is daily but model forecast_tiny v1"):
            c.forecast(model=FORECAST_MODEL, history=read_history(daily))


def test_a_history_with_gaps_is_refused_or_filled_in_time(server: str, tmp_path: Path, capsys) -> None:
    """Missing cells of a dated history are refused, as train forecast refuses them; missing="interpolate"
    fills them from the region's own counts and the CLI says how many it filled."""
    from healthai_client.cli import main as client_main

    history = np.arange(18, dtype=np.float64).reshape(6, 3) * 10
    gaps = ((2, 0), (5, 2))
    rows = [f"2026-W0{t + 1}," + ",".join("" if (t, j) in gaps else f"{v:g}" for j, v in enumerate(row))
            for t, row in enumerate(history)]
    path = tmp_path / "gaps.csv"
    path.write_text("\n".join(["period," + ",".join(REGIONS), *rows]) + "\n")
    with pytest.raises(ValueError, match="--missing interpolate"):
        read_history(path)
    sent = read_history(path, missing="interpolate")
    filled = history.copy()
    filled[5, 2] = history[4, 2]  # the last period carries the region's last count
    np.testing.assert_allclose(sent.counts, filled)  # the middle gap lies on the line it interrupts
    assert (sent.filled, sent.filled_last) == (2, (REGIONS[2],))
    with Client(server) as c:
        r = c.forecast(model=FORECAST_MODEL, history=sent)
    np.testing.assert_allclose(r.quantiles, expected_forecast(filled.astype(np.float32)), rtol=1e-5)
    assert client_main(["forecast", "-m", FORECAST_MODEL, "--history", str(path), "--missing", "interpolate",
                        "--json", "--address", server]) == 0
    assert f"filled 2 missing cells by interpolation in time; last period filled for {REGIONS[2]}" in (
        capsys.readouterr().err)
    undated = tmp_path / "undated.json"
    undated.write_text(json.dumps({r: [1.0, 2.0] for r in REGIONS}))
    with pytest.raises(ValueError, match="needs a dated history"):
        read_history(undated, missing="interpolate")


def test_cli_sends_one_target_of_hubverse_target_data(server: str, tmp_path: Path, capsys) -> None:
    from healthai_client.cli import main as client_main

    history = np.arange(18, dtype=np.float64).reshape(6, 3) * 10
    rows = ["location,target,target_end_date,observation"]
    for t, row in enumerate(history):
        day = str(np.datetime64("2026-01-03") + np.timedelta64(7 * t, "D"))
        for region, v in zip(REGIONS, row, strict=True):
            rows += [f"{region},inc ili,{day},{v:g}", f"{region},ili rate,{day},{v / 1000:g}"]
    path = tmp_path / "target-data.csv"
    path.write_text("\n".join(rows) + "\n")
    argv = ["forecast", "-m", FORECAST_MODEL, "--history", str(path), "--json", "--address", server]
    assert client_main(argv) == 2
    assert "--history-target NAME" in capsys.readouterr().err
    assert client_main([*argv, "--history-target", "inc ili"]) == 0
    got = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(got["quantiles"], expected_forecast(history.astype(np.float32)), rtol=1e-5)


def test_a_national_total_beside_the_regions_is_left_out_by_name(server: str, tmp_path: Path, capsys) -> None:
    """FluSight-style target data holds a ``US`` row beside the states: the server refuses a region its
    model does not know, and ``--exclude-regions US`` leaves it out, as train forecast does."""
    from healthai_client.cli import main as client_main

    history = np.arange(18, dtype=np.float64).reshape(6, 3) * 10
    rows = ["location,target_end_date,observation"]
    for t, row in enumerate(history):
        day = str(np.datetime64("2026-01-03") + np.timedelta64(7 * t, "D"))
        rows += [f"{region},{day},{v:g}" for region, v in zip(REGIONS, row, strict=True)]
        rows.append(f"US,{day},{row.sum():g}")
    path = tmp_path / "target-data.csv"
    path.write_text("\n".join(rows) + "\n")
    argv = ["forecast", "-m", FORECAST_MODEL, "--history", str(path), "--json", "--address", server]
    assert client_main(argv) != 0
    assert "history.region_ids" in capsys.readouterr().err
    assert client_main([*argv, "--exclude-regions", "US"]) == 0
    got = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(got["quantiles"], expected_forecast(history.astype(np.float32)), rtol=1e-5)
    assert sorted(read_history(path, exclude=("US",)).region_ids) == sorted(REGIONS)
    with pytest.raises(ValueError, match="--exclude-regions names"):
        read_history(path, exclude=("XX",))
    undated = tmp_path / "undated.json"
    undated.write_text(json.dumps({r: [1.0, 2.0] for r in REGIONS}))
    with pytest.raises(ValueError, match="exclude leaves regions out of a dated history"):
        read_history(undated, exclude=("US",))


def test_invalid_argument_is_not_retried(server: str) -> None:
    with Client(server, retry=RetryPolicy(max_attempts=5)) as c, \
            pytest.raises(HealthAIClientError, match="features") as info:
        c.score(RISK_MODEL, [[1.0, 2.0, 3.0]])  # 3 values for a 4-feature model
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and info.value.attempts == 1


def test_not_found_names_the_model(server: str) -> None:
    with Client(server) as c, pytest.raises(HealthAIClientError, match="no_such_model") as info:
        c.score("no_such_model", [[1.0]])
    assert info.value.code == grpc.StatusCode.NOT_FOUND and not info.value.retryable


def test_deadline_exceeded_is_final(server: str) -> None:
    with Client(server, timeout=0.0005, retry=RetryPolicy(max_attempts=5)) as c, \
            pytest.raises(HealthAIClientError) as info:
        c.ingest_flat(patients=[{"patient_id": f"sdk-d{i}"} for i in range(2000)])
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED and info.value.attempts == 1


def test_unavailable_is_retried_with_backoff_then_raised() -> None:
    dead = f"127.0.0.1:{free_port()}"
    policy = RetryPolicy(max_attempts=4, initial_backoff_s=0.05, max_backoff_s=0.05, multiplier=1)
    with Client(dead, retry=policy, timeout=10, seed=1) as c:
        t0 = time.monotonic()
        with pytest.raises(HealthAIClientError, match="UNAVAILABLE") as info:
            c.health()
    assert info.value.code == grpc.StatusCode.UNAVAILABLE and info.value.attempts == 4
    assert time.monotonic() - t0 < 5


def test_backoff_grows_exponentially_with_full_jitter() -> None:
    import random

    policy = RetryPolicy(initial_backoff_s=0.1, max_backoff_s=1.0, multiplier=2.0)
    rng = random.Random(0)
    for retry, cap in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (9, 1.0)]:
        samples = [policy.backoff_s(retry, rng) for _ in range(400)]
        assert min(samples) >= 0 and max(samples) <= cap
        assert max(samples) > 0.9 * cap  # jitter spans the whole range
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


def test_a_header_of_numeric_region_ids_is_a_header_not_a_row_of_counts(tmp_path: Path) -> None:
    """FIPS codes are numbers too: a first row with a leading zero, or naming the model's regions, is
    the header (a headerless matrix stays one when it names none)."""
    zeros = tmp_path / "fips.csv"
    zeros.write_text("01001,01003\n5,6\n7,8\n")
    got = read_history(zeros)
    assert got.region_ids == ("01001", "01003") and got.counts.tolist() == [[5, 6], [7, 8]]
    plain = tmp_path / "plain.csv"
    plain.write_text("25017,25025\n5,6\n7,8\n")
    assert read_history(plain, known_regions=["25017", "25025", "25027"]).counts.tolist() == [[5, 6], [7, 8]]
    matrix = read_history(plain)  # names no region of the model: the published matrices' layout
    assert matrix.counts.tolist() == [[25017, 25025], [5, 6], [7, 8]]
    with pytest.raises(ValueError, match="this history names its regions"):
        read_history(zeros, region_ids=("a", "b"))


def test_a_large_arrow_table_travels_in_parts_numbered_as_one(server: str, monkeypatch) -> None:
    """Over ARROW_PART_BYTES a table goes as several parts of one stream: one batch id, and each
    outcome (and its field path) names its row of the whole table."""
    from healthai_client import requests as req

    monkeypatch.setattr(req, "ARROW_PART_BYTES", 4096)
    n = 400
    table = blood_pressures(n, 333, "bp", "p-parts")
    assert len(req.arrow_parts(table)) > 3
    with Client(server, source="sdk-parts") as c:
        r = c.ingest_arrow(table, "observation")
    assert (r.accepted, r.rejected, r.stored.get("observation")) == (n - 1, 1, n - 1)
    (bad,) = r.rejected_outcomes()
    assert bad.index == 333 and bad.request_index == 0
    assert bad.issues[0].field_path == "arrow.rows[333].value"
    assert [o.index for o in r.outcomes] == list(range(n))
