"""Audit walkO, finding 1 (flat): a code column's text that has not even its system's syntax, a code system
that is an e-mail (``http://name@host``) and a ``panel_loinc`` that is no LOINC code are never stored, and
their warnings never echo them; well-shaped invalid codes are still kept, flagged."""

from __future__ import annotations

import pyarrow as pa

from healthai.normalize.context import NormalizeContext
from healthai.normalize.flat import normalize_table
from healthai.normalize.records import NormalizedBatch, Status

SSN, PHONE, EMAIL, NAME = "123-45-6789", "617-555-0199", "zelda.q@example.org", "Quenneville-Ostrowski"


def assert_no_leak(out: NormalizedBatch) -> None:
    text = str({k: t.to_pylist() for k, t in out.tables.items()}) + str(out.outcomes)
    for secret in (SSN, PHONE, EMAIL, NAME, "zelda"):
        assert secret not in text


def test_codes_without_their_systems_syntax_are_not_stored(ctx: NormalizeContext) -> None:
    systems = ["ICD10CM", "ICD9CM", "SNOMED", "http://snomed.info/sct", "LOCAL", "urn:oid:1.2.3", "LOCAL"]
    codes = [SSN, SSN, PHONE, EMAIL, SSN, PHONE, NAME]
    n = len(codes)
    t = pa.table({"condition_id": [str(i) for i in range(n)], "patient_id": ["p"] * n, "code": codes,
                  "code_system": systems})
    out = normalize_table("condition", t, ctx=ctx, source="s")
    assert [o.status for o in out.outcomes] == [Status.ACCEPTED_WITH_WARNINGS] * n
    assert [[i.code for i in o.issues] for o in out.outcomes] == [["CODE_NOT_STORED", "NOT_STORED"]] * n
    assert all("(value withheld: free text" in o.issues[0].message for o in out.outcomes)
    assert out.tables["condition"].num_rows == 0  # a condition without a code is not stored (as FHIR)
    assert_no_leak(out)


def test_well_shaped_invalid_codes_are_still_kept_and_flagged(ctx: NormalizeContext) -> None:
    t = pa.table({"condition_id": ["a", "b", "c"], "patient_id": ["p"] * 3,
                  "code": ["Q99.999X", "1234567", "XYZ-9"], "code_system": ["ICD10CM", "SNOMED", "LOCAL"]})
    out = normalize_table("condition", t, ctx=ctx, source="s")
    assert [[i.code for i in o.issues] for o in out.outcomes] == [
        ["ICD10_INVALID"], ["SNOMED_INVALID"], ["CODE_SYSTEM_UNKNOWN"]]
    assert out.tables["condition"]["code"].to_pylist() == ["Q99.999X", "SNOMED|1234567", "LOCAL|XYZ-9"]


def test_a_code_system_with_user_info_is_not_stored(ctx: NormalizeContext) -> None:
    t = pa.table({"condition_id": ["a", "b"], "patient_id": ["p"] * 2, "code": [SSN, "J10.1"],
                  "code_system": [f"http://{EMAIL}"] * 2})
    out = normalize_table("condition", t, ctx=ctx, source="s")
    assert out.tables["condition"]["code"].to_pylist() == ["|J10.1"]
    assert [[i.code for i in o.issues] for o in out.outcomes] == [["CODE_NOT_STORED", "NOT_STORED"],
                                                                  ["CODE_SYSTEM_UNKNOWN"]]
    assert_no_leak(out)


def test_panel_loinc_is_checked_as_loinc_is(ctx: NormalizeContext) -> None:
    t = pa.table({"observation_id": ["a", "b", "c", "d"], "patient_id": ["p"] * 4,
                  "loinc": ["8480-6"] * 4, "value": [120.0] * 4, "unit": ["mm[Hg]"] * 4,
                  "panel_loinc": [PHONE, "85354-9", "85354-8", None]})
    out = normalize_table("observation", t, ctx=ctx, source="s")
    assert [o.status for o in out.outcomes] == [Status.REJECTED, Status.ACCEPTED,
                                                Status.ACCEPTED_WITH_WARNINGS, Status.ACCEPTED]
    assert [(i.code, i.severity, i.field_path) for o in out.outcomes for i in o.issues] == [
        ("LOINC_INVALID", "ERROR", "[0].panel_loinc"), ("LOINC_INVALID", "WARNING", "[2].panel_loinc")]
    assert out.tables["observation"]["panel_loinc"].to_pylist() == ["85354-9", "85354-8", None]
    assert_no_leak(out)
