"""FHIR addresses outside the US: regions as ISO 3166-2 codes (``healthai.normalize.subdivisions``)."""

from __future__ import annotations

import json

import pytest

from healthai.normalize.fhir import normalize_fhir
from healthai.normalize.records import Status
from tests.normalize.fhir_builders import bundle, condition, patient

ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"


def run(ctx, *resources):
    return normalize_fhir(json.dumps(bundle(*resources)), ctx=ctx, source="test")


@pytest.mark.parametrize(
    ("address", "region"),
    [
        ({"state": "Tokyo", "country": "JP"}, "JP-13"),  # the Japan forecaster's ids
        ({"state": "Bayern", "country": "Deutschland"}, None),  # a country name ISO does not list in English
        ({"state": "Bayern", "country": "DEU"}, "DE-BY"),
        ({"state": "Ontario", "country": "Canada"}, "CA-ON"),
        ({"state": "Mars", "country": "JP"}, None),
        ({"state": "Co. Dublin", "country": "IE"}, "IE-D"),  # the usual Irish form
        ({"state": "County Cork", "country": "Ireland"}, "IE-CO"),
        ({"state": "Washington, D.C.", "country": "US"}, "US-DC"),
        ({"state": "D.C.", "country": "USA"}, "US-DC"),
        ({"state": "Virgin Islands", "country": "US"}, "US-VI"),
    ],
)
def test_regions_from_addresses(ctx, address, region) -> None:
    """An address gets its ISO 3166-2 code when the state is an ISO name or code (or a usual spelling
    of one: "Co. Dublin", "Washington, D.C."); the condition
    carries it for the surveillance counts; anything else stays unknown (never guessed)."""
    batch = run(ctx, patient(address=[{"line": ["1-1"], **address}]), condition(ICD10, "J11.1"))
    assert [o.status for o in batch.outcomes] == [Status.ACCEPTED] * 2
    assert batch.tables["patient"]["region"][0].as_py() == region
    assert batch.tables["condition"]["region"][0].as_py() == region
