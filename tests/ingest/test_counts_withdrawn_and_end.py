"""What the surveillance counts hold: a diagnosis withdrawn by its verification status is not a case;
with no end they run to the last case (a store of history is not padded with zeros up to today), and
an end lists the periods after it as zeros (real FHIR normalized and stored in a real Parquet store;
the CLI on top)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from healthai.cli import main
from healthai.normalize.fhir import normalize_fhir
from healthai.store import ParquetStore
from healthai.surveillance import SurveillanceCounts

from .conftest import context

VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"


def bundle(i: int, day: str, status: str | None) -> dict:
    patient = {"resourceType": "Patient", "id": f"p{i}", "gender": "male",
               "address": [{"use": "home", "state": "VT", "country": "US"}]}
    condition = {"resourceType": "Condition", "id": f"c{i}", "subject": {"reference": f"Patient/p{i}"},
                 "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "J10.1"}]},
                 "onsetDateTime": day}
    if status is not None:
        condition["verificationStatus"] = {"coding": [{"system": VERIFICATION, "code": status}]}
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": patient},
                                                                     {"resource": condition}]}


CASES = [("2025-11-24", "confirmed"), ("2025-11-25", "refuted"), ("2025-11-26", "entered-in-error"),
         ("2025-11-27", "provisional"), ("2025-11-28", None), ("2025-11-28", "differential")]


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store")
    store = ParquetStore(str(root)).open()
    for i, (day, status) in enumerate(CASES):
        out = normalize_fhir(bundle(i, day, status), ctx=context(), source="s")
        store.commit({k: t for k, t in out.tables.items() if t.num_rows})
    store.close()
    return root


def test_refuted_and_entered_in_error_diagnoses_are_not_cases(store_dir: Path) -> None:
    counts = SurveillanceCounts(ParquetStore(str(store_dir)).open()).counts("ili", "D")
    assert counts["US-VT"].to_dict() == {pd.Timestamp("2025-11-24"): 1, pd.Timestamp("2025-11-25"): 0,
                                         pd.Timestamp("2025-11-26"): 0, pd.Timestamp("2025-11-27"): 1,
                                         pd.Timestamp("2025-11-28"): 2}


def test_the_default_end_is_the_last_case_and_an_end_lists_the_zeros_after_it(store_dir: Path) -> None:
    counts = SurveillanceCounts(ParquetStore(str(store_dir)).open())
    today = dt.date(2025, 12, 10)  # a Wednesday: the week of Dec 8 is under way
    assert counts.counts("ili", "W", completed_by=today).index[-1] == pd.Timestamp("2025-11-24")
    weekly = counts.counts("ili", "W", end="2025-12-07", completed_by=today)
    assert weekly["US-VT"].tolist() == [4, 0]
    daily = counts.counts("ili", "D", end="2025-12-09", completed_by=today)
    assert daily.index[-1] == pd.Timestamp("2025-12-09") and daily.loc["2025-11-29":, "US-VT"].sum() == 0
    on_sunday = counts.counts("ili", "W", completed_by=dt.date(2025, 11, 30))
    assert on_sunday.empty  # the only week had not ended


def test_healthai_counts_lists_trailing_zeros_up_to_its_end(store_dir: Path, capsys) -> None:
    assert main(["counts", "--store", str(store_dir), "--step", "D", "--syndrome", "ili",
                 "--end", "2025-12-02"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].split(",")[:3] == ["US-VT", "2025-12-02", "0"] and len(out) == 1 + 9
    assert main(["counts", "--store", str(store_dir), "--step", "W", "--syndrome", "ili"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[-1].startswith("US-VT,2025-11-24,")  # the table ends with the last case
    assert "no case after the period of 2025-11-24; the periods since then that have ended are not " \
           "listed: --end " in err
    week_end = dt.date.fromisoformat(err.split("--end ")[1].split()[0])
    assert week_end.weekday() == 6 and week_end < dt.datetime.now(dt.UTC).date()  # a Sunday that ended


def test_a_store_that_cannot_be_opened_is_one_line(capsys) -> None:
    """An object store nobody answers at (the discard port): exit 2, the URI without its query."""
    uri = "s3://nobucket/x?region=us-east-1&endpoint_override=127.0.0.1:9&scheme=http"
    assert main(["counts", "--store", uri, "--syndrome", "ili"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("healthai counts: store_uri 's3://nobucket/x': cannot open the store")
