"""Units (conversions, spellings, impossible values) and identity (pseudonyms, regions, dates)."""

from __future__ import annotations

import pytest

from healthai.errors import InvalidInput
from healthai.normalize import identity, units
from healthai.normalize.context import NormalizeContext


@pytest.mark.parametrize(
    ("loinc", "value", "unit", "expected", "target"),
    [
        ("29463-7", 150.0, "[lb_av]", 68.0388555, "kg"),
        ("29463-7", 150.0, "lbs", 68.0388555, "kg"),
        ("29463-7", 3500.0, "g", 3.5, "kg"),
        ("29463-7", 16.0, "oz", 0.45359237, "kg"),
        ("8302-2", 70.0, "[in_i]", 177.8, "cm"),
        ("8302-2", 70.0, "in", 177.8, "cm"),
        ("8302-2", 1.75, "m", 175.0, "cm"),
        ("8310-5", 98.6, "[degF]", 37.0, "Cel"),
        ("8310-5", 212.0 - 113.0, "F", 37.2222222, "Cel"),
        ("8310-5", 37.0, "C", 37.0, "Cel"),
        ("2339-0", 5.5, "mmol/L", 99.088, "mg/dL"),
        ("2339-0", 99.0, "mg/dl", 99.0, "mg/dL"),
        ("2345-7", 10.0, "mmol/l", 180.16, "mg/dL"),
        ("38483-4", 88.4, "umol/L", 0.99998, "mg/dL"),
        ("2093-3", 5.0, "mmol/L", 193.35, "mg/dL"),
        ("8480-6", 120.0, "mmHg", 120.0, "mm[Hg]"),
        ("8480-6", 120.0, "mm Hg", 120.0, "mm[Hg]"),
        ("8867-4", 72.0, "beats/minute", 72.0, "/min"),
        ("8867-4", 72.0, "bpm", 72.0, "/min"),
        ("9279-1", 16.0, "breaths/minute", 16.0, "/min"),
        ("39156-5", 24.0, "kg/m^2", 24.0, "kg/m2"),
        ("33914-3", 80.0, "mL/min", 80.0, "mL/min/{1.73_m2}"),
        ("2947-0", 140.0, "mEq/L", 140.0, "mmol/L"),
        ("1234-5", 3.0, "mmHg", 3.0, "mm[Hg]"),  # unknown code: respelled only
    ],
)
def test_conversions(loinc, value, unit, expected, target) -> None:
    got, unit_out = units.convert(loinc, value, unit)
    assert got == pytest.approx(expected, rel=1e-6)
    assert unit_out == target


@pytest.mark.parametrize(
    ("spelling", "ucum"),
    [
        ("mmHg", "mm[Hg]"),
        ("mm[Hg]", "mm[Hg]"),
        ("C", "Cel"),
        ("°C", "Cel"),
        ("F", "[degF]"),
        ("°F", "[degF]"),
        ("beats/minute", "/min"),
        ("/min", "/min"),
        ("lbs", "[lb_av]"),
        ("lb", "[lb_av]"),
        ("kg/m2", "kg/m2"),
        ("MG/DL", "mg/dL"),
        ("µmol/L", "umol/L"),
        ("furlong", None),
        (None, None),
    ],
)
def test_non_ucum_spellings(spelling, ucum) -> None:
    assert units.ucum(spelling) == ucum


@pytest.mark.parametrize(
    ("loinc", "value", "unit"),
    [
        ("8480-6", 1200.0, "mm[Hg]"),
        ("8480-6", -5.0, "mm[Hg]"),
        ("8310-5", 98.6, "Cel"),
        ("8310-5", 20.0, "Cel"),
        ("29463-7", 0.0, "kg"),
        ("29463-7", 2000.0, "lbs"),
        ("8302-2", 500.0, "cm"),
        ("8867-4", 0.0, "/min"),
        ("2339-0", 0.5, "mg/dL"),
        ("4548-4", 40.0, "%"),
        ("8480-6", float("nan"), "mm[Hg]"),
    ],
)
def test_impossible_values(loinc, value, unit) -> None:
    with pytest.raises(units.UnitError, match=r"possible range|finite") as e:
        units.convert(loinc, value, unit)
    assert e.value.code == "VALUE_IMPOSSIBLE"


