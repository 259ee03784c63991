"""FHIR Condition → condition rows: ICD-10-CM / ICD-9-CM / SNOMED CT coding, mapped when a map is loaded.

A SNOMED CT concept whose NLM map rules depend on the patient's sex or age at onset is mapped with the
subject Patient's ``gender`` and full ``birthDate`` when that Patient is an entry of the payload, and
the Condition's onset date (:meth:`.maps.SnomedIcd10Map.lookup`); otherwise it is left unmapped with
a CODE_UNMAPPED issue saying what the rule needs.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from healthai.normalize import codes, fhir_read
from healthai.normalize.fhir_coded import pair, storable, value_set_code
from healthai.normalize.fhir_resources import Rec, Reject
from healthai.normalize.records import IssueCode
from healthai.normalize.redact import Syntax, describe
from healthai.normalize.value_sets import CLINICAL_STATUS, VERIFICATION_STATUS, same

_CLINICAL, _VERIFICATION = same(CLINICAL_STATUS), same(VERIFICATION_STATUS)
_UNDATED_CHOICES = ("onsetAge", "onsetRange", "onsetString", "abatementAge", "abatementRange",
                    "abatementString")


# ---------------------------------------------------------------------------- Condition
def normalize_condition(rec: Rec, res: dict) -> list[dict]:
    # Independent fields are read with rec.attempt: every error of the resource is reported.
    patient = rec.attempt(rec.linked_id, res, "subject", "Patient", required=True)
    encounter = rec.attempt(rec.linked_id, res, "encounter", "Encounter", required=False)
    # every coding is type-checked where read (a code that is not a string rejects the record)
    found = rec.attempt(fhir_read.codings, rec, res.get("code"), "code")
    uncoded = found == []  # valid R4 (code is 0..1, text-only allowed): accepted, not stored, below
    # a code that is not shaped like one (an SSN under ICD-10-CM) is never stored: warned, left out
    kept = [c for c in found or [] if storable(rec, c, "code")]
    no_code = bool(found) and not kept
    row = code_condition(rec, kept, patient_context(rec, res, patient))
    groups = row.pop("_groups")
    # R4 statuses are CodeableConcepts: a STU3 string ("refuted") is rejected, never read as no status;
    # their value sets are required bindings: any other text is not stored
    clinical = rec.attempt(value_set_code, rec, res.get("clinicalStatus"), "clinicalStatus", _CLINICAL)
    verification = rec.attempt(value_set_code, rec, res.get("verificationStatus"), "verificationStatus",
                               _VERIFICATION)
    onset = (
        rec.attempt(rec.time, res, "onsetDateTime")
        if "onsetDateTime" in res
        else rec.attempt(rec.time, res, "onsetPeriod", sub="start")
    )
    abatement = (
        rec.attempt(rec.time, res, "abatementDateTime")
        if "abatementDateTime" in res
        else rec.attempt(rec.time, res, "abatementPeriod", sub="end")
    )
    recorded = rec.attempt(rec.time, res, "recordedDate")
    given = res.get("onsetDateTime")
    if onset is not None and isinstance(given, str) and len(given) in (4, 7):  # YYYY or YYYY-MM
        unit = "year" if len(given) == 4 else "month"
        rec.warn(IssueCode.DATE_PARTIAL, f"onsetDateTime gives only a {unit}: stored as its first day, "
                 "where daily and weekly counts place the case", rec.path("onsetDateTime"))
    for name in _UNDATED_CHOICES:
        if name in res:  # an age, range or text is not a date: said, not silently dropped
            rec.warn(IssueCode.NOT_STORED, f"{name} is not stored (only dateTime and Period onsets and "
                     "abatements are)", rec.path(name))
    if rec.failed:
        raise Reject
    if uncoded:
        rec.warn(IssueCode.NOT_STORED, "code has no coding (absent or text only): a condition without a "
                 "code cannot be counted or scored, so it is not stored", rec.path("code"))
        return []
    if no_code:
        rec.warn(IssueCode.NOT_STORED, "code has no coding shaped like a code: a condition without a code "
                 "cannot be counted or scored, so it is not stored", rec.path("code"))
        return []
    row.update(
        {
            "source": rec.source,
            "record_key": rec.pid,
            "resource_id": rec.pid,
            "patient_id": patient,
            "encounter_id": encounter,
            **rec.patient_place(res, "subject"),
            "clinical_status": clinical,
            "verification_status": verification,
            "onset": onset,
            "abatement": abatement,
            "recorded": recorded,
        }
    )
    return [row, *further_group_rows(rec.ctx.snomed_map, row, groups)]


def patient_context(rec: Rec, res: dict, patient: str | None) -> tuple[str | None, float | None]:
    """(sex, age at onset in years) of the Condition's subject, each None when the payload does not give
    it: for the map's sex and age rules only, never stored."""
    subject = res.get("subject")
    ref = subject.get("reference") if isinstance(subject, dict) else None
    target = rec.refs.resolve(ref) if isinstance(ref, str) and not ref.startswith("#") else None
    if target is None or rec.refs.type_of(target) != "Patient":
        return None, None
    gender = rec.refs.resource_of(target).get("gender")  # the Patient entry of this payload
    sex = gender if gender in ("female", "male") else None
    birth = rec.refs.birth_dates.get(patient) if patient else None  # by the Patient's pseudonym
    onset = res.get("onsetDateTime")
    if onset is None and isinstance(res.get("onsetPeriod"), dict):
        onset = res["onsetPeriod"].get("start")
    try:
        day = dt.date.fromisoformat(onset[:10]) if isinstance(onset, str) and len(onset) >= 10 else None
    except ValueError:
        day = None
    age = (day - birth).days / 365.25 if birth is not None and day is not None and day >= birth else None
    return sex, age


