"""FHIR Patient and Encounter → patient and encounter rows (identity policy: :mod:`.identity`)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from healthai.normalize import codes, fhir_read
from healthai.normalize.birth_guard import birth_token
from healthai.normalize.counties import address_county
from healthai.normalize.fhir_coded import storable
from healthai.normalize.fhir_resources import ENCOUNTER_STATUS, GENDERS, Rec, Reject
from healthai.normalize.fhir_types import LOCAL_DATE_SLACK, parse_datetime, partial_date_end
from healthai.normalize.identity import generalize_date, region_code
from healthai.normalize.records import Issue, IssueCode, Severity
from healthai.normalize.value_sets import ACT_ENCOUNTER_CODES


# ---------------------------------------------------------------------------- Patient
def normalize_patient(rec: Rec, res: dict) -> list[dict]:
    # Independent fields are read with rec.attempt: every error of the resource is reported.
    sex = rec.attempt(rec.code_str, res, "gender", GENDERS, required=False)
    by, bm = rec.attempt(_birth, rec, res) or (None, None)
    deceased = res.get("deceasedBoolean")
    dy = dm = None
    if "deceasedDateTime" in res:
        t_death = rec.attempt(rec.time, res, "deceasedDateTime")
        if t_death is not None:
            deceased = True
            dy, dm = t_death.year, t_death.month
            if by is not None and (dy, dm or 12) < (by, bm or 1):
                rec.attempt(
                    rec.reject,
                    IssueCode.DATE_IMPOSSIBLE,
                    "deceasedDateTime is before birthDate",
                    rec.path("deceasedDateTime"),
                )
    elif deceased is not None and not isinstance(deceased, bool):
        rec.attempt(
            rec.reject,
            IssueCode.INVALID_FIELD,
            "deceasedBoolean must be true or false",
            rec.path("deceasedBoolean"),
        )
    place = rec.attempt(_place, rec, res.get("address")) or {"region": None, "county": None}
    rec.refs.patient_place[rec.index] = place
    idents = rec.attempt(_identifiers, rec, res.get("identifier")) or []
    if rec.failed:
        raise Reject
    return [
        {
            "source": rec.source,
            "record_key": rec.pid,
            "resource_id": rec.pid,
            "patient_id": rec.pid,
            "sex": sex,
            "birth_year": by,
            "birth_month": bm,
            "deceased": bool(deceased) if deceased is not None else None,
            "deceased_year": dy,
            "deceased_month": dm,
            **place,
            "identifier_pseudonyms": idents,
            "birth_date_token": (birth_token(rec.ctx.pseudonymizer, rec.pid, rec.refs.birth_dates[rec.pid])
                                 if rec.pid in rec.refs.birth_dates else None),
        }
    ]


def contained_subject(rec: Rec, res: dict) -> dict | None:
    """The patient row of the Patient contained in ``res`` that its ``subject`` references (``#p1``),
    or None. Normalized as any Patient (only what a Patient row keeps: sex, birth year and month, region,
    county, identifier pseudonyms), with the pseudonym of :meth:`Rec.contained_pseudonym`, so the record
    gets its region and its age. Its problems are warnings of the record (an invalid contained Patient
    is not stored; the record is), and a warning says the patient is this record's only."""
    subject = res.get("subject")
    ref = subject.get("reference") if isinstance(subject, dict) else None
    contained = res.get("contained")
    if not isinstance(ref, str) or not ref.startswith("#") or not isinstance(contained, list):
        return None
    found = [(j, c) for j, c in enumerate(contained) if isinstance(c, dict) and c.get("id") == ref[1:]]
    if not found or found[0][1].get("resourceType") != "Patient":
        return None  # a wrong type is rejected by the record's normalizer
    j, target = found[0]
    pid = rec.contained_pseudonym("Patient", ref)
    sub = Rec(rec.index, rec.path(f"contained[{j}]"), rec.source, pid, rec.ctx, rec.refs)
    try:
        rows = normalize_patient(sub, target)
    except Reject:
        rows = []
    # normalize_patient files the place under the record's index: moved to the contained map
    place = rec.refs.patient_place.pop(rec.index, None)
    rec.refs.contained_place[pid] = place or {"region": None, "county": None}
    note = " (contained Patient: not stored)"
    rec.issues += [i if i.severity is Severity.WARNING else
                   Issue(i.code, i.message + note, i.field_path, Severity.WARNING) for i in sub.issues]
    rec.warn(IssueCode.REFERENCE_CONTAINED, "subject is a contained Patient: it has no identity outside "
             "this resource, so it is used and stored as a patient of this record only (the same person's "
             "other records count as another patient)", rec.path("subject.reference"))
    return rows[0] if rows else None


def _identifiers(rec: Rec, raw: Any) -> list[str]:
    """Keyed pseudonyms of the identifiers (``system|value``; no system: ``|value``): how a conditional
    reference ``Patient?identifier=system|value`` sent in another payload finds this patient."""
    out = []
    for j, ident in enumerate(fhir_read.array(rec, raw, "identifier")):
        where = f"identifier[{j}]"
        if not isinstance(ident, dict):
            rec.reject(IssueCode.INVALID_FIELD, f"{where} must be an Identifier object", rec.path(where))
        system = fhir_read.string(rec, ident, "system", where)
        value = fhir_read.string(rec, ident, "value", where)
        if value is not None:
            out.append(rec.ctx.pseudonymizer.pseudonym(system or "", value))
    return out


def _birth(rec: Rec, res: dict) -> tuple[int | None, int | None]:
    """(year, month) of birthDate; the full date is kept in memory for this payload only (the dates
    policy: no stored event date may equal it)."""
    birth = res.get("birthDate")
    if birth is None:
        return None, None
    try:
        t = parse_datetime(birth)
        if not isinstance(birth, str) or "T" in birth:
            raise ValueError("birthDate has a time")
        by, bm = generalize_date(birth)
    except ValueError:  # never say more: a birth date identifies
        rec.reject(
            IssueCode.INVALID_FIELD,
            "birthDate is not an ISO 8601 date (FHIR date: YYYY, YYYY-MM or YYYY-MM-DD)",
            rec.path("birthDate"),
        )
    if t.date() > rec.ctx.today() or t.year < rec.ctx.min_birth_year:
        rec.reject(
            IssueCode.DATE_IMPOSSIBLE,
            f"birthDate is before {rec.ctx.min_birth_year} or in the future{rec.ctx.future_hint()}",
            rec.path("birthDate"),
        )
    if len(birth) >= 10:
        rec.refs.birth_dates[rec.pid] = t.date()
    return by, bm


def _place(rec: Rec, addresses: Any) -> dict[str, str | None] | None:
    """The region (ISO 3166-2) and US county (FIPS: from ``district``, else ``postalCode``) of the
    current home address."""
    if addresses is None:
        return None
    if not isinstance(addresses, list):
        rec.reject(IssueCode.INVALID_FIELD, "address must be an array", rec.path("address"))
    for i, a in enumerate(addresses):
        _check_address(rec, a, f"address[{i}]")
    # not yet in use (period.start after today): never the patient's region
    future = [i for i, a in enumerate(addresses) if _not_started(rec, a)]
    usable = [(i, a) for i, a in enumerate(addresses)
              if a.get("use") not in ("old", "billing") and i not in future]
    # a current home address first: one whose period has ended (the patient moved) only as a last resort
    usable.sort(key=lambda ia: (_ended(rec, ia[1]), ia[1].get("use") != "home"))
    for i, a in usable:
        state, country = a.get("state"), a.get("country")
        if state is not None:
            where = rec.path(f"address[{i}]")
            region = region_code(state, country if isinstance(country, str) else None)
            if region is None:  # said: an integrator would otherwise never learn why nothing is counted
                rec.warn(IssueCode.INVALID_FIELD, "state is not a state or subdivision known for the "
                         "address's country (value withheld): the patient has no region, so their cases are "
                         "not counted until a record gives one", f"{where}.state")
            district, postal = a.get("district"), a.get("postalCode")
            county = address_county(region, district if isinstance(district, str) else None,
                                    postal if isinstance(postal, str) else None)
            if county is None and region is not None and region.startswith("US-") and (
                    isinstance(district, str) or isinstance(postal, str)):
                rec.warn(IssueCode.INVALID_FIELD, "district / postalCode give no county of the address's "
                         "state (value withheld): the patient is counted by state, not by county",
                         f"{where}.postalCode" if isinstance(postal, str) else f"{where}.district")
            return {"region": region, "county": county}
    if usable or future:
        later = " (an address whose period starts after today is not current)" if future else ""
        rec.warn(IssueCode.MISSING_FIELD, f"no current address has a state{later}: the patient has no "
                 "region, so their cases are not counted until a record gives one", rec.path("address"))
    return None


_ADDRESS_STRINGS = ("use", "state", "country", "district", "postalCode")


def _check_address(rec: Rec, address: Any, where: str) -> None:
    """The Address elements read are of their R4 types (an object; strings; ``period`` an object)."""
    if not isinstance(address, dict):
        rec.reject(IssueCode.INVALID_FIELD, f"{where} must be an Address object", rec.path(where))
    for key in _ADDRESS_STRINGS:
        fhir_read.string(rec, address, key, where)
    period = address.get("period")
    if period is not None and not isinstance(period, dict):
        rec.reject(IssueCode.INVALID_FIELD, f"{where}.period must be a Period object",
                   rec.path(f"{where}.period"))


def _period_day(address: dict, key: str) -> dt.date | None:
    """The (UTC) date of the address's ``period.start`` / ``period.end``; None when absent or unreadable."""
    period = address.get("period")
    value = period.get(key) if isinstance(period, dict) else None
    try:
        return parse_datetime(value).date() if isinstance(value, str) else None
    except ValueError:
        return None


def _ended(rec: Rec, address: dict) -> bool:
    end = _period_day(address, "end")
    return end is not None and end < rec.ctx.today()


def _not_started(rec: Rec, address: dict) -> bool:
    """The address is not in use yet: its period starts after today (R4: "time period when address
    was/is in use"), e.g. a planned move sent ahead of time."""
    start = _period_day(address, "start")
    return start is not None and start > rec.ctx.today()


# HL7 v2 table 0004 (patient class) → the v3 ActCode class the visit counts use; other v2 classes
# (preadmit, recurring, obstetrics, ...) have no equivalent
_V2_CLASS = {"E": "EMER", "I": "IMP", "O": "AMB"}
_V2_SYSTEMS = frozenset({"http://terminology.hl7.org/CodeSystem/v2-0004", "urn:oid:2.16.840.1.113883.12.4"})
_V3_SYSTEMS = frozenset({"http://terminology.hl7.org/CodeSystem/v3-ActCode", "http://hl7.org/fhir/v3/ActCode",
                         "urn:oid:2.16.840.1.113883.5.4"})


def _encounter_class(rec: Rec, cls: dict) -> str | None:
    """The v3 ActEncounterCode of ``class`` (AMB, EMER, IMP, ...): as sent, or from HL7 v2 table 0004. A
    class in a sender's own system (Epic's OIDs) is not one: said, and stored as unknown. Other text
    under v3 is no encounter class (it may be a name or an identifier): not stored, withheld."""
    system, code = cls.get("system"), cls["code"].strip()
    uri = codes.canonical_uri(system) if isinstance(system, str) else None
    if system is None or uri in _V3_SYSTEMS:
        if code.upper() in ACT_ENCOUNTER_CODES:
            return code.upper()
        rec.warn(IssueCode.INVALID_FIELD, f"class is not one of {', '.join(sorted(ACT_ENCOUNTER_CODES))} "
                 "(value withheld): not stored", rec.path("class.code"))
        return None
    if uri in _V2_SYSTEMS and code.upper() in _V2_CLASS:
        return _V2_CLASS[code.upper()]
    rec.warn(IssueCode.CODE_SYSTEM_UNKNOWN, "class is neither a v3 ActCode nor an HL7 v2 patient class "
             "(E, I, O): stored unknown, so the visit is not counted as inpatient, emergency or outpatient",
             rec.path("class"))
    return None


# ---------------------------------------------------------------------------- Encounter
def normalize_encounter(rec: Rec, res: dict) -> list[dict]:
    # Independent fields are read with rec.attempt: every error of the resource is reported.
    status = rec.attempt(rec.code_str, res, "status", ENCOUNTER_STATUS, required=True)
    cls = res.get("class")
    if not isinstance(cls, dict) or not isinstance(cls.get("code"), str):
        code = IssueCode.MISSING_FIELD if cls is None else IssueCode.INVALID_FIELD
        rec.attempt(rec.reject, code, "class is required: a Coding with a code (R4)", rec.path("class"))
    else:
        rec.attempt(fhir_read.coding, rec, cls, "class")  # its system too
    types = rec.attempt(fhir_read.array, rec, res.get("type"), "type") or []
    # the first coding of type[0] shaped like a code (text that is no code is never stored)
    tcodings = (rec.attempt(fhir_read.codings, rec, types[0], "type[0]") if types else None) or []
    _, tsys, tcode = next((c for c in tcodings if storable(rec, c, "type[0]")), (None, None, None))
    patient = rec.attempt(rec.linked_id, res, "subject", "Patient", required=True)
    start = rec.attempt(rec.time, res, "period", sub="start")
    end = rec.attempt(rec.time, res, "period", sub="end")
    period = res.get("period") if isinstance(res.get("period"), dict) else {}
    end_unit = partial_date_end(period.get("end"))
    if end is not None and end_unit is not None:  # a date-only end covers its whole day (month, year)
        end = end_unit
    dated = end_unit or partial_date_end(period.get("start"))
    slack = LOCAL_DATE_SLACK if dated else dt.timedelta(0)
    if start is not None and end is not None and end + slack < start:
        rec.attempt(
            rec.reject, IssueCode.INVALID_FIELD, "period.end is before period.start", rec.path("period.end")
        )
    if rec.failed:
        raise Reject
    class_code = _encounter_class(rec, cls)
    return [
        {
            "source": rec.source,
            "record_key": rec.pid,
            "resource_id": rec.pid,
            "patient_id": patient,
            **rec.patient_place(res, "subject"),
            "status": status,
            "class_code": class_code,
            "type_system": codes.system_name(tsys) if tsys else None,
            "type_code": tcode,
            "start": start,
            "end": end,
        }
    ]