def test_unknown_and_incompatible_units() -> None:
    with pytest.raises(units.UnitError) as e:
        units.convert("8480-6", 120.0, "furlongs")
    assert e.value.code == "UNIT_UNKNOWN"
    with pytest.raises(units.UnitError) as e:
        units.convert("8480-6", 120.0, "kg")
    assert e.value.code == "UNIT_INCOMPATIBLE"
    with pytest.raises(units.UnitError) as e:
        units.convert("4548-4", 6.0, "mmol/L")  # HbA1c has no molar conversion here
    assert e.value.code == "UNIT_INCOMPATIBLE"
    with pytest.raises(units.UnitError) as e:
        units.convert("8480-6", 120.0, None)
    assert e.value.code == "UNIT_UNKNOWN"


def test_pseudonym_is_hmac_sha256() -> None:
    import hashlib
    import hmac

    p = identity.Pseudonymizer(b"k" * 32)
    assert p.pseudonym("sys", "123") == hmac.new(b"k" * 32, b"sys|123", hashlib.sha256).hexdigest()
    assert p.pseudonym("sys", "123") != p.pseudonym("other", "123")
    assert "k" * 32 not in repr(p)


@pytest.mark.parametrize("key_len", [16, 63, 64, 65, 200])  # around SHA-256's 64-byte block
def test_precomputed_hmac_states_equal_hmac(key_len) -> None:
    import hashlib
    import hmac

    key = bytes(range(256))[:key_len]
    p = identity.Pseudonymizer(key)
    values = ["", "123", "é-ü-雪", "x" * 200, None]
    want = [None if v is None else hmac.new(key, f"src/Patient|{v}".encode(), hashlib.sha256).hexdigest()
            for v in values]
    assert p.many("src/Patient", values) == want
    assert [p.pseudonym("src/Patient", v) for v in values[:-1]] == want[:-1]
    assert p.keyed_digest("m") == hmac.digest(key, b"m", "sha256")


def test_pseudonym_keys_from_file_and_env(tmp_path, monkeypatch) -> None:
    key_file = tmp_path / "key"
    key_file.write_bytes(b"0123456789abcdef0123\n")
    a = identity.Pseudonymizer.from_file(key_file).pseudonym("s", "v")
    monkeypatch.setenv("HEALTHAI_PSEUDONYM_KEY", "0123456789abcdef0123")
    assert identity.Pseudonymizer.from_env().pseudonym("s", "v") == a
    with pytest.raises(InvalidInput, match="at least 16 bytes"):
        identity.Pseudonymizer(b"short")
    with pytest.raises(InvalidInput, match="cannot read pseudonymization key file"):
        identity.Pseudonymizer.from_file(tmp_path / "missing")
    monkeypatch.delenv("HEALTHAI_PSEUDONYM_KEY")
    with pytest.raises(InvalidInput, match="HEALTHAI_PSEUDONYM_KEY"):
        identity.Pseudonymizer.from_env()


def test_context_needs_exactly_one_key_source(tmp_path) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        NormalizeContext.create()
    with pytest.raises(ValueError, match="both CONCEPT and CONCEPT_RELATIONSHIP"):
        NormalizeContext.create(key=b"0123456789abcdef", omop_concept=tmp_path / "c")


@pytest.mark.parametrize(
    ("state", "country", "region"),
    [
        ("Massachusetts", None, "US-MA"),
        ("MA", "US", "US-MA"),
        ("ma", "USA", "US-MA"),
        ("new york", "United States", "US-NY"),
        ("District of Columbia", None, "US-DC"),
        ("Bavaria", "DE", None),  # an English exonym: not an ISO name, so not guessed
        ("Bayern", "DE", "DE-BY"),
        ("Tokyo", "JP", "JP-13"),
        ("13", "Japan", "JP-13"),
        ("jp-13", "JPN", "JP-13"),
        ("JP-13", "DE", None),  # another country's code
        ("ON", "CA", "CA-ON"),
        ("ile-de-france", "France", "FR-IDF"),  # accents and case folded
        ("Tokyo", "Atlantis", None),
        ("Narnia", None, None),
        (None, None, None),
        ("", "US", None),
    ],
)
def test_region_codes(state, country, region) -> None:
    assert identity.region_code(state, country) == region


def test_birth_date_generalization() -> None:
    assert identity.generalize_date("1960-05-17") == (1960, 5)
    assert identity.generalize_date("1960-05") == (1960, 5)
    assert identity.generalize_date("1960") == (1960, None)
    with pytest.raises(ValueError, match="not a FHIR date"):
        identity.generalize_date("1960-13-01")
