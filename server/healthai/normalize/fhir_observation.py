"""FHIR Observation → observation rows (vital signs, labs, blood-pressure panels with components)."""

from __future__ import annotations

import math
from typing import Any

from healthai.normalize import codes, fhir_read, units
from healthai.normalize.fhir_coded import pair, storable
from healthai.normalize.fhir_resources import OBSERVATION_STATUS, Rec, Reject
from healthai.normalize.records import IssueCode
from healthai.normalize.redact import Syntax, describe, field_key, number
from healthai.normalize.value_sets import OBSERVATION_CATEGORY, same


def normalize_observation(rec: Rec, res: dict) -> list[dict]:
    # Independent fields are read with rec.attempt: every error of the resource is reported.
    status = rec.attempt(rec.code_str, res, "status", OBSERVATION_STATUS, required=True)
    concept = res.get("code")
    found = rec.attempt(fhir_read.codings, rec, concept, "code")  # None: a wrongly typed element
    text_only = found == [] and isinstance(concept, dict) and bool(concept.get("text"))
    coded = None if text_only or found is None else rec.attempt(_code, rec, found, "code")
    loinc, other = coded or (None, None)
    patient = rec.attempt(rec.linked_id, res, "subject", "Patient", required=True)
    encounter = rec.attempt(rec.linked_id, res, "encounter", "Encounter", required=False)
    effective = rec.attempt(_effective, rec, res)
    if text_only and not rec.failed:  # valid R4, but a value without a code means nothing to us
        rec.warn(IssueCode.NOT_STORED, "code has text but no coding: an uncoded observation is not stored",
                 rec.path("code"))
        return []
    category = rec.attempt(_category, rec, res.get("category"))
    base = {
        "source": rec.source,
        "resource_id": rec.pid,
        "patient_id": patient,
        "encounter_id": encounter,
        **rec.patient_place(res, "subject"),
        "status": status,
        "category": category,
        "effective": effective,
    }
    rows: list[dict] = []
    comps = res.get("component")
    if comps is not None and not isinstance(comps, list):
        rec.attempt(rec.reject, IssueCode.INVALID_FIELD, "component must be an array", rec.path("component"))
        comps = None
    absent = _absent(rec, res, "")
    own = rec.attempt(_value, rec, res, loinc, "", absent)
    no_value = own is None and not rec.failed  # no value[x] at all
    if own is not None or (not comps and not rec.failed):
        # no value and no components: stored with its dataAbsentReason (null value), never dropped
        own = own or {**_EMPTY, "data_absent_reason": absent}
        code = loinc or other
        rows.append({**base, "record_key": rec.pid, "loinc": code, "panel_loinc": None,
                     "loinc_valid": codes.loinc_valid(loinc) if loinc else None, **own})
    seen: dict[str, float | None] = {}
    keys: set[str] = set()
    for j, comp in enumerate(comps or ()):
        if not isinstance(comp, dict):
            rec.attempt(rec.reject, IssueCode.INVALID_FIELD, "component must be an object",
                        rec.path(f"component[{j}]"))
            continue
        c_found = rec.attempt(fhir_read.codings, rec, comp.get("code"), f"component[{j}].code")
        c_loinc, c_other = (None, None) if c_found is None else \
            rec.attempt(_code, rec, c_found, f"component[{j}].code") or (None, None)
        c_code = c_loinc or c_other
        c_absent = _absent(rec, comp, f"component[{j}].")
        value = rec.attempt(_value, rec, comp, c_loinc, f"component[{j}].", c_absent)
        if c_code is None:
            continue
        if value is None:
            value = {**_EMPTY, "data_absent_reason": c_absent or absent}
        seen[c_code] = value["value"]
        # pid#code as before; a repeated code (two systolic readings) adds its index for a unique key,
        # the first occurrence keeps pid#code (the key of the row stored before keys were unique)
        key = f"{rec.pid}#{c_code}"
        key = f"{key}#{j}" if key in keys else key
        keys.add(key)
        rows.append({**base, "record_key": key, "loinc": c_code,
                     "panel_loinc": loinc or other,
                     "loinc_valid": codes.loinc_valid(c_loinc) if c_loinc else None, **value})
    if loinc in units.BP_PANELS and not rec.failed:
        _check_bp(rec, seen)
    # A grouping panel (hasMember, e.g. vital signs 85353-1) needs no value (R4 vs-2). Its members are
    # other resources (not rows of this one, unlike components), so the panel keeps its null-valued row:
    # every accepted record is in the store (fhir.py), and the row is the same as before, minus the warning.
    members = isinstance(res.get("hasMember"), list) and bool(res["hasMember"])
    if no_value and not comps and not members and own is not None and own["data_absent_reason"] is None:
        rec.warn(
            IssueCode.VALUE_MISSING,
            "Observation has no value, no components and no dataAbsentReason: stored without a value",
            rec.path("value[x]"),
        )
    if rec.failed:
        raise Reject
    return rows


