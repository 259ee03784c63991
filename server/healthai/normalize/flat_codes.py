"""Flat path: code and value checks of condition and observation rows, vectorized (each distinct code
or unit checked once, broadcast back with ``take``). Messages quote a value only through :mod:`.redact`.

Condition codes get the FHIR path's checks (:func:`.codes.check_icd10`: WHO-only codes under a WHO
ICD-10 URI, ICD10_NOT_BILLABLE, misplaced dots); a flat row carries no sex or birth date, so a SNOMED CT
concept whose map rules depend on them is left unmapped with a CODE_UNMAPPED issue saying so. A row whose
code is not shaped like a code is not stored (NOT_STORED), as over FHIR.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from healthai.normalize import codes, units
from healthai.normalize.context import NormalizeContext
from healthai.normalize.flat_checks import Cols, np_mask
from healthai.normalize.redact import Syntax, describe, withheld


def condition_codes(t: Cols, ctx: NormalizeContext) -> dict[str, Any]:
    """code, code_system, icd10/icd9/snomed columns; flags invalid and unmapped codes per row.
    ``_not_stored``: rows whose code is not shaped like a code (accepted with a warning, not stored)."""
    code = t.string("code", required=True)
    system = t.string("code_system")
    system = (
        pa.array([codes.ICD10CM] * t.n, pa.string())
        if system is None
        else pc.fill_null(system, codes.ICD10CM)
    )
    pair = pc.binary_join_element_wise(system, pc.fill_null(code, ""), "\x1f")
    enc = pc.dictionary_encode(pair)
    results = [_code_one(*u.split("\x1f", 1), ctx) for u in enc.dictionary.to_pylist()]
    idx = enc.indices
    cols = {}
    for j, name in enumerate(("code_system", "code", "icd10_code", "icd9_code", "snomed_code")):
        cols[name] = pc.take(pa.array([r[j] for r in results], pa.string()), idx)
    cols["icd10_mapped"] = pc.take(pa.array([r[5] for r in results], pa.bool_()), idx)
    cols["snomed_mapped"] = pc.take(pa.array([r[7] for r in results], pa.bool_()), idx)
    idx_np = idx.to_numpy(zero_copy_only=False)
    for j, r in enumerate(results):
        for err_code, msg in r[6]:
            t.flags.add(idx_np == j, err_code, msg, "code", error=False)
    cols["_not_stored"] = np.array([r[1] is None for r in results], bool)[idx_np] if results \
        else np.zeros(t.n, bool)
    return cols


_SHORT = {
    codes.ICD10CM: codes.ICD10CM,
    codes.ICD9CM: codes.ICD9CM,
    codes.SNOMED: codes.SNOMED,
    "ICD10": codes.ICD10CM,
    "ICD-10-CM": codes.ICD10CM,
    "ICD9": codes.ICD9CM,
    "ICD-9-CM": codes.ICD9CM,
    "SCT": codes.SNOMED,
    "SNOMEDCT": codes.SNOMED,
}


_SYNTAX = {codes.ICD10CM: "an ICD-10-CM code", codes.ICD9CM: "an ICD-9-CM code",
           codes.SNOMED: "a SNOMED CT concept id"}


def _code_one(system: str, code: str, ctx: NormalizeContext) -> tuple:
    name = _SHORT.get(system.strip().upper()) or ctx.system_name(system)
    icd10 = icd9 = snomed = None
    mapped, issue = False, None
    value = code.strip()
    if not codes.shaped(name, value):
        # not the system's syntax (an SSN under ICD-10-CM, a name, an e-mail): not a code, never stored;
        # nor is the row (as over FHIR)
        problem = f"is not shaped like {_SYNTAX.get(name, 'a code')} (free text): not stored"
        found = [("CODE_NOT_STORED", f"code {problem} {withheld(code)}")]
        if value:  # a blank code is missing: the row is rejected for it
            found.append(("NOT_STORED", "code is not shaped like a code: a condition without a code cannot "
                          "be counted or scored, so it is not stored"))
        return name, None, None, None, None, False, found, False
    if name == codes.ICD10CM:
        who = codes.canonical_uri(system) in codes.WHO_ICD10_SYSTEMS  # WHO-only codes (E14.9) too
        icd10, found = codes.check_icd10(code, ctx.icd10, who=who)
        value = icd10 or value.upper()
        if found is not None:
            issue = (found[0], describe("code", code, found[1], Syntax.ICD10))
        if icd10 is not None and ctx.snomed_map is not None:
            snomed = ctx.snomed_map.unique_snomed(icd10)
    elif name == codes.ICD9CM:
        icd9 = codes.canonical_icd9(code)
        value = icd9 or value.upper()
        if icd9 is None:
            issue = ("ICD9_INVALID", describe("code", code, "is not an ICD-9-CM code", Syntax.ICD9))
    elif name == codes.SNOMED and not codes.snomed_valid(value):  # not an SCTID: never in snomed_code
        name, value = codes.OTHER, f"{system}|{value}"
        problem = "is not an SCTID (digits, partition, Verhoeff check); kept as system|code"
        issue = ("SNOMED_INVALID", describe("SNOMED CT code", code, problem, Syntax.SNOMED))
    elif name == codes.SNOMED:
        snomed = value
        found = ctx.snomed_map.lookup(value) if ctx.snomed_map else None  # no sex or age: unknown
        if found is not None and found.targets:
            icd10, mapped = found.targets[0], True
            _, bad = codes.check_icd10(icd10, ctx.icd10)  # as if sent directly: not reportable
            if bad is not None:
                problem = f"maps to ICD-10-CM {icd10}, which {bad[1]}"
                issue = (bad[0], describe("SNOMED CT code", value, problem, Syntax.SNOMED))
        else:
            why = (
                "no SNOMED CT → ICD-10-CM map is loaded"
                if ctx.snomed_map is None
                else found.reason if found is not None and found.reason
                else "not in the loaded map"
            )
            issue = (
                "CODE_UNMAPPED",
                describe("SNOMED CT code", value, f"has no ICD-10-CM code: {why}", Syntax.SNOMED),
            )
    else:
        named = codes.system_text_ok(system)  # not an e-mail (http://name@host) or a name
        value = f"{system.strip() if named else ''}|{value}"  # other text (a name) is never stored
        problem = "is not ICD-10-CM, ICD-9-CM or SNOMED CT" + (
            "" if named else ", nor a URI or an upper-case system name: not stored")
        issue = ("CODE_SYSTEM_UNKNOWN", describe("code_system", system, problem, _SHORT))
    snomed_mapped = name == codes.ICD10CM and snomed is not None
    return name, value, icd10, icd9, snomed, mapped, [issue] if issue else [], snomed_mapped


def observation_values(t: Cols) -> dict[str, Any]:
    """Canonical values/units per (loinc, unit) pair, LOINC check digits, possible ranges."""
    loinc = pc.utf8_trim_whitespace(t.string("loinc", required=True))
    value, comparator = t.number("value")
    unit = t.string("unit")
    if unit is None:
        unit = pa.nulls(t.n, pa.string())
    panel = _panel_loinc(t)
    pair = pc.binary_join_element_wise(pc.fill_null(loinc, ""), pc.fill_null(unit, "\x00"), "\x1f")
    enc = pc.dictionary_encode(pair)
    idx = enc.indices.to_numpy(zero_copy_only=False)
    uniq = enc.dictionary.to_pylist()
    factor, offset = np.ones(len(uniq)), np.zeros(len(uniq))
    low, high = np.full(len(uniq), -np.inf), np.full(len(uniq), np.inf)
    target: list[str | None] = []
    unknown_unit, bad_unit = np.zeros(len(uniq), bool), np.zeros(len(uniq), bool)
    unit_msgs = np.empty(len(uniq), dtype=object)
    not_ucum = np.zeros(len(uniq), bool)
    not_ucum_msgs = np.empty(len(uniq), dtype=object)
    for j, key in enumerate(uniq):
        lc, u = key.split("\x1f", 1)
        read_as = units.non_ucum(u, lc) if u != "\x00" else None
        if read_as is not None:
            not_ucum[j] = True
            not_ucum_msgs[j] = describe("unit", u, f"is not a UCUM code: read as {read_as!r}", Syntax.UNIT)
        spec = units.CANONICAL.get(lc)
        if u == "\x00":  # flat contract: no unit = the code's canonical unit (kept as sent otherwise)
            u = spec.unit if spec is not None else None
            if u is None:
                target.append(None)
                continue
        try:
            tgt, factor[j], offset[j] = units.conversion(lc, u)
            target.append(tgt)
        except units.UnitError as e:
            target.append(None)
            (unknown_unit if e.code == "UNIT_UNKNOWN" else bad_unit)[j] = True
            unit_msgs[j] = str(e)
            factor[j] = np.nan
        if spec is not None:
            low[j], high[j] = spec.low, spec.high
    raw = np.asarray(pc.fill_null(value, np.nan).to_numpy(zero_copy_only=False), dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # a finite value may overflow in the conversion
        conv = raw * factor[idx] + offset[idx]
        impossible = (~np.isfinite(raw) & ~np.isnan(raw)) | (np.isfinite(raw) & np.isinf(conv)) | (
            np.isfinite(conv) & ((conv < low[idx]) | (conv > high[idx]))
        )
    missing = np.asarray(pc.is_null(value).to_numpy(zero_copy_only=False), bool) | np.isnan(raw)
    f = t.flags
    f.add(missing, "MISSING_FIELD", "value is required (a finite number)", "value", error=True)
    f.add(unknown_unit[idx], "UNIT_UNKNOWN", unit_msgs[idx], "unit", error=False)
    f.add(bad_unit[idx], "UNIT_INCOMPATIBLE", unit_msgs[idx], "unit", error=True)
    f.add(impossible, "VALUE_IMPOSSIBLE", _range_msgs(loinc, conv, impossible), "value", error=True)
    if not_ucum.any():
        converted = not_ucum[idx] & ~impossible & ~missing  # as for FHIR: only on a converted value
        f.add(converted, "UNIT_NOT_UCUM", not_ucum_msgs[idx], "unit", error=False)
    luniq = pc.unique(loinc)
    # not even LOINC's shape (an SSN in the column): the row goes, the text is never stored
    shapeless = [c for c in luniq.to_pylist() if c and not codes.loinc_shaped(c)]
    shapeless_mask = np_mask(pc.is_in(loinc, pa.array(shapeless, pa.string())))
    if shapeless:
        f.add(shapeless_mask, "LOINC_INVALID",
              "loinc is not a LOINC code (digits, a dash, a check digit: 8480-6): not stored", "loinc",
              error=True)
    bad_loinc = [c for c in luniq.to_pylist() if c is not None and not codes.loinc_valid(c)]
    bad_mask = np_mask(pc.is_in(loinc, pa.array(bad_loinc, pa.string())))
    if bad_loinc:
        f.add(
            bad_mask & ~shapeless_mask,
            "LOINC_INVALID",
            "LOINC code fails the format or mod-10 check digit",
            "loinc",
            error=False,
        )
    conv = np.where(np.isfinite(conv), conv, np.nan)
    return {
        "loinc": loinc,
        "panel_loinc": panel if panel is not None else pa.nulls(t.n, pa.string()),
        "value": pa.array(conv, pa.float64(), mask=np.isnan(conv)),
        "unit": pc.take(pa.array(target, pa.string()), pa.array(idx)),
        "original_value": value,
        "original_unit": _unit_text(unit),
        "value_comparator": comparator,
        "loinc_valid": pa.array(~bad_mask, pa.bool_(), mask=np_mask(pc.is_null(loinc))),
    }


def _panel_loinc(t: Cols) -> pa.Array | None:
    """panel_loinc, checked as loinc is: text not even shaped like a LOINC code (an SSN) rejects the row and
    is never stored; a wrong check digit is flagged."""
    panel = t.string("panel_loinc")
    if panel is None:
        return None
    panel = pc.utf8_trim_whitespace(panel)
    uniq = [c for c in pc.unique(panel).to_pylist() if c]
    shapeless = np_mask(pc.is_in(panel, pa.array([c for c in uniq if not codes.loinc_shaped(c)],
                                                 pa.string())))
    t.flags.add(shapeless, "LOINC_INVALID", "panel_loinc is not a LOINC code (digits, a dash, a check digit: "
                "85354-9): not stored", "panel_loinc", error=True)
    bad = np_mask(pc.is_in(panel, pa.array([c for c in uniq if not codes.loinc_valid(c)], pa.string())))
    t.flags.add(bad & ~shapeless, "LOINC_INVALID", "panel_loinc fails the LOINC mod-10 check digit",
                "panel_loinc", error=False)
    empty = pc.equal(panel, "")
    return pc.if_else(pc.or_kleene(pa.array(shapeless), empty), pa.scalar(None, pa.string()), panel)


def _unit_text(unit: pa.Array) -> pa.Array:
    """The units as sent, null where the text is not a unit (a name in the wrong column: never stored)."""
    enc = pc.dictionary_encode(unit)
    keep = [units.looks_like_unit(u) for u in enc.dictionary.to_pylist()]
    shaped = pc.take(pa.array(keep, pa.bool_()), enc.indices)
    return pc.if_else(pc.fill_null(shaped, False), unit, pa.scalar(None, pa.string()))


def _range_msgs(loinc: pa.Array, conv: np.ndarray, mask: np.ndarray) -> np.ndarray:
    msgs = np.empty(len(conv), dtype=object)
    lo = loinc.to_pylist() if mask.any() else []
    for i in np.flatnonzero(mask).tolist():
        spec = units.CANONICAL.get(lo[i] or "")
        if spec is not None and np.isfinite(conv[i]):
            msgs[i] = units.out_of_range(spec, float(conv[i]))
        else:  # no range to name, or a value that overflowed in the conversion
            msgs[i] = "value is not a finite number"
    return msgs


__all__ = ["condition_codes", "observation_values"]
