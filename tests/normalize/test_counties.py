"""US county (FIPS) of an address: by county name (FHIR ``district``, flat ``county``) or by ZIP code;
unknown stays unknown, the ZIP code is never stored."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from healthai.normalize.context import NormalizeContext
from healthai.normalize.counties import address_county, county_fips, zip_county
from healthai.normalize.fhir import normalize_fhir
from healthai.normalize.flat import normalize_table


@pytest.mark.parametrize(("state", "name", "fips"), [
    ("MA", "Middlesex", "25017"), ("MA", "Middlesex County", "25017"), ("MA", "middlesex co.", "25017"),
    ("MD", "Baltimore", "24005"), ("MD", "Baltimore city", "24510"), ("MO", "Saint Louis City", "29510"),
    ("NM", "Dona Ana", "35013"), ("NM", "Doña Ana County", "35013"), ("LA", "Orleans Parish", "22071"),
    ("AK", "Anchorage", "02020"), ("DC", "District of Columbia", "11001"), ("PR", "Adjuntas", "72001"),
    ("MD", "Prince George's", "24033"), ("MA", "25017", "25017"),
    ("AK", "Municipality of Anchorage", "02020"), ("AK", "City and Borough of Juneau", "02110"),
    ("IN", "La Porte County", "18091"),
    ("MA", "06037", None),            # a FIPS of another state
    ("CT", "Hartford County", None),  # Connecticut counts by planning region since 2022
    ("MA", "Gotham", None), ("XX", "Middlesex", None),
])
def test_county_names(state: str, name: str, fips: str | None) -> None:
    assert county_fips(state, name) == fips


def test_zip_codes_give_their_county_in_the_address_state() -> None:
    assert zip_county("MA", "02138") == "25017" and zip_county("MA", "02138-4307") == "25017"
    assert zip_county("NY", "02138") is None  # the ZIP code is in another state: nothing guessed
    assert zip_county(None, "99501") == "02020"
    assert zip_county("MA", "0213") is None and zip_county("MA", "ABCDE") is None
    assert address_county("US-MA", "Suffolk", "02138") == "25025"  # the county named wins over the ZIP
    assert address_county("US-MA", None, "02138") == "25017"
    assert address_county("JP-13", None, "100-0001") is None
    assert address_county("US-DC", None, None) == "11001"  # one county: no ZIP code needed
    assert address_county("US-MA", None, None) is None


def patient(pid: str, address: dict) -> dict:
    return {"resourceType": "Patient", "id": pid, "gender": "male", "birthDate": "1970-01-01",
            "address": [address]}


def test_fhir_patient_and_its_records_carry_the_county(ctx: NormalizeContext) -> None:
    condition = {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
                 "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "J10.1"}]},
                 "onsetDateTime": "2024-01-09"}
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in (
        patient("p1", {"use": "home", "line": ["1 Main St"], "city": "Cambridge", "state": "MA",
                       "postalCode": "02138", "country": "US"}),
        patient("p2", {"district": "Worcester County", "state": "Massachusetts"}),
        patient("p3", {"state": "NY", "postalCode": "02138"}),
        condition)]}
    out = normalize_fhir(bundle, ctx=ctx, source="s")
    assert out.tables["patient"]["county"].to_pylist() == ["25017", "25027", None]
    assert out.tables["condition"]["county"].to_pylist() == ["25017"]
    stored = json.dumps([t.to_pylist() for t in out.tables.values()], default=str)
    assert "02138" not in stored and "Cambridge" not in stored


def test_flat_rows_take_a_county_fips_name_or_zip_code(ctx: NormalizeContext) -> None:
    table = pa.table({"patient_id": ["a", "b", "c", "d", "e"], "state": ["MA", "MA", "MA", "MA", None],
                      "county": ["25025", "Hampshire", None, "Gotham", None],
                      "postal_code": [None, None, "02138", None, "02138"]})
    out = normalize_table("patient", table, ctx=ctx, source="s")
    assert out.tables["patient"]["county"].to_pylist() == ["25025", "25015", "25017", None, "25017"]
    issues = [[(i.code, i.field_path) for i in o.issues] for o in out.outcomes]
    assert issues[3] == [("INVALID_FIELD", "[3].county")] and issues[4] == []  # the ZIP places it
    assert "02138" not in json.dumps(out.tables["patient"].to_pylist(), default=str)


def test_synthea_patients_get_their_massachusetts_county(bundle_paths: list[Path],
                                                         ctx: NormalizeContext) -> None:
    counties = []
    for path in bundle_paths:
        patients = normalize_fhir(path.read_bytes(), ctx=ctx, source="s").tables["patient"]
        counties += patients["county"].to_pylist()
    assert len(counties) == len(bundle_paths)
    assert sum(c is not None and c.startswith("25") for c in counties) >= len(counties) - 2  # MA: FIPS 25
