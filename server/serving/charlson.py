"""Charlson comorbidity index per patient from request codes, through the shared normalization code
(``healthai.normalize.codes`` to validate, ``healthai.normalize.charlson`` to group and weigh) —
the same functions training uses, never reimplemented here."""

from __future__ import annotations

import math
from collections.abc import Sequence

from healthai.errors import InvalidInput
from healthai.normalize import charlson, codes
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
    valid, unmapped = [], 0
    for code in diagnosis.codes:
        canonical = (codes.canonical_icd10(code, codes.icd10_codes()) if system == "icd10"
                     else codes.canonical_icd9(code))
        if canonical is None:
            unmapped += 1
        else:
            valid.append(canonical)
    groups = charlson.comorbidities(**{system: valid}, unmapped=unmapped)
    value = charlson.charlson_index(groups)
    return None if math.isnan(value) else int(value)


def charlson_indices(diagnoses: Sequence[risk_pb2.DiagnosisCodes], n: int) -> tuple[list[int], list[bool]]:
    """(index, available) per patient; -1/False where no codes were given or some cannot be mapped."""
    if not diagnoses:
        return [-1] * n, [False] * n
    values = [patient_index(d, f"diagnoses[{i}]") for i, d in enumerate(diagnoses)]
    return [-1 if v is None else v for v in values], [v is not None for v in values]
