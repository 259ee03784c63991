"""May an input value appear in an issue or error message? The one place that decides.

Product rule: no patient identifier in logs, errors or metrics. Messages name the field and what is
wrong; they quote the offending value only when it provably is not free text, i.e. it matches a
strict syntax for that field:

- ``ICD10``: ICD-10-CM shape ``A00``-``Z99`` + up to 4 more characters (``J10.9X``), any case;
- ``ICD9``: an ICD-9-CM diagnosis shape (``250.01``, ``V45.81``, ``E880.9``);
- ``LOINC``: ``NNNNNNN-C`` (the check digit may be wrong: that is what gets reported);
- ``SNOMED``: an SCTID of a concept: 6-18 digits, partition ``00``/``10``, Verhoeff check digit
  (a bare digit run - an MRN, an SSN, a phone number - passes that 1 time in 500);
- ``UNIT``: a unit spelling of the known unit table (:data:`healthai.normalize.units.UNIT_ALIASES`);
- an enumerated code from the allowed list (differing in case only);
- numbers, shown with 4 significant digits (no identifier of 5 or more digits can come through).

Dates (birth dates identify) and resource ids / references (they can be MRNs) are never quoted.
JSON keys in field paths are kept only when they are FHIR element names (:func:`field_key`).
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Collection

from healthai.normalize.codes import canonical_icd9
from healthai.normalize.fhir_elements import ELEMENT_NAMES


class Syntax(enum.Enum):
    ICD10 = "ICD-10-CM code"
    ICD9 = "ICD-9-CM code"
    LOINC = "LOINC code"
    SNOMED = "SNOMED CT concept id"
    UNIT = "unit"


_ICD10 = re.compile(r"^[A-Z][0-9][0-9A-Z](?:\.?[0-9A-Z]{1,4})?$", re.IGNORECASE)
_LOINC = re.compile(r"^\d{1,7}-\d$")
_SNOMED = re.compile(r"^\d{6,18}$")
_ICD9_CHARS = re.compile(r"^[0-9VvEe][0-9.]{1,6}$")

# Verhoeff: dihedral group D5 multiplication and the position permutations P^i (P^8 = identity).
_D = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 2, 3, 4, 0, 6, 7, 8, 9, 5),
    (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7),
    (4, 0, 1, 2, 3, 9, 5, 6, 7, 8),
    (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2),
    (7, 6, 5, 9, 8, 2, 1, 0, 4, 3),
    (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)
_P1 = (1, 5, 7, 6, 2, 8, 3, 0, 9, 4)


def _powers() -> tuple[tuple[int, ...], ...]:
    out = [tuple(range(10))]
    for _ in range(7):
        out.append(tuple(_P1[d] for d in out[-1]))
    return tuple(out)


_P = _powers()


def verhoeff_valid(digits: str) -> bool:
    c = 0
    for i, ch in enumerate(reversed(digits)):
        c = _D[c][_P[i % 8][int(ch)]]
    return c == 0


def _unit_known(value: str) -> bool:
    from healthai.normalize import units  # units imports this module for its messages

    return units.ucum(value) is not None


def echoable(value: object, syntax: Syntax | Collection[str]) -> bool:
    """True when ``value`` is a string of the strict syntax (or one of the allowed codes)."""
    if not isinstance(value, str) or len(value) > 32:
        return False
    v = value.strip()
    if not isinstance(syntax, Syntax):
        return v.lower() in {a.lower() for a in syntax}
    if syntax is Syntax.ICD10:
        return bool(_ICD10.match(v))
    if syntax is Syntax.ICD9:
        return bool(_ICD9_CHARS.match(v)) and canonical_icd9(v) is not None
    if syntax is Syntax.LOINC:
        return bool(_LOINC.match(v))
    if syntax is Syntax.SNOMED:
        return bool(_SNOMED.match(v)) and v[-3:-1] in ("00", "10") and verhoeff_valid(v)
    return _unit_known(v)


def withheld(value: object) -> str:
    """What may be said of a value that is not echoed: its JSON type, or that it is free text."""
    if isinstance(value, str):
        return f"(value withheld: free text, {len(value)} characters)"
    if isinstance(value, bool):
        return "(value withheld: a JSON boolean)"
    if isinstance(value, int | float):
        return "(value withheld: a JSON number)"
    if value is None:
        return "(value is null)"
    return f"(value withheld: a JSON {'array' if isinstance(value, list) else 'object'})"


def describe(field: str, value: object, problem: str, syntax: Syntax | Collection[str]) -> str:
    """``"<field> '<value>' <problem>"`` when the value is echoable, else
    ``"<field> <problem> (value withheld: free text, N characters)"``."""
    if echoable(value, syntax):
        return f"{field} {str(value).strip()!r} {problem}"
    return f"{field} {problem} {withheld(value)}"


def number(x: float) -> str:
    """A measured number for a message: 4 significant digits (an id of 5+ digits cannot show)."""
    return f"{x:.4g}" if math.isfinite(x) else str(x)


def field_key(key: object) -> str:
    """A JSON key as it may appear in a field path: FHIR element names only, otherwise ``*``."""
    return key if isinstance(key, str) and key in ELEMENT_NAMES else "*"


__all__ = ["Syntax", "describe", "echoable", "field_key", "number", "verhoeff_valid", "withheld"]
