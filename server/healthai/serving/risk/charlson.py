"""Charlson comorbidity index per patient from request codes, through the shared feature code
(``healthai.normalize.codes`` validates each code, ``healthai.normalize.features.charlson_features``
groups and weighs them) — the same functions training uses, never reimplemented here."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence

from healthai.errors import InvalidInput
from healthai.normalize import codes, features
from healthai.v1 import risk_pb2

SYSTEMS = {"": "icd10", "icd10": "icd10", "icd10cm": "icd10", "icd-10-cm": "icd10", "icd9": "icd9",
           "icd9cm": "icd9", "icd-9-cm": "icd9"}


def warm() -> None:
    """Loads the ICD-10-CM code set (~0.2 s) so the first request does not pay for it."""
    codes.icd10_codes()


def patient_index(diagnosis: risk_pb2.DiagnosisCodes, field: str) -> int | None:
    """Charlson index of one patient; None (unavailable) when no codes or any code cannot be mapped."""
    system = SYSTEMS.get(diagnosis.system.strip().lower()) or codes.SYSTEM_NAMES.get(diagnosis.system)
    if system in (codes.ICD10CM, codes.ICD9CM):
        system = "icd10" if system == codes.ICD10CM else "icd9"
    if system is None:
        raise InvalidInput(f"{field}.system: {diagnosis.system!r} is not icd10 or icd9",
                           field=f"{field}.system")
    if not diagnosis.codes:
        return None
    rows = []  # normalized condition rows, as the feature code takes them; invalid codes stay unmapped
    for code in diagnosis.codes:
        if system == "icd10":
            rows.append({"icd10_code": codes.canonical_icd10(code, codes.icd10_codes())})
        else:
            rows.append({"icd9_code": codes.canonical_icd9(code)})
    out = features.charlson_features(rows, at=dt.datetime.now(dt.UTC))
    value = out["charlson_index"]
    return None if not out["charlson_available"] or math.isnan(value) else int(value)


def charlson_indices(diagnoses: Sequence[risk_pb2.DiagnosisCodes], n: int) -> tuple[list[int], list[bool]]:
    """(index, available) per patient; -1/False where no codes were given or some cannot be mapped."""
    if not diagnoses:
        return [-1] * n, [False] * n
    values = [patient_index(d, f"diagnoses[{i}]") for i, d in enumerate(diagnoses)]
    return [-1 if v is None else v for v in values], [v is not None for v in values]
