"""Audit walkO, finding 5: a JSON number too large for a float (309+ digits: OverflowError) or for
Python's int parser (4,301+ digits: ValueError inside json.loads) rejects its record with INVALID_FIELD
naming the field, never the payload, never with an exception."""

from __future__ import annotations

import json

import pytest

from healthai.normalize.context import NormalizeContext
from healthai.normalize.fhir import normalize_fhir
from healthai.normalize.records import Severity, Status

from .fhir_builders import bundle, observation, patient

HUGE = '"__huge__"'


def _payload(res: dict, digits: int) -> bytes:
    return json.dumps(bundle(patient(), res)).replace(HUGE, "9" * digits).encode()


def _quantity(**extra: object) -> dict:
    res = observation("8310-5", 1.0, "Cel", **extra)
    res["valueQuantity"]["value"] = "__huge__"
    return res


def _integer() -> dict:
    res = observation("8310-5", 1.0, "Cel")
    del res["valueQuantity"]
    return {**res, "valueInteger": "__huge__"}


def _component() -> dict:
    res = observation("85354-9", None, "mm[Hg]", component=[
        {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
         "valueQuantity": {"value": "__huge__", "unit": "mm[Hg]"}}])
    del res["valueQuantity"]
    return res


@pytest.mark.parametrize("digits", [309, 400, 4301, 20_000])
@pytest.mark.parametrize(("make", "field"), [
    (_quantity, "valueQuantity.value"), (_integer, "valueInteger"),
    (_component, "component[0].valueQuantity.value"),
], ids=["quantity", "integer", "component"])
def test_a_huge_number_rejects_its_record_only(ctx: NormalizeContext, make, field: str, digits: int) -> None:
    out = normalize_fhir(_payload(make(), digits), ctx=ctx, source="s")
    assert [o.status for o in out.outcomes] == [Status.ACCEPTED, Status.REJECTED]
    errors = [(i.code, i.field_path) for i in out.outcomes[1].issues if i.severity is Severity.ERROR]
    assert errors == [("INVALID_FIELD", f"entry[1].resource.{field}")]
    assert out.tables["patient"].num_rows == 1 and out.tables["observation"].num_rows == 0


def test_a_huge_number_elsewhere_is_no_crash(ctx: NormalizeContext) -> None:
    res = observation("8310-5", 37.0, "Cel", extension=[{"url": "http://x", "valueDecimal": "__huge__"}])
    out = normalize_fhir(_payload(res, 5000), ctx=ctx, source="s")
    assert [o.status for o in out.outcomes] == [Status.ACCEPTED, Status.ACCEPTED]


def test_booleans_and_ordinary_integers_still_read(ctx: NormalizeContext) -> None:
    res = observation("8310-5", 1.0, "Cel")
    del res["valueQuantity"]
    ints = normalize_fhir(bundle(patient(), {**res, "valueInteger": 37}), ctx=ctx, source="s")
    bools = normalize_fhir(bundle(patient(), {**res, "id": "o2", "valueBoolean": True}), ctx=ctx, source="s")
    assert ints.tables["observation"]["value"].to_pylist() == [37.0]
    assert bools.outcomes[1].status is not Status.REJECTED
