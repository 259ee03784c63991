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
MAX_SHAPES = 20_000  # per type: known key tuples remembered (FHIR element names only, never a sender's)


def unknown_elements(res: dict, rtype: str, base: str) -> list[Issue]:
    """One warning per unknown key (at most MAX_ISSUES) of a resource of a walked type."""
    if rtype not in STRUCTURE or _all_known(res, rtype, _TOP):
        return []  # the common case: no field path is built
    out: list[Issue] = []
    _walk(res, rtype, base, out, top=True)
    return out


_NAMES = {t: frozenset(spec) for t, spec in STRUCTURE.items()}
_COMPLEX = {t: {k: c for k, c in spec.items() if c in STRUCTURE} for t, spec in STRUCTURE.items()}
# Per type (and top level, where "resourceType" is allowed): a node's keys, as a tuple in JSON order,
# -> its (key, child type) pairs to walk into. Only shapes of known keys are kept: a dict lookup of
# the key tuple replaces the set differences of ``_walk`` for the shapes a sender repeats.
_TOP = object()
_SHAPES: dict[object, dict[tuple, tuple[tuple[str, str], ...]]] = {}


def _all_known(node: dict, tname: str, top: object = None) -> bool:
    """Whether every key below ``node`` is an element of its type (no paths, no issues built)."""
    shapes = _SHAPES.setdefault((tname, top), {})
    keys = tuple(node)
    kids = shapes.get(keys)
    if kids is None:
        names = _NAMES[tname]
        if not names.issuperset(keys) and (
                top is not _TOP or not names.issuperset(k for k in keys if k != "resourceType")):
            return False
        complex_children = _COMPLEX[tname]
        kids = tuple((k, complex_children[k]) for k in keys if k in complex_children)
        if len(shapes) < MAX_SHAPES:
            shapes[keys] = kids
    for key, child in kids:
        value = node[key]
        if isinstance(value, dict):
            if not _all_known(value, child):
                return False
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, dict) and not _all_known(item, child):
                    return False
    return True


def _walk(node: dict, tname: str, path: str, out: list[Issue], *, top: bool = False) -> None:
    unknown = node.keys() - _NAMES[tname]  # set difference in C: the common case is empty
    if top:
        unknown.discard("resourceType")
    for key in unknown:
        if len(out) >= MAX_ISSUES:
            break
        name = field_key(key)
        what = f"element {name!r}" if name != "*" else "an element (name withheld)"
        out.append(Issue(IssueCode.UNKNOWN_ELEMENT, f"{what} is not part of FHIR R4 {tname}: ignored",
                         f"{path}.{name}" if path else name, Severity.WARNING))
    complex_children = _COMPLEX[tname]
    for key in node.keys() & complex_children.keys():
        value, child = node[key], complex_children[key]
        sub = f"{path}.{key}" if path else key
        if isinstance(value, dict):
            _walk(value, child, sub, out)
        elif isinstance(value, list):
            for j, item in enumerate(value):
                if isinstance(item, dict):
                    _walk(item, child, f"{sub}[{j}]", out)
