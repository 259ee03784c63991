"""``healthai-client`` against a real server: readable output, --json, and exit codes
(0 ok, 1 partial rejection, 2 usage, 3 server unavailable, 4 request refused)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from healthai_client import Client, HealthAIClientError
from healthai_client.cli import main
from tests.conftest import free_port

from .model_repo import (
    COHORT_HBA1C_FILL,
    COHORT_MODEL,
    COHORT_SPEC,
    FORECAST_MODEL,
    REGIONS,
    RISK_MODEL,
    expected_forecast,
    expected_probability,
)


def test_health(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["health", "--address", server]) == 0
    assert capsys.readouterr().out.strip() == "server: SERVING"


def test_unavailable_server_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    dead = f"127.0.0.1:{free_port()}"
    assert main(["health", "--address", dead, "--retries", "1", "--timeout", "5"]) == 3
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_ingest_fhir_ok_then_csv_with_a_bad_row_is_partial(server: str, fhir_bundle: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ingest", str(fhir_bundle), "--address", server, "--source", "cli-test"]) == 0
    out = capsys.readouterr().out
    assert f"{fhir_bundle}:" in out and " 0 rejected" in out
    assert main(["ingest", str(fhir_bundle), "--address", server, "--source", "cli-test"]) == 0
    again = capsys.readouterr().out  # a re-send: said as such, not as warnings
    assert "already stored from this source (not stored again)" in again and "ALREADY_STORED" not in again
    csv = tmp_path / "observations.csv"
    csv.write_text("observation_id,patient_id,loinc,value,unit\n"
                   "cli-o1,cli-p1,8480-6,120,mmHg\n"
                   "cli-o2,cli-p1,8480-6,999,mmHg\n")
    assert main(["ingest", str(csv), "--address", server, "--json"]) == 1
    result = json.loads(capsys.readouterr().out)[str(csv)]
    assert (result["accepted"], result["rejected"]) == (1, 1)
    assert result["outcomes"][1]["issues"][0]["field_path"].endswith("[1].value")


def test_ingest_csv_empty_cells_are_no_value_and_a_text_value_loses_its_row_only(
        server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conditions = tmp_path / "conditions.csv"  # empty code_system (default ICD-10-CM) and recorded
    conditions.write_text("condition_id,patient_id,code,code_system,onset,recorded\n"
                          "cli-e1,cli-p1,J10.1,,2025-12-01,\n")
    assert main(["ingest", str(conditions), "--address", server, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)[str(conditions)]
    assert (result["accepted"], result["rejected"]) == (1, 0)
    observations = tmp_path / "observations.csv"  # one lab feed value in words: that row only
    observations.write_text("observation_id,patient_id,loinc,value,unit\n"
                            "cli-v1,cli-p1,8480-6,120,mmHg\ncli-v2,cli-p1,8480-6,high,mmHg\n")
    assert main(["ingest", str(observations), "--address", server, "--json"]) == 1
    result = json.loads(capsys.readouterr().out)[str(observations)]
    assert (result["accepted"], result["rejected"]) == (1, 1)
    issue = result["outcomes"][1]["issues"][0]
    assert issue["code"] == "VALUE_NOT_NUMERIC" and "high" not in issue["message"]


def test_ingest_ndjson_names_a_malformed_line(server: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    export = tmp_path / "Condition.ndjson"
    export.write_text('{"resourceType": "Patient", "id": "nd1"}\n{"resourceType": "Patient", "id": \n\n')
    assert main(["ingest", str(export), "--address", server]) == 2
    err = capsys.readouterr().err
    assert "line 2: malformed JSON" in err and "nothing from this file was sent" in err


def test_ingest_stream_reports_rejections_per_file(server: str, fhir_bundle: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "observations.csv"
    csv.write_text("observation_id,patient_id,loinc,value,unit\ncli-s1,cli-p9,8480-6,-3,mmHg\n")
    assert main(["ingest", "--stream", str(fhir_bundle), str(csv), "--address", server]) == 1
    out = capsys.readouterr().out
    assert "2 files in one stream" in out and f"{csv}: 1 rejected" in out


def test_usage_errors_exit_2(server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["ingest", str(tmp_path / "missing.json"), "--address", server]) == 2
    assert "no such file" in capsys.readouterr().err
    table = tmp_path / "things.csv"
    table.write_text("a,b\n1,2\n")
    assert main(["ingest", str(table), "--address", server]) == 2
    assert "--kind" in capsys.readouterr().err
    assert main(["score", "--model", RISK_MODEL, "--set", "age", "--address", server]) == 2
    patients = tmp_path / "patients.csv"
    patients.write_text("age,bmi,systolic_bp,hba1c\n70,28,140,7.5\n71,n/a,150,8\n")
    assert main(["score", "--model", RISK_MODEL, "-i", str(patients), "--address", server]) == 2
    assert "patient 1, feature 'bmi': 'n/a' is not a number" in capsys.readouterr().err


def test_score_text_and_refusal(server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    patients = tmp_path / "patients.json"
    rows = [{"age": 70, "bmi": 28, "systolic_bp": 140, "hba1c": 7.5, "diagnoses": ["I21.0"]},
            {"age": 30, "bmi": 22, "systolic_bp": 110, "hba1c": 5.0}]
    patients.write_text(json.dumps(rows))
    assert main(["score", "-m", RISK_MODEL, "-i", str(patients), "--address", server, "--json"]) == 0
    got = [p["probability"] for p in json.loads(capsys.readouterr().out)["patients"]]
    np.testing.assert_allclose(got, expected_probability([[70, 28, 140, 7.5], [30, 22, 110, 5.0]]), rtol=1e-5)
    assert main(["score", "-m", RISK_MODEL, "--set", "age=70", "--set", "bmi=28", "--set", "systolic_bp=140",
                 "--set", "hba1c=7.5", "--address", server]) == 0
    assert f"model {RISK_MODEL} v1" in capsys.readouterr().out
    assert main(["score", "-m", RISK_MODEL, "--set", "age=70", "--address", server]) == 4
    assert "INVALID_ARGUMENT" in capsys.readouterr().err


def test_forecast_from_history_csv(server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    history = np.arange(12, dtype=np.float32).reshape(4, 3) + 5
    csv = tmp_path / "history.csv"
    csv.write_text(",".join(REGIONS) + "\n" + "\n".join(",".join(f"{v:g}" for v in row) for row in history))
    assert main(["forecast", "-m", FORECAST_MODEL, "--history", str(csv), "--address", server, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(got["quantiles"], expected_forecast(history), rtol=1e-5)
    assert main(["forecast", "-m", FORECAST_MODEL, "--history", str(csv), "--quantiles", "0.999",
                 "--address", server]) == 4


def test_console_script_runs(server: str) -> None:
    cmd = [sys.executable, "-m", "healthai_client.cli", "health", "--address", server, "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"service": "", "status": "SERVING"}


def test_score_a_cohort_table_with_its_spec(server: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """`score --table --spec`: rows of the training table (extra, target and string columns included)
    become the model's features as in training; a missing hba1c travels as NaN and the server fills it
    from the card's imputation block and sets its indicator; a model without one refuses it."""
    spec = tmp_path / "cohort.toml"
    spec.write_text(COHORT_SPEC)
    table = tmp_path / "new_patients.csv"
    table.write_text("site,age,sex,hba1c,outcome\nA,71,M,7.5,1\nB,40,F,,0\nC,55,F,5.1,\n")
    argv = ["score", "-m", COHORT_MODEL, "--table", str(table), "--spec", str(spec), "--address", server]
    assert main([*argv, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    x = np.array([[71, 1, 7.5, 0], [40, 0, COHORT_HBA1C_FILL, 1], [55, 0, 5.1, 0]])
    probabilities = [p["probability"] for p in got["patients"]]
    np.testing.assert_allclose(probabilities, expected_probability(x), rtol=1e-5)

    # --out: one CSV line per row in table order, the spec's patient id column kept; --batch 2 = 2 calls
    spec.write_text(COHORT_SPEC.replace("rows_are_patients = true", 'patient_id = "pid"'))
    table.write_text("pid,age,sex,hba1c\nP7,71,M,7.5\nP3,40,F,\nP9,55,F,5.1\n")
    out = tmp_path / "scores.csv"
    assert main([*argv, "--batch", "2", "--out", str(out), "--top", "1"]) == 0
    with out.open(newline="") as f:
        lines = list(csv.DictReader(f))
    assert [(r["row"], r["patient_id"]) for r in lines] == [("1", "P7"), ("2", "P3"), ("3", "P9")]
    np.testing.assert_allclose([float(r["probability"]) for r in lines], probabilities, atol=1e-6)  # 6 places
    assert all(r["top_features"].count(":") == 1 and r["risk_band"] for r in lines)

    with Client(server) as c, pytest.raises(HealthAIClientError, match=r"features\[0\].hba1c: non-finite"):
        c.score(RISK_MODEL, np.array([[40, 25, 120, np.nan]]))  # a card without imputation: refused

    table.write_text("age,sex,hba1c\n71,X,7.5\n")  # not a value of the binary column
    assert main(argv) == 2
    assert "column 'sex' has values outside its domain in 1 rows (first: 1)" in capsys.readouterr().err
    assert main(["score", "-m", COHORT_MODEL, "--table", str(table), "--address", server]) == 2
    assert "--table needs --spec" in capsys.readouterr().err


def test_ingest_prints_a_rejections_errors_not_its_warnings_and_says_what_was_revised(
        server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def bundle(value: float, when: str) -> Path:
        obs = {"resourceType": "Observation", "id": f"rv-{when[:4]}", "status": "final", "colour": "blue",
               "subject": {"reference": "Patient/rv-p"},
               "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
               "effectiveDateTime": when, "valueQuantity": {"value": value, "unit": "mm[Hg]",
                                                            "system": "http://unitsofmeasure.org",
                                                            "code": "mm[Hg]"}}
        path = tmp_path / f"b{value:g}{when[:4]}.json"
        path.write_text(json.dumps({"resourceType": "Bundle", "type": "collection",
                                    "entry": [{"resource": obs}]}))
        return path

    assert main(["ingest", str(bundle(120, "not-a-date")), "--address", server, "--source", "rv"]) == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  rejected #")]
    assert len(lines) == 1 and "UNKNOWN_ELEMENT" not in lines[0] and "effectiveDateTime" in lines[0]
    assert main(["ingest", str(bundle(120, "2025-11-03")), "--address", server, "--source", "rv"]) == 0
    capsys.readouterr()
    assert main(["ingest", str(bundle(125, "2025-11-03")), "--address", server, "--source", "rv"]) == 0
    assert "1 stored as a new version of a record already stored (replacing it)" in capsys.readouterr().out
