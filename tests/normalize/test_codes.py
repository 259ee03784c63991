"""Code systems: ICD-10-CM set, ICD-9-CM shapes, LOINC check digits, both SNOMED map formats."""

from __future__ import annotations

import pytest

from healthai.errors import InvalidInput
from healthai.normalize import codes
from healthai.normalize.maps import SnomedIcd10Map
from tests.normalize.conftest import NLM_MAP, OMOP_CONCEPT, OMOP_RELATIONSHIP


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("E11.9", "E11.9"),
        ("e119", "E11.9"),
        (" I21.4 ", "I21.4"),
        ("I10", "I10"),
        ("S72.001A", "S72.001A"),
        ("s72001a", "S72.001A"),
        ("J45.909", "J45.909"),
        ("I21", "I21"),
        ("U07.1", "U07.1"),
    ],
)
def test_valid_icd10cm(raw, canonical) -> None:
    assert codes.canonical_icd10(raw, codes.icd10_codes()) == canonical


@pytest.mark.parametrize(
    "raw", ["E11.99", "I21.9X", "E14.9", "F00.0", "250.01", "ZZZ", "", "E1", "A00-A09", "1"]
)
def test_invalid_icd10cm(raw) -> None:
    assert codes.canonical_icd10(raw, codes.icd10_codes()) is None


def test_icd10_code_set_and_billability() -> None:
    s = codes.icd10_codes()
    assert s.release == "April-2026"
    assert len(s.codes) > 90_000
    assert s.is_billable("E11.9") and not s.is_billable("E11") and not s.is_billable("I21")
    assert codes.canonical_icd10("E14.9") == "E14.9"  # shape only without a code set (WHO ICD-10 code)


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("250.01", "250.01"),
        ("25001", "250.01"),
        ("250", "250"),
        ("V45.81", "V45.81"),
        ("v4581", "V45.81"),
        ("V45", "V45"),
        ("E880.9", "E880.9"),
        ("E8809", "E880.9"),
        ("38", "038"),
        ("8", "008"),
        ("41.1", "041.1"),
    ],
)
def test_icd9_recognition(raw, canonical) -> None:
    assert codes.canonical_icd9(raw) == canonical
    assert codes.is_icd9_format(raw)


@pytest.mark.parametrize("raw", ["E11.9", "250.001", "V4", "E88.09", "ABC", "", "?", "2500123"])
def test_not_icd9(raw) -> None:
    assert codes.canonical_icd9(raw) is None


@pytest.mark.parametrize(
    "code",
    [
        "8480-6",
        "8462-4",
        "2339-0",
        "4548-4",
        "55284-4",
        "85354-9",
        "39156-5",
        "29463-7",
        "8302-2",
        "72514-3",
        "33914-3",
        "718-7",
    ],
)
def test_loinc_check_digit_valid(code) -> None:
    assert codes.loinc_valid(code)


@pytest.mark.parametrize("code", ["8480-5", "55284-3", "8480", "8480-66", "abc-1", "", "12345678-9"])
def test_loinc_invalid(code) -> None:
    assert not codes.loinc_valid(code)


def test_loinc_check_digit_by_hand() -> None:
    # 8480: from the right 0,8,4,8; doubled 1st and 3rd: 0→0, 4→8; sum 0+8+8+8 = 24 → 6
    assert codes.loinc_check_digit("8480") == 6
    assert codes.loinc_check_digit("2339") == 0
    with pytest.raises(ValueError, match="digits"):
        codes.loinc_check_digit("84a0")


def test_system_uris() -> None:
    assert codes.system_name("http://hl7.org/fhir/sid/icd-10-cm") == codes.ICD10CM
    assert codes.system_name("http://hl7.org/fhir/sid/icd-9-cm") == codes.ICD9CM
    assert codes.system_name("http://snomed.info/sct") == codes.SNOMED
    assert codes.system_name("http://loinc.org") == codes.LOINC
    assert codes.system_name("http://example.org") == codes.OTHER
    assert codes.system_name(None) == codes.OTHER


