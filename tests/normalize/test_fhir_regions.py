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
    carries it for the surveillance counts; anything else stays unknown (never guessed), and the
    patient's outcome says so without the value."""
    batch = run(ctx, patient(address=[{"line": ["1-1"], **address}]), condition(ICD10, "J11.1"))
    first = Status.ACCEPTED if region else Status.ACCEPTED_WITH_WARNINGS
    assert [o.status for o in batch.outcomes] == [first, Status.ACCEPTED]
    if region is None:
        issue = batch.outcomes[0].issues[0]
        assert issue.field_path.endswith("address[0].state") and "not counted" in issue.message
        assert address["state"] not in issue.message
    assert batch.tables["patient"]["region"][0].as_py() == region
    assert batch.tables["condition"]["region"][0].as_py() == region


def test_a_patient_who_cannot_be_placed_is_told_so(ctx) -> None:
    """No state, or a ZIP code outside the address's state: accepted, with a warning naming the field
    (the patient is not counted, or counted by state only)."""
    no_state = run(ctx, patient(address=[{"postalCode": "02138", "country": "US"}]))
    assert no_state.outcomes[0].status == Status.ACCEPTED_WITH_WARNINGS
    assert no_state.outcomes[0].issues[0].code == "MISSING_FIELD"
    elsewhere = run(ctx, patient(address=[{"state": "Massachusetts", "postalCode": "10001"}]))
    issue = elsewhere.outcomes[0].issues[0]
    assert issue.field_path.endswith("address[0].postalCode") and "10001" not in issue.message
    assert elsewhere.tables["patient"]["region"][0].as_py() == "US-MA"
    assert elsewhere.tables["patient"]["county"][0].as_py() is None
    placed = run(ctx, patient(address=[{"state": "MA", "postalCode": "02138"}]))
    assert placed.outcomes[0].status == Status.ACCEPTED


def test_a_month_for_an_onset_is_said(ctx) -> None:
    batch = run(ctx, patient(address=[{"state": "MA"}]),
                {**condition(ICD10, "J11.1"), "onsetDateTime": "2025-11"})
    issue = batch.outcomes[1].issues[0]
    assert issue.code == "DATE_PARTIAL" and "only a month" in issue.message
