"""Censored lab values in a store cohort's features: a result stored as its bound with a
``value_comparator`` (``>15`` → 15, ``>``) is used as the bound, as the Risk service's
``patient_features`` does, and flagged per index row (``<name>_censored``) for the cohort report, never
used silently. The store is filled through the ingest core (FHIR → normalize → Parquet commit)."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pandas as pd
import pytest

from healthai.ingest.service import IngestCore
from healthai.normalize.context import NormalizeContext
from healthai.store import ParquetStore
from healthai.v1 import ingest_pb2
from healthai_training.risk.store_cohort import read_store
from healthai_training.risk.store_features import (
    CENSORED_SUFFIX,
    MEASUREMENTS,
    censored_counts,
    index_features,
)
from tests.training.store_cohort_fhir import LOINC, UCUM, Bundle, day

KEY = b"test-key-not-a-secret-0123456789"


def censored(b: Bundle, pid: str, loinc: str, value: float, unit: str, when: dt.datetime,
             comparator: str | None) -> None:
    q = {"value": value, "unit": unit, "system": UCUM, "code": unit}
    if comparator is not None:
        q["comparator"] = comparator
    b.add({"resourceType": "Observation", "status": "final", "subject": {"reference": pid},
           "code": {"coding": [{"system": LOINC, "code": loinc}]}, "effectiveDateTime": when.isoformat(),
           "valueQuantity": q})


def bundle() -> bytes:
    b = Bundle("censored")
    a = b.patient("male", dt.date(1950, 3, 21))
    b.encounter(a, "IMP", day(2023, 1, 1), day(2023, 1, 4))
    b.encounter(a, "IMP", day(2023, 3, 1), day(2023, 3, 5))
    censored(b, a, "2160-0", 15.0, "mg/dL", day(2023, 1, 2), ">")  # stay 1's latest creatinine: a bound
    censored(b, a, "2345-7", 100.0, "mg/dL", day(2023, 1, 2), None)
    censored(b, a, "2160-0", 1.2, "mg/dL", day(2023, 3, 2), None)  # stay 2's latest: exact
    p = b.patient("female", dt.date(1960, 5, 2))
    b.encounter(p, "IMP", day(2023, 6, 1), day(2023, 6, 3))
    censored(b, p, "29463-7", 250.0, "kg", day(2023, 6, 2), ">=")  # scale limit: bmi from weight/height
    censored(b, p, "8302-2", 170.0, "cm", day(2023, 6, 2), None)
    return json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": b.entries}).encode()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    uri = str(tmp_path_factory.mktemp("store"))
    ctx = NormalizeContext.create(key=KEY, reference_date=dt.date(2026, 11, 1))
    parquet = ParquetStore(uri).open()
    core = IngestCore(ctx, parquet, max_records=1000)
    batch = core.normalize(ingest_pb2.IngestRequest(source="lab", fhir=ingest_pb2.FhirPayload(json=bundle())))
    assert not [o for o in batch.outcomes if o.status == "REJECTED"]
    core.commit(batch.tables, uuid.uuid4().hex)
    parquet.close()
    return uri


def features(store: str, with_comparator: bool) -> pd.DataFrame:
    frames = read_store(store)  # reads value_comparator
    if not with_comparator:
        frames["observation"] = frames["observation"].drop(columns="value_comparator")
    raw = frames["encounter"]
    enc = pd.DataFrame({"patient_id": raw["patient_id"], "encounter_id": raw["resource_id"],
                        "class_code": raw["class_code"], "start": pd.to_datetime(raw["start"], utc=True),
                        "end": pd.to_datetime(raw["end"], utc=True)})
    index = enc.assign(at=enc["end"]).sort_values("at").reset_index(drop=True)
    return index_features(index, patients=frames["patient"], encounters=enc,
                          conditions=frames["condition"], observations=frames["observation"])


def test_a_censored_latest_value_is_its_bound_and_is_flagged(store: str) -> None:
    out = features(store, with_comparator=True)
    creatinine = out["creatinine_mg_dl"]
    assert creatinine.iloc[:2].tolist() == [15.0, 1.2] and pd.isna(creatinine.iloc[2])
    assert out["creatinine_mg_dl" + CENSORED_SUFFIX].tolist() == [True, False, False]
    assert out["glucose_mg_dl" + CENSORED_SUFFIX].tolist() == [False, False, False]
    # bmi computed from a censored weight (>= 250 kg) is flagged too
    assert out["bmi"].iloc[2] == pytest.approx(250.0 / 1.7**2)
    assert out["bmi" + CENSORED_SUFFIX].tolist() == [False, False, True]
    counts = censored_counts(out)
    assert set(counts) == set(MEASUREMENTS)
    assert {k: v for k, v in counts.items() if v} == {"creatinine_mg_dl": 1, "bmi": 1}


def test_frames_without_value_comparator_have_no_censored_values(store: str) -> None:
    out = features(store, with_comparator=False)  # a store written before value_comparator was kept
    assert out["creatinine_mg_dl"].iloc[0] == 15.0
    assert not any(censored_counts(out).values())