def test_nlm_map_rules_groups_priorities() -> None:
    m = SnomedIcd10Map.load_nlm(NLM_MAP)
    assert m.snomed_to_icd10("44054006") == ["E11.9"]
    assert m.snomed_to_icd10("127013003") == ["E11.21", "N18.9"]  # two map groups
    assert m.snomed_to_icd10("233678006") == ["J45.909"]  # IFA and OTHERWISE TRUE give the same code
    assert m.snomed_to_icd10("162864005") == []  # only an IFA Male rule: sex unknown, context dependent
    assert m.lookup("162864005", sex="male").targets == ("E66.9",)
    assert m.lookup("162864005", sex="female") == ((), "no rule of the map holds for this patient")
    assert m.snomed_to_icd10("162864005", all_rules=True) == ["E66.9"]
    assert m.snomed_to_icd10("195662009") == ["J02.9"]  # lowest priority number
    assert m.snomed_to_icd10("15777000") == []  # empty target: cannot be classified
    assert m.snomed_to_icd10("10509002") == []  # inactive row
    assert m.snomed_to_icd10("271737000") == []  # another refset
    assert m.snomed_to_icd10("999999999") == []
    assert m.icd10_to_snomed("e119") == ["44054006"]
    assert m.icd10_to_snomed("N18.9") == ["127013003"]
    assert m.has_snomed("162864005") and not m.has_snomed("15777000")


def test_omop_map_both_directions() -> None:
    m = SnomedIcd10Map.load_omop(OMOP_CONCEPT, OMOP_RELATIONSHIP)
    assert m.snomed_to_icd10("44054006") == ["E11.9"]
    assert m.icd10_to_snomed("E11.21") == ["127013003", "1501000119109"]  # invalid target skipped
    assert m.snomed_to_icd10("38341003") == []  # deprecated relationship
    assert m.snomed_to_icd10("185086009") == []  # "Is a" / "Maps to value" are not maps
    assert m.icd10_to_snomed("C78.5") == ["94260004"]


def test_map_files_with_missing_columns_are_refused(tmp_path) -> None:
    bad = tmp_path / "map.txt"
    bad.write_text("id\tactive\n1\t1\n")
    with pytest.raises(InvalidInput, match="missing column"):
        SnomedIcd10Map.load_nlm(bad)
    with pytest.raises(InvalidInput, match="cannot read map file"):
        SnomedIcd10Map.load_omop(tmp_path / "nope.csv", OMOP_RELATIONSHIP)


def test_unique_reverse_lookup() -> None:
    omop = SnomedIcd10Map.load_omop(OMOP_CONCEPT, OMOP_RELATIONSHIP)
    assert omop.unique_snomed("E11.9") == "44054006"
    assert omop.unique_snomed("E11.21") is None  # two concepts: ambiguous, left empty
    assert omop.unique_snomed("Z00.0") is None


def test_nlm_map_files_that_give_no_map_are_refused_and_a_bom_is_read(tmp_path) -> None:
    text = NLM_MAP.read_text()
    bom = tmp_path / "bom.txt"
    bom.write_text("\ufeff" + text, encoding="utf-8")  # saved by a Windows editor
    assert len(SnomedIcd10Map.load_nlm(bom)) == len(SnomedIcd10Map.load_nlm(NLM_MAP))
    other = tmp_path / "intl.txt"  # the international ICD-10 map (refset 447562003), not ICD-10-CM
    other.write_text(text.replace("6011000124106", "447562003"))
    with pytest.raises(InvalidInput, match=r"no active row of the ICD-10-CM map refset.*447562003"):
        SnomedIcd10Map.load_nlm(other)
    header, *rows = text.splitlines()
    cut = tmp_path / "cut.txt"  # every line cut after its fifth field
    cut.write_text("\n".join([header, *("\t".join(r.split("\t")[:5]) for r in rows)]) + "\n")
    with pytest.raises(InvalidInput, match="fewer fields than the header"):
        SnomedIcd10Map.load_nlm(cut)