_EMPTY: dict[str, Any] = {"value": None, "unit": None, "original_value": None, "original_unit": None,
                          "value_code": None, "data_absent_reason": None, "value_comparator": None}
COMPARATORS = frozenset({"<", "<=", ">=", ">"})  # R4 quantity-comparator ("ad" is R5 only)


_SNOMED_INVALID = "code under the SNOMED CT system is not an SCTID (digits, partition, Verhoeff check)"


def _absent(rec: Rec, res: dict, prefix: str) -> str | None:
    """``system|code`` of a dataAbsentReason (``|unknown`` when it has text only; a wrongly typed one
    rejects the record)."""
    concept = res.get("dataAbsentReason")
    if concept is None:
        return None
    field = f"{prefix}dataAbsentReason"
    found = rec.attempt(fhir_read.codings, rec, concept, field) or []
    kept = [c for c in found if storable(rec, c, field)]  # text that is no code: never stored
    return pair(rec, kept[0], field) if kept else "|unknown"


_CATEGORY = same(OBSERVATION_CATEGORY)


def _category(rec: Rec, cats: Any) -> str | None:
    """The first observation-category code of the categories, else the first other code shaped like a
    code (every category type-checked; text that is no code is never stored)."""
    found = [(k, c) for k, cat in enumerate(fhir_read.array(rec, cats, "category"))
             for c in fhir_read.codings(rec, cat, f"category[{k}]")]
    hit = next((_CATEGORY[c[2].strip().lower()] for _, c in found if c[2].strip().lower() in _CATEGORY), None)
    return hit or next((c[2] for k, c in found if storable(rec, c, f"category[{k}]")), None)


def _effective(rec: Rec, res: dict) -> Any:
    """When the observation was made: effective[x] (a period's start, else its end); without one, when
    the result was issued. Each fallback, and an observation left undated, is said in a warning."""
    if "effectiveDateTime" in res:
        return rec.time(res, "effectiveDateTime")
    if "effectiveInstant" in res:
        return rec.time(res, "effectiveInstant")
    if "effectivePeriod" in res:
        start = rec.time(res, "effectivePeriod", sub="start")
        if start is not None:
            return start
        end = rec.time(res, "effectivePeriod", sub="end")
        if end is not None:
            rec.warn(IssueCode.MISSING_FIELD, "effectivePeriod has no start: dated by its end",
                     rec.path("effectivePeriod.start"))
            return end
    issued = rec.time(res, "issued")
    timing = " (effectiveTiming is not stored)" if "effectiveTiming" in res else ""
    if issued is not None:
        rec.warn(IssueCode.MISSING_FIELD, f"no effective time{timing}: dated by issued, when the result "
                 "was released", rec.path("effectiveDateTime"))
    else:
        rec.warn(IssueCode.MISSING_FIELD, f"no effective time{timing} and no issued: stored undated",
                 rec.path("effectiveDateTime"))
    return issued


def _check_bp(rec: Rec, seen: dict[str, float | None]) -> None:
    missing = [name for code, name in ((units.SBP, "systolic"), (units.DBP, "diastolic")) if code not in seen]
    if missing:
        rec.warn(
            IssueCode.MISSING_FIELD,
            f"blood-pressure panel lacks its {' and '.join(missing)} component",
            rec.path("component"),
        )
        return
    sbp, dbp = seen[units.SBP], seen[units.DBP]
    if sbp is not None and dbp is not None and sbp <= dbp:
        rec.reject(
            IssueCode.VALUE_IMPOSSIBLE,
            f"systolic {number(sbp)} mm[Hg] is not above diastolic {number(dbp)} mm[Hg]",
            rec.path("component"),
        )


