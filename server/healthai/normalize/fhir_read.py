"""Typed reads of the FHIR R4 elements the normalizers use.

Each element is checked for its JSON type where it is read: a Coding's ``code`` and ``system``, an
Identifier's ``value``, a Quantity's ``unit`` and ``code`` are strings (FHIR primitives ``code``,
``uri``, ``string``); ``coding`` and ``identifier`` are arrays; a CodeableConcept is an object. A wrong
type rejects the record (``INVALID_FIELD`` naming the field path and the JSON type found, never the
value): it is never turned into text (a Python repr in the store) nor handed on to crash the batch.
"""

from __future__ import annotations

from typing import Any

from healthai.normalize.fhir_resources import Rec
from healthai.normalize.records import IssueCode

Coding = tuple[int, str | None, str]  # (index in ``coding``, system URI or None, code)

_JSON_TYPES = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array",
               dict: "an object"}


def json_type(value: Any) -> str:
    """The JSON type of a parsed value, for messages ("a number"): never the value itself."""
    return _JSON_TYPES.get(type(value), "null" if value is None else "not JSON")


def string(rec: Rec, node: dict, key: str, field: str) -> str | None:
    """``node[key]`` when it is a string, None when absent; rejects any other JSON type."""
    value = node.get(key)
    if value is not None and not isinstance(value, str):
        rec.reject(IssueCode.INVALID_FIELD, f"{field}.{key} must be a string, not {json_type(value)}",
                   rec.path(f"{field}.{key}"))
    return value


def array(rec: Rec, value: Any, field: str) -> list:
    """``value`` when it is an array, [] when absent; rejects any other JSON type."""
    if value is None:
        return []
    if not isinstance(value, list):
        rec.reject(IssueCode.INVALID_FIELD, f"{field} must be an array, not {json_type(value)}",
                   rec.path(field))
    return value


def coding(rec: Rec, node: Any, field: str) -> tuple[str | None, str | None]:
    """(system, code) of a Coding object (an empty code is no code)."""
    if not isinstance(node, dict):
        rec.reject(IssueCode.INVALID_FIELD, f"{field} must be a Coding object, not {json_type(node)}",
                   rec.path(field))
    system, code = string(rec, node, "system", field), string(rec, node, "code", field)
    return system, code or None


def codings(rec: Rec, concept: Any, field: str) -> list[Coding]:
    """The codings that have a code of the CodeableConcept at ``field``, in order; [] when it is absent
    or has text only. A bare string (a STU3 ``code`` where R4 has a CodeableConcept) is rejected too."""
    if concept is None:
        return []
    if not isinstance(concept, dict):
        stu3 = " (a bare code is STU3; R4 sends {\"coding\": [{\"system\", \"code\"}]})" \
            if isinstance(concept, str) else ""
        rec.reject(IssueCode.INVALID_FIELD,
                   f"{field} must be a CodeableConcept object, not {json_type(concept)}{stu3}",
                   rec.path(field))
    out: list[Coding] = []
    for j, node in enumerate(array(rec, concept.get("coding"), f"{field}.coding")):
        system, code = coding(rec, node, f"{field}.coding[{j}]")
        if code is not None:
            out.append((j, system, code))
    return out


def first(rec: Rec, concept: Any, field: str) -> tuple[str | None, str | None]:
    """(system, code) of the first coding with a code of a CodeableConcept, or (None, None)."""
    found = codings(rec, concept, field)
    return (found[0][1], found[0][2]) if found else (None, None)
