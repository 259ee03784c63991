"""Lab-confirmed influenza (``flu_lab``): positive influenza A/B tests from FHIR laboratory results,
normalized and stored for real, counted per region and day; ``ili`` never counts them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from healthai.normalize.fhir import normalize_fhir
from healthai.store import ParquetStore
from healthai.surveillance import SurveillanceCounts

from .conftest import context

SNOMED, LOINC = "http://snomed.info/sct", "http://loinc.org"
DETECTED, NOT_DETECTED = (SNOMED, "260373001"), (SNOMED, "260415000")


def patient(pid: str, state: str) -> dict:
    return {"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "1980-02-03",
            "address": [{"use": "home", "state": state, "country": "US"}]}


def lab_result(rid: str, pid: str, loinc: str, result: tuple[str, str], when: str,
                status: str = "final") -> dict:
    return {"resourceType": "Observation", "id": rid, "status": status,
            "category": [{"coding": [{"code": "laboratory", "system":
                                      "http://terminology.hl7.org/CodeSystem/observation-category"}]}],
            "code": {"coding": [{"system": LOINC, "code": loinc}]},
            "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": when,
            "valueCodeableConcept": {"coding": [{"system": result[0], "code": result[1]}]}}


def store_payloads(store: ParquetStore, *payloads: list[dict]) -> None:
    ctx = context()
    for payload in payloads:
        out = normalize_fhir(payload, ctx=ctx, source="lab")
        assert all(o.status != "REJECTED" for o in out.outcomes), [o.issues for o in out.outcomes]
        store.commit({k: t for k, t in out.tables.items() if t.num_rows})


def test_positive_influenza_tests_are_counted_per_region_and_day(tmp_path: Path) -> None:
    store = ParquetStore(str(tmp_path)).open()
    store_payloads(store, [
        patient("p1", "MA"), patient("p2", "MA"), patient("p3", "NY"),
        lab_result("o1", "p1", "92142-9", DETECTED, "2026-01-05T09:00:00Z"),        # flu A RNA: a case
        lab_result("o2", "p1", "92141-1", DETECTED, "2026-01-05T10:00:00Z"),        # same patient, day
        lab_result("o3", "p2", "80383-3", (LOINC, "LA6576-8"), "2026-01-06T09:00:00Z"),  # flu B Ag: Positive
        lab_result("o4", "p2", "92142-9", NOT_DETECTED, "2026-01-07T09:00:00Z"),    # negative
        lab_result("o5", "p3", "92142-9", DETECTED, "2026-01-07T09:00:00Z", status="preliminary"),
        lab_result("o6", "p3", "94500-6", DETECTED, "2026-01-07T09:00:00Z"),        # SARS-CoV-2, not flu
        lab_result("o7", "p3", "76078-5", DETECTED, "2026-01-08T09:00:00-05:00"),   # nasopharynx NAA
    ])
    counts = SurveillanceCounts(store)
    df = counts.counts("flu_lab", "D")
    assert list(df.columns) == ["US-MA", "US-NY"]
    assert {str(d.date()): row for d, row in df.to_dict("index").items() if any(row.values())} == {
        "2026-01-05": {"US-MA": 1, "US-NY": 0},
        "2026-01-06": {"US-MA": 1, "US-NY": 0},
        "2026-01-08": {"US-MA": 0, "US-NY": 1},
    }
    assert counts.counts("ili", "D").empty  # a positive test is not a diagnosis of ILI

    # a laboratory's own feed: results alone, their patients already stored
    store_payloads(store, [lab_result("o8", "p3", "92141-1", DETECTED, "2026-01-12T09:00:00Z")])
    weekly = counts.counts("flu_lab", "W")
    assert weekly.loc[pd.Timestamp("2026-01-12"), "US-NY"] == 1 and counts.uncounted("flu_lab") == 0


def test_a_syndrome_without_diagnosis_codes_reads_a_store_with_diagnoses(tmp_path: Path) -> None:
    """flu_lab has no diagnosis codes: its empty code set once met a store's stored conditions as a
    null-typed array, and the count stopped with an Arrow type error."""
    store = ParquetStore(str(tmp_path)).open()
    condition = {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
                 "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "J11.1"},
                                     {"system": SNOMED, "code": "6142004"}]},
                 "onsetDateTime": "2026-01-05T09:00:00Z"}
    store_payloads(store, [patient("p1", "MA"), condition,
                           lab_result("o1", "p1", "92142-9", DETECTED, "2026-01-06T09:00:00Z")])
    counts = SurveillanceCounts(store)
    assert counts.counts("flu_lab", "W").loc[pd.Timestamp("2026-01-05"), "US-MA"] == 1
    assert counts.counts("ili", "W").loc[pd.Timestamp("2026-01-05"), "US-MA"] == 1


def test_covid_and_rsv_by_diagnosis_and_by_test_as_synthea_codes_them(tmp_path: Path) -> None:
    """Synthea's COVID-19 module writes SNOMED CT 840539006 and a SARS-CoV-2 RNA panel (94531-1) with a
    coded result; other senders U07.1 or an RSV bronchiolitis code. Each syndrome counts its own."""
    store = ParquetStore(str(tmp_path)).open()

    def condition(cid: str, pid: str, system: str, code: str, day: str) -> dict:
        return {"resourceType": "Condition", "id": cid, "subject": {"reference": f"Patient/{pid}"},
                "code": {"coding": [{"system": system, "code": code}]}, "onsetDateTime": f"{day}T09:00:00Z"}

    icd10 = "http://hl7.org/fhir/sid/icd-10-cm"
    store_payloads(store, [
        patient("p1", "MA"), patient("p2", "MA"), patient("p3", "NY"), patient("p4", "NY"),
        condition("c1", "p1", SNOMED, "840539006", "2026-01-05"),          # COVID-19 (Synthea)
        condition("c2", "p2", icd10, "U07.1", "2026-01-06"),               # COVID-19
        condition("c3", "p3", SNOMED, "840544004", "2026-01-06"),          # suspected COVID-19: no case
        condition("c4", "p4", icd10, "J21.0", "2026-01-07"),               # RSV bronchiolitis
        lab_result("o1", "p1", "94531-1", DETECTED, "2026-01-05T08:00:00Z"),   # SARS-CoV-2 RNA panel
        lab_result("o2", "p3", "94558-4", NOT_DETECTED, "2026-01-06T08:00:00Z"),  # antigen, negative
        lab_result("o3", "p4", "92131-2", DETECTED, "2026-01-07T08:00:00Z"),   # RSV RNA
    ])
    counts = SurveillanceCounts(store)
    week = pd.Timestamp("2026-01-05")

    def weekly(syndrome: str) -> dict:
        frame = counts.counts(syndrome, "W")
        return {r: int(frame.loc[week, r]) for r in frame.columns}

    assert weekly("covid") == {"US-MA": 2}
    assert weekly("covid_lab") == {"US-MA": 1}
    assert weekly("rsv") == {"US-NY": 1}
    assert weekly("rsv_lab") == {"US-NY": 1}
    assert counts.counts("ili", "W").empty
