"""FHIR coded elements: which codings' text may be stored.

- a code of a known system (ICD-10-CM, ICD-9-CM, SNOMED CT, LOINC) must have that system's syntax
  (:func:`.codes.shaped`); a code of any other system must look like a code
  (:func:`.codes.local_code_shaped`);
- a system that is not a URI or a system name (``http://name@host``, free text) is left out of
  ``system|code``;
- an element with a required value set (Condition.clinicalStatus, verificationStatus) stores only its codes.

Text that fails is never stored, and the warning withholds it (it may be a name, an SSN, an e-mail).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from healthai.normalize import codes, fhir_read
from healthai.normalize.fhir_resources import Rec
from healthai.normalize.records import IssueCode
from healthai.normalize.redact import withheld

_SYNTAX = {codes.ICD10CM: "an ICD-10-CM code", codes.ICD9CM: "an ICD-9-CM code",
           codes.SNOMED: "a SNOMED CT concept id", codes.LOINC: "a LOINC code"}


def storable(rec: Rec, coding: fhir_read.Coding, field: str) -> bool:
    """Whether the code of ``coding`` (of the CodeableConcept at ``field``) may be stored; warns
    CODE_NOT_STORED when it may not."""
    j, system, code = coding
    name = rec.ctx.system_name(system)
    if codes.shaped(name, code):
        return True
    what = _SYNTAX.get(name, "a code")
    rec.warn(IssueCode.CODE_NOT_STORED, f"{field}.coding[{j}].code is not shaped like {what} (free text): "
             f"not stored {withheld(code)}", rec.path(f"{field}.coding[{j}].code"))
    return False


def pair(rec: Rec, coding: fhir_read.Coding, field: str, code: str | None = None) -> str:
    """``system|code`` of a coding (``code``: its text as stored, default as sent); a system that is not a
    URI or a system name is left out (``|code``), with a CODE_NOT_STORED warning."""
    j, system, sent = coding
    if system is not None and not codes.system_text_ok(system):
        rec.warn(IssueCode.CODE_NOT_STORED, f"{field}.coding[{j}].system is not a URI or a system name: "
                 f"not stored {withheld(system)}", rec.path(f"{field}.coding[{j}].system"))
        system = None
    return f"{system or ''}|{sent if code is None else code}"


def value_set_code(rec: Rec, concept: Any, field: str, allowed: Mapping[str, str]) -> str | None:
    """The code of the first coding of ``concept`` in the value set (``allowed``: lower-cased spelling →
    code), or None; codes outside it are not stored (INVALID_FIELD warning, value withheld)."""
    found = fhir_read.codings(rec, concept, field)
    for _j, _system, code in found:
        hit = allowed.get(code.strip().lower())
        if hit is not None:
            return hit
    if found:
        known = ", ".join(sorted(set(allowed.values())))
        rec.warn(IssueCode.INVALID_FIELD, f"{field} is not one of {known} (value withheld): not stored",
                 rec.path(field))
    return None


__all__ = ["pair", "storable", "value_set_code"]
