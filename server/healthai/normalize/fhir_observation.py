"""FHIR Observation → observation rows (vital signs, labs, blood-pressure panels with components)."""

from __future__ import annotations

import math
from typing import Any

from healthai.normalize import codes, units
from healthai.normalize.fhir_resources import OBSERVATION_STATUS, Rec
from healthai.normalize.records import IssueCode
from healthai.normalize.redact import Syntax, describe, number


def normalize_observation(rec: Rec, res: dict) -> list[dict]:
    status = rec.code_str(res, "status", OBSERVATION_STATUS, required=True)
    loinc, other = _code(rec, res.get("code"), "code")
    patient = rec.linked_id(res, "subject", "Patient", required=True)
    encounter = rec.linked_id(res, "encounter", "Encounter", required=False)
    if "effectiveDateTime" in res:
        effective = rec.time(res, "effectiveDateTime")
    elif "effectiveInstant" in res:
        effective = rec.time(res, "effectiveInstant")
    else:
        effective = rec.time(res, "effectivePeriod", sub="start")
    category = None
    cats = res.get("category")
    if isinstance(cats, list):
        for c in cats:
            codings = c.get("coding") if isinstance(c, dict) else None
            if isinstance(codings, list) and codings and isinstance(codings[0], dict):
                category = codings[0].get("code")
                break
    base = {
        "source": rec.source,
        "resource_id": rec.pid,
        "patient_id": patient,
        "encounter_id": encounter,
        "region": rec.patient_region(res, "subject"),
        "status": status,
        "category": category,
        "effective": effective,
    }
    rows: list[dict] = []
    own = _value(rec, res, loinc, "")
    if own is not None:
        rows.append({**base, "record_key": rec.pid, "loinc": loinc or other, "panel_loinc": None, **own})
    comps = res.get("component")
    if comps is not None and not isinstance(comps, list):
        rec.reject(IssueCode.INVALID_FIELD, "component must be an array", rec.path("component"))
    seen: dict[str, float | None] = {}
    for j, comp in enumerate(comps or ()):
        if not isinstance(comp, dict):
            rec.reject(IssueCode.INVALID_FIELD, "component must be an object", rec.path(f"component[{j}]"))
        c_loinc, c_other = _code(rec, comp.get("code"), f"component[{j}].code")
        c_code = c_loinc or c_other
        value = _value(rec, comp, c_loinc, f"component[{j}].")
        if value is None or c_code is None:
            continue
        seen[c_code] = value["value"]
        rows.append(
            {
                **base,
                "record_key": f"{rec.pid}#{c_code}",
                "loinc": c_code,
                "panel_loinc": loinc or other,
                **value,
            }
        )
    if loinc in units.BP_PANELS:
        _check_bp(rec, seen)
    if not rows and own is None and not comps and "dataAbsentReason" not in res:
        rec.warn(
            IssueCode.VALUE_MISSING,
            "Observation has no value, no components and no dataAbsentReason",
            rec.path("value[x]"),
        )
    return rows


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


def _code(rec: Rec, concept: Any, field: str) -> tuple[str | None, str | None]:
    """(LOINC code, other "system|code") of a CodeableConcept; rejects a missing code."""
    codings = concept.get("coding") if isinstance(concept, dict) else None
    if not isinstance(codings, list) or not any(isinstance(c, dict) and c.get("code") for c in codings):
        rec.reject(
            IssueCode.MISSING_FIELD,
            f"{field}.coding with at least one code is required",
            rec.path(f"{field}.coding"),
        )
    other = None
    for j, c in enumerate(codings):
        if not isinstance(c, dict) or not c.get("code"):
            continue
        code = str(c["code"]).strip()
        if codes.system_name(c.get("system")) == codes.LOINC:
            if not codes.loinc_valid(code):
                rec.warn(
                    IssueCode.LOINC_INVALID,
                    describe("LOINC code", code, "fails the format or mod-10 check digit", Syntax.LOINC),
                    rec.path(f"{field}.coding[{j}].code"),
                )
            return code, None
        other = other or f"{c.get('system') or ''}|{code}"
    rec.warn(
        IssueCode.CODE_SYSTEM_UNKNOWN, "no LOINC coding; kept as system|code", rec.path(f"{field}.coding")
    )
    return None, other


def _value(rec: Rec, res: dict, loinc: str | None, prefix: str) -> dict | None:
    """Value columns of an Observation or component, or None when it has no value[x]."""
    empty = {"value": None, "unit": None, "original_value": None, "original_unit": None, "value_code": None}
    q = res.get("valueQuantity")
    if q is not None:
        path = f"{prefix}valueQuantity"
        if not isinstance(q, dict):
            rec.reject(IssueCode.INVALID_FIELD, "valueQuantity must be an object", rec.path(path))
        raw = q.get("value")
        if raw is None:
            rec.warn(IssueCode.VALUE_MISSING, "valueQuantity has no value", rec.path(f"{path}.value"))
            return empty
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
            rec.reject(
                IssueCode.INVALID_FIELD,
                "valueQuantity.value must be a finite number",
                rec.path(f"{path}.value"),
            )
        if q.get("comparator") is not None:
            rec.warn(
                IssueCode.VALUE_CENSORED,
                "valueQuantity has a comparator: the value is a bound, stored as is",
                rec.path(f"{path}.comparator"),
            )
        unit = q.get("code") if q.get("system") == codes.UCUM_SYSTEM and q.get("code") else q.get("unit")
        unit_path = f"{path}.code" if unit is q.get("code") else f"{path}.unit"
        out = {
            **empty,
            "original_value": float(raw),
            "original_unit": unit if isinstance(unit, str) else None,
        }
        if loinc is None:
            out["value"], out["unit"] = float(raw), units.ucum(unit) or out["original_unit"]
            return out
        try:
            out["value"], out["unit"] = units.convert(
                loinc, float(raw), unit if isinstance(unit, str) else None
            )
        except units.UnitError as e:
            if e.code == IssueCode.UNIT_UNKNOWN:
                rec.warn(IssueCode.UNIT_UNKNOWN, f"{e}; value kept unconverted", rec.path(unit_path))
            elif e.code == IssueCode.VALUE_IMPOSSIBLE:
                rec.reject(IssueCode.VALUE_IMPOSSIBLE, str(e), rec.path(f"{path}.value"))
            else:
                rec.reject(e.code, str(e), rec.path(unit_path))
        return out
    cc = res.get("valueCodeableConcept")
    if cc is not None:
        codings = cc.get("coding") if isinstance(cc, dict) else None
        for c in codings if isinstance(codings, list) else ():
            if isinstance(c, dict) and c.get("code"):
                return {**empty, "value_code": f"{c.get('system') or ''}|{c['code']}"}
        return empty  # text only: free text is dropped
    for key in ("valueInteger", "valueBoolean"):
        if key in res:
            v = res[key]
            if not isinstance(v, int):
                rec.reject(
                    IssueCode.INVALID_FIELD, f"{key} has the wrong JSON type", rec.path(f"{prefix}{key}")
                )
            if loinc is not None and not isinstance(v, bool):
                try:
                    units.check_range(loinc, float(v))
                except units.UnitError as e:
                    rec.reject(IssueCode.VALUE_IMPOSSIBLE, str(e), rec.path(f"{prefix}{key}"))
            return {**empty, "value": float(v), "original_value": float(v)}
    if any(k.startswith("value") for k in res):
        return empty  # valueString, valueDateTime, ...: free text and other types are not stored
    return None
