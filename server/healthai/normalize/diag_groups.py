"""ICD-9-CM diagnosis groups of Strack et al. 2014 (Diabetes 130-US hospitals, Table 2).

Strack B, DeShazo JP, Gennings C, et al. "Impact of HbA1c Measurement on Hospital Readmission
Rates: Analysis of 70,000 Clinical Database Patient Records". BioMed Res Int 2014:781670.

Groups (by the 3-digit ICD-9-CM category): circulatory 390–459, 785; respiratory 460–519, 786;
digestive 520–579, 787; diabetes 250.xx; injury 800–999; musculoskeletal 710–739; genitourinary
580–629, 788; neoplasms 140–239; everything else (incl. V and E codes) "other"; missing → "missing".
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from healthai.normalize.codes import canonical_icd9

DIAG_GROUPS: tuple[str, ...] = (
    "circulatory", "respiratory", "digestive", "diabetes", "injury", "musculoskeletal",
    "genitourinary", "neoplasms", "other", "missing",
)  # fmt: skip
_RANGES = (
    ("circulatory", 390, 459), ("respiratory", 460, 519), ("digestive", 520, 579), ("injury", 800, 999),
    ("musculoskeletal", 710, 739), ("genitourinary", 580, 629), ("neoplasms", 140, 239),
)  # fmt: skip
_SINGLE = {785: "circulatory", 786: "respiratory", 787: "digestive", 788: "genitourinary"}


def diag_group(code: str | None) -> str:
    """Strack group of one ICD-9-CM code (``"428"``, ``"250.83"``, ``"V45"``, ``None``)."""
    if code is None or not str(code).strip() or str(code).strip() == "?":
        return "missing"
    canon = canonical_icd9(str(code))
    if canon is None or not canon[0].isdigit():
        return "other"
    head = int(canon[:3])
    if head == 250:
        return "diabetes"
    if head in _SINGLE:
        return _SINGLE[head]
    for name, lo, hi in _RANGES:
        if lo <= head <= hi:
            return name
    return "other"


def diag_groups(codes: Iterable[str | None]) -> np.ndarray:
    """Vectorized :func:`diag_group` (object array of group names); each distinct code looked up once."""
    arr = np.asarray(list(codes), dtype=object)
    keys = np.where(arr == None, "", arr).astype(str)  # noqa: E711
    uniq, inv = np.unique(keys, return_inverse=True)
    return np.array([diag_group(u or None) for u in uniq], dtype=object)[inv.reshape(-1)]


# Names used by training (healthai_training.risk): the nine Strack groups, without "missing".
STRACK_GROUPS: tuple[str, ...] = DIAG_GROUPS[:-1]
strack_group = diag_group
