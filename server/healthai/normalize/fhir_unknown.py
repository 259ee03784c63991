"""UNKNOWN_ELEMENT warnings: JSON keys that are not elements of the FHIR R4 type they sit in.

Walks a Patient, Encounter, Condition or Observation along :data:`fhir_structure.STRUCTURE`;
extensions, contained resources and narratives are open-ended and not walked. The key is named in
the field path only when it is a FHIR element name (of any type); a sender's own key may be an
identifier, so it is shown as ``*`` (:func:`healthai.normalize.redact.field_key`).
"""

from __future__ import annotations

from healthai.normalize.fhir_structure import STRUCTURE
from healthai.normalize.records import Issue, IssueCode, Severity
from healthai.normalize.redact import field_key

MAX_ISSUES = 20  # per resource: a payload of a foreign shape must not produce megabytes of warnings


def unknown_elements(res: dict, rtype: str, base: str) -> list[Issue]:
    """One warning per unknown key (at most MAX_ISSUES) of a resource of a walked type."""
    if rtype not in STRUCTURE:
        return []
    out: list[Issue] = []
    _walk(res, rtype, base, out, top=True)
    return out


def _walk(node: dict, tname: str, path: str, out: list[Issue], *, top: bool = False) -> None:
    spec = STRUCTURE[tname]
    for key, value in node.items():
        child = spec.get(key, "")
        if child == "":  # not an element of this type
            if top and key == "resourceType":
                continue
            if len(out) < MAX_ISSUES:
                name = field_key(key)
                out.append(
                    Issue(
                        IssueCode.UNKNOWN_ELEMENT,
                        f"{'element ' + repr(name) if name != '*' else 'an element (name withheld)'} is not "
                        f"part of FHIR R4 {tname}: ignored",
                        f"{path}.{name}" if path else name,
                        Severity.WARNING,
                    )
                )
            continue
        if child is None or child not in STRUCTURE:
            continue
        sub = f"{path}.{key}" if path else key
        if isinstance(value, dict):
            _walk(value, child, sub, out)
        elif isinstance(value, list):
            for j, item in enumerate(value):
                if isinstance(item, dict):
                    _walk(item, child, f"{sub}[{j}]", out)