def further_group_rows(snomed_map: Any, row: dict, groups: list[str] | None = None) -> list[dict]:
    """A SNOMED CT concept mapped to several ICD-10-CM map groups (every group applies) is stored as its
    row (group 1) plus one row per further group, keyed ``<record key>#group<g>``: Charlson and the
    syndromes see every code, and counts of distinct patients are unchanged. ``groups``: the concept's
    codes for this patient (default: for a patient of unknown sex and age)."""
    if snomed_map is None or not row["icd10_mapped"] or not row["snomed_code"]:
        return []
    if groups is None:
        groups = snomed_map.map_groups(row["snomed_code"])
    if len(groups) < 2 or groups[0] != row["icd10_code"]:
        return []
    return [{**row, "record_key": f"{row['record_key']}#group{g}", "icd10_code": code}
            for g, code in enumerate(groups[1:], start=2)]


def code_condition(rec: Rec, codings: list[tuple[int, str | None, str]],
                   patient: tuple[str | None, float | None] = (None, None)) -> dict:
    """Diagnosis columns from (position, system URI, code) codings; flags invalid, not reportable and
    unmapped codes. ``patient``: (sex, age at onset) for the map's rules; ``_groups``: the map groups'
    codes of a mapped concept."""
    ctx = rec.ctx
    out: dict[str, Any] = {
        "code_system": None,
        "code": None,
        "icd10_code": None,
        "icd10_mapped": False,
        "icd9_code": None,
        "snomed_code": None,
        "snomed_mapped": False,
    }
    for j, system, code in codings:
        name = ctx.system_name(system)
        where = rec.path(f"code.coding[{j}].code")
        if name == codes.ICD10CM:
            who = isinstance(system, str) and codes.canonical_uri(system) in codes.WHO_ICD10_SYSTEMS
            canon, issue = codes.check_icd10(code, ctx.icd10, who=who)  # WHO-only codes under a WHO URI
            if issue is not None:
                rec.warn(issue[0], describe("code", code, issue[1], Syntax.ICD10), where)
            if canon is not None and (out["icd10_code"] is None or out["icd10_mapped"]):
                out["icd10_code"], out["icd10_mapped"] = canon, False
            value = canon or code.strip().upper()
        elif name == codes.ICD9CM:
            canon = codes.canonical_icd9(code)
            if canon is None:
                problem = "is not an ICD-9-CM code"
                rec.warn(IssueCode.ICD9_INVALID, describe("code", code, problem, Syntax.ICD9), where)
            elif out["icd9_code"] is None:
                out["icd9_code"] = canon
            value = canon or code.strip().upper()
        elif name == codes.SNOMED and not codes.snomed_valid(code):
            # not an SCTID: kept as an OTHER code, never in snomed_code
            problem = "is not an SCTID (digits, partition, Verhoeff check); kept as system|code"
            message = describe("SNOMED CT code", code, problem, Syntax.SNOMED)
            rec.warn(IssueCode.SNOMED_INVALID, message, where)
            name, value = codes.OTHER, pair(rec, (j, system, code), "code")
        elif name == codes.SNOMED:
            value = code.strip()
            out["snomed_code"] = out["snomed_code"] or value
        else:
            value = pair(rec, (j, system, code), "code")
        if out["code"] is None or (out["code_system"] == codes.OTHER and name != codes.OTHER):
            # the primary code: the first coding of a known system, else the first coding
            out["code_system"], out["code"] = name, value
    out["_groups"] = []
    if out["icd10_code"] is None and out["icd9_code"] is None:
        snomed = out["snomed_code"]
        mapped = ctx.snomed_map.lookup(snomed, sex=patient[0], age=patient[1]) if ctx.snomed_map and snomed \
            else None
        if mapped is not None and mapped.targets:
            out["icd10_code"], out["icd10_mapped"] = mapped.targets[0], True
            out["_groups"] = list(mapped.targets)
            _, issue = codes.check_icd10(mapped.targets[0], ctx.icd10)  # as if sent: not reportable
            if issue is not None:
                problem = f"maps to ICD-10-CM {mapped.targets[0]}, which {issue[1]}"
                message = describe("SNOMED CT code", snomed, problem, Syntax.SNOMED)
                rec.warn(issue[0], message, rec.path("code"))
        elif snomed:
            why = (
                "no SNOMED CT → ICD-10-CM map is loaded"
                if ctx.snomed_map is None
                else mapped.reason if mapped is not None and mapped.reason
                else "not in the loaded map"
            )
            message = describe("SNOMED CT code", snomed, f"has no ICD-10-CM code: {why}", Syntax.SNOMED)
            rec.warn(IssueCode.CODE_UNMAPPED, message, rec.path("code"))
        elif out["code_system"] == codes.OTHER and not any(
            i.code == IssueCode.SNOMED_INVALID for i in rec.issues
        ):
            rec.warn(
                IssueCode.CODE_SYSTEM_UNKNOWN, "no ICD-10-CM, ICD-9-CM or SNOMED CT coding", rec.path("code")
            )
    elif out["snomed_code"] is None and out["icd10_code"] and ctx.snomed_map is not None:
        out["snomed_code"] = ctx.snomed_map.unique_snomed(out["icd10_code"])
        out["snomed_mapped"] = out["snomed_code"] is not None
    return out
