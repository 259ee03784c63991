"""Optional full FHIR validation with the ``fhir.resources`` R4B models (``NormalizeContext.strict_fhir``).

The default path validates selectively (the fields we use) and runs several times faster; strict
mode additionally validates every resource against the complete R4B model (~3 MB/s) and rejects the
resource on any error, one ``INVALID_FIELD`` issue per pydantic error (field path from its location,
message without the offending value; keys and messages that could quote input are withheld).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import pydantic

from healthai.normalize.records import Issue, IssueCode, Severity
from healthai.normalize.redact import field_key

# pydantic-core error types whose message templates carry no part of the input (only expected
# types, patterns, bounds, class names); others (value_error from fhir.resources validators,
# union_tag_invalid, ...) may quote the value, so only their type is reported.
_SAFE_MESSAGE_TYPES = frozenset(
    {
        "missing", "extra_forbidden", "string_type", "int_type", "int_parsing", "int_from_float",
        "float_type", "float_parsing", "bool_type", "bool_parsing", "dict_type", "list_type",
        "model_type", "model_attributes_type", "string_pattern_mismatch", "string_too_short",
        "string_too_long", "too_short", "too_long", "date_type", "date_parsing",
        "date_from_datetime_parsing", "date_from_datetime_inexact", "datetime_type", "datetime_parsing",
        "time_type", "time_parsing", "decimal_type", "decimal_parsing", "url_type", "url_parsing",
        "url_syntax_violation", "greater_than", "greater_than_equal", "less_than", "less_than_equal",
        "finite_number", "none_required", "is_instance_of",
    }
)  # fmt: skip


@lru_cache(maxsize=256)
def _model(resource_type: str) -> Any:
    from fhir.resources.R4B import get_fhir_model_class  # imported lazily: ~0.5 s

    return get_fhir_model_class(resource_type)


def strict_issues(resource: dict, base: str, *, limit: int = 20) -> list[Issue]:
    """Errors of a full R4B validation of one resource (empty when valid)."""
    try:
        model = _model(str(resource.get("resourceType")))
    except ValueError:
        return [
            Issue(
                IssueCode.WRONG_RESOURCE_TYPE,
                "resourceType has no FHIR R4B model",
                f"{base}.resourceType",
                Severity.ERROR,
            )
        ]
    try:
        model.model_validate(resource)
    except pydantic.ValidationError as e:
        out = []
        for err in e.errors(include_input=False, include_url=False)[:limit]:
            path = "".join(f"[{p}]" if isinstance(p, int) else f".{field_key(p)}" for p in err["loc"])
            detail = (
                err["msg"][:160] if err["type"] in _SAFE_MESSAGE_TYPES else f"{err['type']} (detail withheld)"
            )
            message = f"FHIR R4B validation: {detail}"
            out.append(
                Issue(
                    IssueCode.INVALID_FIELD,
                    message,
                    f"{base}{path}" if base else path.lstrip("."),
                    Severity.ERROR,
                )
            )
        return out
    return []
