"""FHIR bundles for the store-cohort tests: one crafted patient whose encounter sequence fixes every
outcome case, and a generated cohort (seeded) whose 30-day readmission depends on Charlson
comorbidities, creatinine, age and length of stay (a planted signal the model can learn)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import numpy as np

ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
DATA_END = dt.datetime(2024, 12, 31, 10, tzinfo=dt.UTC)  # the crafted patient's last visit: the store's end
# (code, Charlson weight): CHF, diabetes, renal disease, lung cancer, COPD
COMORBIDITIES = (("I50.9", 1), ("E11.9", 1), ("N18.4", 2), ("C34.90", 2), ("J44.9", 1))


def _iso(t: dt.datetime) -> str:
    return t.isoformat()


class Bundle:
    def __init__(self, prefix: str) -> None:
        self.entries: list[dict[str, Any]] = []
        self.prefix = prefix  # bundles sent by one source need distinct resource ids
        self.n = 0

    def add(self, resource: dict[str, Any]) -> str:
        self.n += 1
        rid = f"{self.prefix}-{resource['resourceType'].lower()}-{self.n}"
        self.entries.append({"fullUrl": f"urn:uuid:{rid}", "resource": {**resource, "id": rid}})
        return f"urn:uuid:{rid}"

    def patient(self, gender: str, birth: dt.date) -> str:
        return self.add({"resourceType": "Patient", "gender": gender, "birthDate": birth.isoformat()})

    def encounter(self, pid: str, cls: str, start: dt.datetime, end: dt.datetime) -> str:
        return self.add({"resourceType": "Encounter", "status": "finished",
                         "class": {"system": ACT, "code": cls}, "subject": {"reference": pid},
                         "period": {"start": _iso(start), "end": _iso(end)}})

    def condition(self, pid: str, code: str, onset: dt.datetime) -> None:
        self.add({"resourceType": "Condition", "subject": {"reference": pid}, "onsetDateTime": _iso(onset),
                  "code": {"coding": [{"system": ICD10, "code": code}]}})

    def observation(self, pid: str, loinc: str, value: float, unit: str, when: dt.datetime) -> None:
        self.add({"resourceType": "Observation", "status": "final", "subject": {"reference": pid},
                  "code": {"coding": [{"system": LOINC, "code": loinc}]}, "effectiveDateTime": _iso(when),
                  "valueQuantity": {"value": round(float(value), 3), "unit": unit, "system": UCUM,
                                    "code": unit}})

    def json(self) -> bytes:
        return json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": self.entries}).encode()


def day(y: int, m: int, d: int, hour: int = 10) -> dt.datetime:
    return dt.datetime(y, m, d, hour, tzinfo=dt.UTC)


# The crafted patient: discharges and the admissions that follow them (exact days at 10:00 UTC).
CRAFTED_BIRTH = dt.date(1950, 3, 21)  # stored as 1950-03 → placed on 1950-03-15
CRAFTED_STAYS = (  # (admission, discharge); expected label of each stay as index
    (day(2023, 1, 1), day(2023, 1, 4)),  # next admission 29 days after discharge → 1
    (day(2023, 2, 2), day(2023, 2, 5)),  # next admission 31 days after discharge → 0
    (day(2023, 3, 8), day(2023, 3, 10)),  # next admission exactly 30 days after → 1
    (day(2023, 4, 9), day(2023, 4, 12)),  # next admission in December 2024 → 0
    (day(2024, 12, 10), day(2024, 12, 15)),  # window ends 2025-01-14 > data end → excluded
)
CRAFTED_LABELS = (1, 0, 1, 0)


def crafted_bundle() -> bytes:
    b = Bundle("crafted")
    pid = b.patient("male", CRAFTED_BIRTH)
    b.encounter(pid, "EMER", day(2022, 11, 1), day(2022, 11, 1, 14))
    for admit, discharge in CRAFTED_STAYS:
        b.encounter(pid, "IMP", admit, discharge)
    b.encounter(pid, "AMB", DATA_END - dt.timedelta(minutes=30), DATA_END)
    b.condition(pid, "I50.9", day(2022, 6, 1))  # CHF: 1 point from the first stay on
    b.condition(pid, "E11.9", day(2023, 3, 1))  # diabetes: 1 more point from the third stay on
    b.observation(pid, "8480-6", 150, "mm[Hg]", day(2022, 12, 1))
    b.observation(pid, "8480-6", 160, "mm[Hg]", day(2023, 1, 2))  # during stay 1: its latest
    b.observation(pid, "8480-6", 170, "mm[Hg]", day(2023, 1, 5))  # after discharge 1: stay 2's latest
    b.observation(pid, "2160-0", 132.6, "umol/L", day(2023, 1, 3))  # ingest stores 1.5 mg/dL
    b.observation(pid, "8867-4", 88, "/min", day(2023, 1, 3))
    return b.json()


def generated_bundle(n: int = 320, seed: int = 0) -> bytes:
    """``n`` patients, each with a first stay in 2022–2024 and up to 4 more; after each stay a
    readmission is drawn from a logistic model of Charlson points, creatinine, age, length of stay and
    the stays so far (else, sometimes, a later admission). Some labs are left unmeasured."""
    rng = np.random.default_rng(seed)
    b = Bundle(f"generated{seed}")
    for _ in range(n):
        age = rng.uniform(25, 90)
        birth = (day(2023, 1, 1) - dt.timedelta(days=age * 365.25)).date().replace(day=10)
        pid = b.patient(str(rng.choice(["female", "male"])), birth)
        points = 0
        for code, weight in COMORBIDITIES:
            if rng.random() < 0.22:
                b.condition(pid, code, day(2021, 6, 1))
                points += weight
        admit = day(2022, 1, 3) + dt.timedelta(days=int(rng.integers(0, 880)))
        los = int(rng.integers(1, 9))
        discharge = admit + dt.timedelta(days=los)
        b.encounter(pid, "IMP", admit, discharge)
        for _ in range(int(rng.poisson(1.5))):
            before = admit - dt.timedelta(days=int(rng.integers(5, 360)))
            b.encounter(pid, str(rng.choice(["AMB", "EMER"])), before, before + dt.timedelta(hours=1))
        creat = float(np.exp(rng.normal(0.0, 0.3))) + (1.2 if points >= 2 else 0.0)
        during = admit + dt.timedelta(hours=20)
        b.observation(pid, "8480-6", rng.normal(132, 16), "mm[Hg]", during)
        b.observation(pid, "8462-4", rng.normal(80, 10), "mm[Hg]", during)
        b.observation(pid, "39156-5", rng.normal(28, 5), "kg/m2", during)
        if rng.random() < 0.8:
            b.observation(pid, "2160-0", creat, "mg/dL", during)
            b.observation(pid, "2345-7", rng.normal(110, 25), "mg/dL", during)
        if rng.random() < 0.5:
            b.observation(pid, "8867-4", rng.normal(80, 12), "/min", during)
        stays = 0
        while stays < 4:  # each stay may be followed by a readmission (risk rises with prior stays)
            stays += 1
            logit = -2.2 + 0.55 * points + 1.0 * (creat - 1.0) + 0.02 * (age - 60) + 0.1 * (los - 4) \
                + 0.4 * (stays - 1)
            if rng.random() < 1 / (1 + np.exp(-logit)):
                admit = discharge + dt.timedelta(days=int(rng.integers(2, 29)))
            elif rng.random() < 0.3:
                admit = discharge + dt.timedelta(days=int(rng.integers(45, 200)))
            else:
                break
            los = int(rng.integers(1, 9))
            discharge = admit + dt.timedelta(days=los)
            if discharge >= DATA_END - dt.timedelta(days=1):  # the crafted visit stays the last
                break
            b.encounter(pid, "IMP", admit, discharge)
            b.observation(pid, "8480-6", rng.normal(132, 16), "mm[Hg]", admit + dt.timedelta(hours=20))
    return b.json()