def _code(rec: Rec, found: list[fhir_read.Coding], field: str) -> tuple[str | None, str | None]:
    """(LOINC code, other "system|code") of a CodeableConcept's codings (:func:`.fhir_read.codings`);
    rejects a missing code."""
    if not found:
        rec.reject(
            IssueCode.MISSING_FIELD,
            f"{field}.coding with at least one code is required",
            rec.path(f"{field}.coding"),
        )
    kept = [c for c in found if storable(rec, c, field)]  # an SSN under LOINC is no code: never stored
    if found and not kept:
        lost_loinc = any(rec.ctx.system_name(system) == codes.LOINC for _, system, _ in found)
        rec.reject(IssueCode.LOINC_INVALID if lost_loinc else IssueCode.CODE_NOT_STORED,
                   f"{field} has no coding shaped like a code: the observation is not stored",
                   rec.path(f"{field}.coding"))
    other = None
    loincs: list[tuple[int, str]] = []
    for j, system, raw in kept:
        code, name = raw.strip(), rec.ctx.system_name(system)
        if name == codes.LOINC:
            loincs.append((j, code))
            continue
        if name == codes.SNOMED and not codes.snomed_valid(code):
            rec.warn(IssueCode.SNOMED_INVALID, _SNOMED_INVALID, rec.path(f"{field}.coding[{j}].code"))
        other = other or pair(rec, (j, system, raw), field, code)
    if loincs:
        # EHRs list a panel or section code (8716-3 Vital signs) before the measurement's own (9279-1):
        # the first code we know the unit of wins, else the first LOINC code
        j, code = next(((j, c) for j, c in loincs if c in units.CANONICAL), loincs[0])
        if not codes.loinc_valid(code):
            rec.warn(
                IssueCode.LOINC_INVALID,
                describe("LOINC code", code, "fails the format or mod-10 check digit", Syntax.LOINC),
                rec.path(f"{field}.coding[{j}].code"),
            )
        return code, None
    rec.warn(
        IssueCode.CODE_SYSTEM_UNKNOWN, "no LOINC coding; kept as system|code", rec.path(f"{field}.coding")
    )
    return None, other


def _value(rec: Rec, res: dict, loinc: str | None, prefix: str, absent: str | None) -> dict | None:
    """Value columns of an Observation or component (``absent``: its dataAbsentReason, :func:`_absent`),
    or None when it has no value[x]."""
    empty = {**_EMPTY, "data_absent_reason": absent}
    q = res.get("valueQuantity")
    if q is not None:
        path = f"{prefix}valueQuantity"
        if not isinstance(q, dict):
            rec.reject(IssueCode.INVALID_FIELD, "valueQuantity must be an object", rec.path(path))
        raw = q.get("value")
        if raw is None:
            rec.warn(IssueCode.VALUE_MISSING, "valueQuantity has no value", rec.path(f"{path}.value"))
            return empty
        if _finite(raw) is None:
            rec.reject(
                IssueCode.INVALID_FIELD,
                "valueQuantity.value must be a finite number",
                rec.path(f"{path}.value"),
            )
        comparator = q.get("comparator")
        if comparator is not None and (not isinstance(comparator, str) or comparator not in COMPARATORS):
            rec.reject(IssueCode.INVALID_FIELD, "valueQuantity.comparator is not <, <=, >= or >",
                       rec.path(f"{path}.comparator"))
        if comparator is not None:
            rec.warn(
                IssueCode.VALUE_CENSORED,
                "valueQuantity has a comparator: the value is a bound, stored with value_comparator",
                rec.path(f"{path}.comparator"),
            )
        for key in ("unit", "system", "code"):  # Quantity's string / uri / code primitives
            fhir_read.string(rec, q, key, path)
        unit, unit_path = _quantity_unit(rec, q, path, loinc)
        out = {
            **empty,
            "original_value": float(raw),
            "original_unit": unit if isinstance(unit, str) and units.looks_like_unit(unit) else None,
            "value_comparator": comparator,
        }
        if unit is _CONFLICT:  # code and display unit disagree, and no UCUM system says which is right
            return out
        if loinc is None:
            out["value"], out["unit"] = float(raw), units.ucum(unit) or out["original_unit"]
            _warn_non_ucum(rec, unit, unit_path, None)
            return out
        try:
            out["value"], out["unit"] = units.convert(
                loinc, float(raw), unit if isinstance(unit, str) else None
            )
            _warn_non_ucum(rec, unit, unit_path, loinc)
        except units.UnitError as e:
            if e.code == IssueCode.UNIT_UNKNOWN:
                kept = "original_value, original_unit" if out["original_unit"] else "original_value"
                rec.warn(IssueCode.UNIT_UNKNOWN, f"{e}; the value is kept as sent ({kept}), not as a "
                         "canonical value", rec.path(unit_path))
            elif e.code == IssueCode.VALUE_IMPOSSIBLE:
                rec.reject(IssueCode.VALUE_IMPOSSIBLE, str(e), rec.path(f"{path}.value"))
            else:
                rec.reject(e.code, str(e), rec.path(unit_path))
        return out
    cc = res.get("valueCodeableConcept")
    if cc is not None:
        field = f"{prefix}valueCodeableConcept"
        found = [c for c in fhir_read.codings(rec, cc, field) if storable(rec, c, field)]
        if not found:
            return empty  # text only, or text that is no code: free text is dropped
        return {**empty, "value_code": pair(rec, min(found, key=lambda c: _standard_rank(rec, c)), field)}
    for key in ("valueInteger", "valueBoolean"):
        if key in res:
            v = res[key]
            if not isinstance(v, int):
                rec.reject(
                    IssueCode.INVALID_FIELD, f"{key} has the wrong JSON type", rec.path(f"{prefix}{key}")
                )
            if not isinstance(v, bool) and _finite(v) is None:  # 309+ digits: past any float
                rec.reject(IssueCode.INVALID_FIELD, f"{key} is too large", rec.path(f"{prefix}{key}"))
            if loinc is not None and not isinstance(v, bool):
                try:
                    units.check_range(loinc, float(v))
                except units.UnitError as e:
                    rec.reject(IssueCode.VALUE_IMPOSSIBLE, str(e), rec.path(f"{prefix}{key}"))
            return {**empty, "value": float(v), "original_value": float(v)}
    for key in res:
        if key.startswith("value"):  # valueString, valueDateTime, ...: free text and other types
            rec.warn(
                IssueCode.NOT_STORED,
                f"{field_key(key)} is not stored (only Quantity, CodeableConcept, integer and boolean "
                "values are); the observation is stored without its value",
                rec.path(f"{prefix}{field_key(key)}"),
            )
            return empty
    return None


