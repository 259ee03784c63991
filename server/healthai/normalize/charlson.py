"""Charlson comorbidity groups (Quan et al. 2005 coding algorithms) and the Charlson index.

Sources: Quan H, Sundararajan V, Halfon P, et al. "Coding algorithms for defining comorbidities in
ICD-9-CM and ICD-10 administrative data". Med Care 2005;43(11):1130-9, Table 1: the ICD-10 lists
and the *enhanced ICD-9-CM* lists. Group names follow the R package ``comorbidity`` (Gasparini 2018).

Codes match by prefix on the undotted upper-case code (``I21`` matches ``I21.4``; ``I25.2`` matches
``I25.2`` only). The ICD-10 lists are WHO ICD-10 as published; they are applied to ICD-10-CM codes
unchanged (e.g. ``E14`` and ``F00`` never occur in ICD-10-CM). A code shorter than a list entry does
not match it (``250`` alone is not placed in either diabetes group: the 4th digit decides).

Weights (``WEIGHTS``): ``"charlson"`` — the original Charlson 1987 weights (default);
``"quan"`` — Quan et al. 2011 updated weights (Am J Epidemiol 173:676). As in ``comorbidity``, a
patient with both the mild and the severe form of liver disease, diabetes or cancer counts only
the severe one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import lru_cache

import numpy as np

from healthai.normalize.codes import canonical_icd9

GROUPS: tuple[str, ...] = (
    "mi", "chf", "pvd", "cevd", "dementia", "cpd", "rheumd", "pud", "mld",
    "diab", "diabwc", "hp", "rend", "canc", "msld", "metacanc", "aids",
)  # fmt: skip
GROUP_NAMES = {
    "mi": "Myocardial infarction", "chf": "Congestive heart failure", "pvd": "Peripheral vascular disease",
    "cevd": "Cerebrovascular disease", "dementia": "Dementia", "cpd": "Chronic pulmonary disease",
    "rheumd": "Rheumatic disease", "pud": "Peptic ulcer disease", "mld": "Mild liver disease",
    "diab": "Diabetes without chronic complication", "diabwc": "Diabetes with chronic complication",
    "hp": "Hemiplegia or paraplegia", "rend": "Renal disease",
    "canc": "Any malignancy, incl. lymphoma and leukaemia, except malignant neoplasm of skin",
    "msld": "Moderate or severe liver disease", "metacanc": "Metastatic solid tumour", "aids": "AIDS/HIV",
}  # fmt: skip
WEIGHTS: dict[str, dict[str, int]] = {
    "charlson": dict(zip(GROUPS, (1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 3, 6, 6), strict=True)),
    "quan": dict(zip(GROUPS, (0, 2, 0, 0, 2, 1, 1, 0, 2, 0, 1, 2, 1, 2, 4, 6, 4), strict=True)),
}
_HIERARCHY = (("mld", "msld"), ("diab", "diabwc"), ("canc", "metacanc"))  # (mild, severe)

# Lists as published (dotted); "A-B" is an inclusive range of codes of equal length and prefix.
ICD10_LISTS: dict[str, str] = {
    "mi": "I21 I22 I25.2",
    "chf": "I09.9 I11.0 I13.0 I13.2 I25.5 I42.0 I42.5-I42.9 I43 I50 P29.0",
    "pvd": "I70 I71 I73.1 I73.8 I73.9 I77.1 I79.0 I79.2 K55.1 K55.8 K55.9 Z95.8 Z95.9",
    "cevd": "G45 G46 H34.0 I60-I69",
    "dementia": "F00-F03 F05.1 G30 G31.1",
    "cpd": "I27.8 I27.9 J40-J47 J60-J67 J68.4 J70.1 J70.3",
    "rheumd": "M05 M06 M31.5 M32-M34 M35.1 M35.3 M36.0",
    "pud": "K25-K28",
    "mld": "B18 K70.0-K70.3 K70.9 K71.3-K71.5 K71.7 K73 K74 K76.0 K76.2-K76.4 K76.8 K76.9 Z94.4",
    "diab": "E10.0 E10.1 E10.6 E10.8 E10.9 E11.0 E11.1 E11.6 E11.8 E11.9 E12.0 E12.1 E12.6 E12.8 E12.9 "
    "E13.0 E13.1 E13.6 E13.8 E13.9 E14.0 E14.1 E14.6 E14.8 E14.9",
    "diabwc": "E10.2-E10.5 E10.7 E11.2-E11.5 E11.7 E12.2-E12.5 E12.7 E13.2-E13.5 E13.7 E14.2-E14.5 E14.7",
    "hp": "G04.1 G11.4 G80.1 G80.2 G81 G82 G83.0-G83.4 G83.9",
    "rend": "I12.0 I13.1 N03.2-N03.7 N05.2-N05.7 N18 N19 N25.0 Z49.0-Z49.2 Z94.0 Z99.2",
    "canc": "C00-C26 C30-C34 C37-C41 C43 C45-C58 C60-C76 C81-C85 C88 C90-C97",
    "msld": "I85.0 I85.9 I86.4 I98.2 K70.4 K71.1 K72.1 K72.9 K76.5 K76.6 K76.7",
    "metacanc": "C77-C80",
    "aids": "B20-B22 B24",
}
ICD9_LISTS: dict[str, str] = {
    "mi": "410 412",
    "chf": "398.91 402.01 402.11 402.91 404.01 404.03 404.11 404.13 404.91 404.93 425.4-425.9 428",
    "pvd": "093.0 437.3 440 441 443.1-443.9 447.1 557.1 557.9 V43.4",
    "cevd": "362.34 430-438",
    "dementia": "290 294.1 331.2",
    "cpd": "416.8 416.9 490-505 506.4 508.1 508.8",
    "rheumd": "446.5 710.0-710.4 714.0-714.2 714.8 725",
    "pud": "531-534",
    "mld": "070.22 070.23 070.32 070.33 070.44 070.54 070.6 070.9 570 571 573.3 573.4 573.8 573.9 V42.7",
    "diab": "250.0-250.3 250.8 250.9",
    "diabwc": "250.4-250.7",
    "hp": "334.1 342 343 344.0-344.6 344.9",
    "rend": "403.01 403.11 403.91 404.02 404.03 404.12 404.13 404.92 404.93 582 583.0-583.7 585 586 588.0 "
    "V42.0 V45.1 V56",
    "canc": "140-172 174-194 195.0-195.8 200-208 238.6",
    "msld": "456.0-456.2 572.2-572.8",
    "metacanc": "196-199",
    "aids": "042-044",
}


def _expand(spec: str) -> tuple[str, ...]:
    out: list[str] = []
    for item in spec.split():
        a, _, b = item.replace(".", "").partition("-")
        if not b:
            out.append(a)
            continue
        head = len(a) - len(a.lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
        prefix, lo, hi = a[:head], int(a[head:]), int(b[head:])
        if b[:head] != prefix or len(a) != len(b) or hi < lo:
            raise ValueError(f"bad code range {item}")
        out += [f"{prefix}{k:0{len(a) - head}d}" for k in range(lo, hi + 1)]
    return tuple(out)


PREFIXES: dict[str, dict[str, tuple[str, ...]]] = {
    "icd10": {g: _expand(ICD10_LISTS[g]) for g in GROUPS},
    "icd9": {g: _expand(ICD9_LISTS[g]) for g in GROUPS},
}


@lru_cache(maxsize=65536)
def groups_of_code(code: str, system: str) -> frozenset[str]:
    """Charlson groups of one code. ``system``: "icd10" or "icd9"; dotted or not, any case."""
    c = code.strip().upper()
    if system == "icd9":
        c = canonical_icd9(c) or c  # restores dropped leading zeros: "42" → "042"
    c = c.replace(".", "")
    table = PREFIXES[system]
    return frozenset(g for g in GROUPS if c.startswith(table[g]))


def groups_matrix(codes: Iterable[str | None], system: str) -> np.ndarray:
    """Boolean matrix (n codes × 17 groups, order ``GROUPS``); None/empty codes → all False.

    Vectorized for training: each distinct code is looked up once.
    """
    arr = np.asarray(list(codes), dtype=object)
    uniq, inv = np.unique(np.where(arr == None, "", arr).astype(str), return_inverse=True)  # noqa: E711
    rows = np.zeros((len(uniq), len(GROUPS)), dtype=bool)
    for j, u in enumerate(uniq):
        if u:
            found = groups_of_code(u, system)
            rows[j] = [g in found for g in GROUPS]
    return rows[inv.reshape(-1)]


def index_from_matrix(groups: np.ndarray, weights: str = "charlson") -> np.ndarray:
    """Charlson index per row of a (n × 17) boolean (or 0/1/NaN) matrix; NaN where any group is NaN."""
    w = WEIGHTS[weights]
    g = np.asarray(groups, dtype=np.float64).copy()
    pos = {name: i for i, name in enumerate(GROUPS)}
    for mild, severe in _HIERARCHY:
        both = g[:, pos[severe]] == 1
        g[both, pos[mild]] = 0.0
    return g @ np.array([w[name] for name in GROUPS], dtype=np.float64)


def comorbidities(
    *, icd10: Iterable[str] = (), icd9: Iterable[str] = (), unmapped: int = 0
) -> dict[str, float]:
    """Group → 1.0 (present), 0.0 (absent) or NaN (unknown) for one patient.

    ``unmapped`` counts the patient's conditions coded only in a system we cannot place into
    ICD-10/ICD-9 (e.g. SNOMED CT without a loaded map): then absent groups are unknown (NaN), not 0.
    """
    found: set[str] = set()
    for c in icd10:
        found |= groups_of_code(c, "icd10")
    for c in icd9:
        found |= groups_of_code(c, "icd9")
    absent = math.nan if unmapped else 0.0
    return {g: 1.0 if g in found else absent for g in GROUPS}


def charlson_index(groups: dict[str, float], weights: str = "charlson") -> float:
    """Weighted Charlson index of one patient; NaN when any group is unknown (never a false 0)."""
    row = np.array([[groups[g] for g in GROUPS]], dtype=np.float64)
    return float(index_from_matrix(row, weights)[0])


def icd9_groups(codes: Iterable[str]) -> dict[str, float]:
    """Groups of one patient coded in ICD-9-CM only (all codes placeable: no unknowns)."""
    return comorbidities(icd9=codes)


def icd10_groups(codes: Iterable[str]) -> dict[str, float]:
    """Groups of one patient coded in ICD-10(-CM) only."""
    return comorbidities(icd10=codes)