def _finite(raw: Any) -> float | None:
    """A JSON number as a finite float; None for any other type, NaN/infinity and integers too large for a
    float (``float()`` of a 309-digit integer raises OverflowError)."""
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return None
    try:
        value = float(raw)
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


def _standard_rank(rec: Rec, found: fhir_read.Coding) -> tuple[int, int]:
    """Which coding of a coded result is stored (lowest first): the codings of one CodeableConcept name
    the same result (R4 2.24.0.2), and EHRs list their local code first. The lab syndromes match
    SNOMED CT and LOINC answer codes (``syndromes.POSITIVE``), so SNOMED CT (a valid SCTID) wins, then
    LOINC, then any other system we know, then the first coding."""
    j, system, code = found
    name = rec.ctx.system_name(system)
    if name == codes.SNOMED:
        rank = 0 if codes.snomed_valid(code.strip()) else 3
    else:
        rank = 1 if name == codes.LOINC else 3 if name == codes.OTHER else 2
    return rank, j


_CONFLICT = object()  # a Quantity's unit that cannot be read: its code and display unit disagree


def _quantity_unit(rec: Rec, q: dict, path: str, loinc: str | None) -> tuple[Any, str]:
    """(unit to read, its path) of a Quantity. Under UCUM (:func:`.units.is_ucum_system`: its URI, OID or
    a near miss) the ``code`` is read (FHIR: the code is the computable one), and a display ``unit``
    naming another unit is a UNIT_CONFLICT warning. Without a UCUM system the display unit is read, but
    one that names another unit than the ``code`` is never read silently: UNIT_CONFLICT, and ``_CONFLICT``
    (the value is kept as sent, in original_value only)."""
    shown, code = q.get("unit"), q.get("code")
    coded = isinstance(code, str) and bool(code.strip())
    if coded and units.is_ucum_system(q.get("system")):
        _check_unit_conflict(rec, shown, code, path, loinc, ucum=True)
        return code, f"{path}.code"
    if coded and _check_unit_conflict(rec, shown, code, path, loinc, ucum=False):
        return _CONFLICT, f"{path}.unit"
    return shown, f"{path}.unit"


def _check_unit_conflict(rec: Rec, shown: object, code: str, path: str, loinc: str | None, *,
                         ucum: bool) -> bool:
    """Warns (UNIT_CONFLICT) and returns True when the display ``unit`` and the ``code`` name other units;
    the warning says which one is read (``ucum``: the code, under a UCUM system; else neither)."""
    if not isinstance(shown, str):
        return False
    read_shown, read_code = units.ucum(shown, loinc), units.ucum(code, loinc)
    if read_shown is None or read_code is None or read_shown == read_code:
        return False
    what = "its UCUM code" if ucum else "its code (system not UCUM)"
    outcome = (f"the value is read in {read_code!r}" if ucum else
               "neither is read: the value is kept as sent (original_value), not as a canonical value")
    rec.warn(IssueCode.UNIT_CONFLICT, f"valueQuantity.unit names {read_shown!r} but {what} is "
             f"{read_code!r}: {outcome}", rec.path(f"{path}.unit"))
    return True


def _warn_non_ucum(rec: Rec, unit: object, path: str, loinc: str | None) -> None:
    read_as = units.non_ucum(unit, loinc) if isinstance(unit, str) else None
    if read_as is not None:
        rec.warn(
            IssueCode.UNIT_NOT_UCUM,
            describe("unit", unit, f"is not a UCUM code: read as {read_as!r}", Syntax.UNIT),
            rec.path(path),
        )
