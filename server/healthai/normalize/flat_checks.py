"""Vectorized building blocks of the flat path: column access, per-row flags, code and unit checks.

Per-row checks run once per *distinct* value (codes, units, ids) and are broadcast back with
``take``; masks are numpy booleans. Messages quote a value only through :mod:`.redact`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from healthai.errors import InvalidInput
from healthai.normalize import codes, units
from healthai.normalize.context import NormalizeContext
from healthai.normalize.fhir_types import parse_datetime
from healthai.normalize.gc_pause import gc_paused
from healthai.normalize.identity import Pseudonymizer, region_code
from healthai.normalize.records import Issue, RecordOutcome, Severity, Status
from healthai.normalize.redact import Syntax, describe

SEX_VALUES = {
    "male": "male",
    "female": "female",
    "other": "other",
    "unknown": "unknown",
    "m": "male",
    "f": "female",
    "o": "other",
    "u": "unknown",
}
_TS = pa.timestamp("us", tz="UTC")


def np_mask(arr: Any) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def scalar_day(ctx: NormalizeContext) -> pa.Scalar:
    return pa.scalar(ctx.latest_allowed(), _TS)


class Flags:
    """Per-row issues, collected as (mask, code, message, column, severity) and expanded at the end."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._items: list[tuple[np.ndarray, str, Any, str, Severity]] = []

    def add(
        self, mask: np.ndarray, code: str, message: str | np.ndarray, column: str, *, error: bool
    ) -> None:
        if mask.any():
            self._items.append((mask, code, message, column, Severity.ERROR if error else Severity.WARNING))

    def rejected(self) -> np.ndarray:
        out = np.zeros(self.n, dtype=bool)
        for mask, _c, _m, _col, sev in self._items:
            if sev is Severity.ERROR:
                out |= mask
        return out

    def duplicates(self, key: pa.Array, column: str) -> None:
        """Reject every row whose key repeats an earlier row of the table."""
        enc = (
            pc.dictionary_encode(key).combine_chunks()
            if isinstance(key, pa.ChunkedArray)
            else pc.dictionary_encode(key)
        )
        idx = pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False)
        _, first = np.unique(idx, return_index=True)
        dup = np.ones(self.n, dtype=bool)
        dup[first] = False
        dup &= idx >= 0
        self.add(dup, "DUPLICATE_ID", "id repeats an earlier row of this batch", column, error=True)

    def outcomes(self, resource_type: str, source_ids: pa.Array) -> list[RecordOutcome]:
        """One outcome per row; each row's issues in the order the checks flagged them."""
        sids = source_ids.to_pylist()
        accepted = Status.ACCEPTED
        flagged = np.zeros(self.n, dtype=bool)
        with gc_paused():  # 100k small objects: generational GC passes would double the cost
            out = [RecordOutcome(i, resource_type, sid or "", accepted, []) for i, sid in enumerate(sids)]
            for mask, code, message, column, sev in self._items:
                flagged |= mask
                rows = np.flatnonzero(mask).tolist()
                texts = [message] * len(rows) if isinstance(message, str) else [str(message[i]) for i in rows]
                suffix = f"].{column}"
                for i, text in zip(rows, texts, strict=True):
                    out[i].issues.append(Issue(code, text, f"[{i}{suffix}", sev))
        rejected = self.rejected()
        warned = flagged & ~rejected
        for status, which in ((Status.ACCEPTED_WITH_WARNINGS, warned), (Status.REJECTED, rejected)):
            for i in np.flatnonzero(which).tolist():
                out[i].status = status
        return out


class Cols:
    """Typed access to the input table's columns; conversion failures become per-row flags."""

    def __init__(self, table: pa.Table, flags: Flags, kind: str) -> None:
        self.table, self.flags, self.kind, self.n = table, flags, kind, table.num_rows

    def column(self, name: str, typ: pa.DataType) -> pa.Array | None:
        if name not in self.table.column_names:
            return None
        col = self.table.column(name).combine_chunks()
        if col.type == typ:
            return col
        try:
            return pc.cast(col, typ)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise InvalidInput(f"{self.kind}.{name} must be {typ}, got {col.type}", field=name) from None

    def string(self, name: str, *, required: bool = False) -> pa.Array | None:
        col = self.column(name, pa.string())
        if col is None:
            return None
        if required:
            empty = pc.or_kleene(pc.is_null(col), pc.equal(pc.utf8_trim_whitespace(col), ""))
            self.flags.add(np_mask(empty), "MISSING_FIELD", f"{name} is required", name, error=True)
        return col

    def time(self, name: str, ctx: NormalizeContext) -> pa.Array | None:
        if name not in self.table.column_names:
            return None
        col = self.table.column(name).combine_chunks()
        if pa.types.is_timestamp(col.type):
            out = col if col.type.tz else pc.assume_timezone(col, "UTC")
            out = pc.cast(out, _TS)
        elif pa.types.is_date(col.type):
            out = pc.assume_timezone(pc.cast(col, pa.timestamp("us")), "UTC")
        elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type) or pa.types.is_null(col.type):
            out = self._parse_strings(col, name)
        else:
            raise InvalidInput(
                f"{self.kind}.{name} must be a date, timestamp or ISO string, got {col.type}", field=name
            )
        late = pc.greater(out, scalar_day(ctx))
        self.flags.add(np_mask(late), "DATE_IMPOSSIBLE", f"{name} is in the future{ctx.future_hint()}", name,
                       error=True)
        return out

    def _parse_strings(self, col: pa.Array, name: str) -> pa.Array:
        try:
            return pc.cast(col, _TS)  # all ISO date-times with offsets: one vectorized cast
        except pa.ArrowInvalid:
            pass
        days = pc.assume_timezone(pc.strptime(col, format="%Y-%m-%d", unit="us", error_is_null=True), "UTC")
        rest = np.flatnonzero(np_mask(pc.and_kleene(pc.is_valid(col), pc.is_null(days))))
        if len(rest) == 0:
            return days
        values = days.to_pylist()
        bad = np.zeros(len(col), dtype=bool)
        for i in rest.tolist():
            try:
                values[i] = parse_datetime(col[i].as_py())
            except ValueError:
                bad[i] = True
        self.flags.add(bad, "INVALID_FIELD", f"{name} is not an ISO-8601 date or date-time", name, error=True)
        return pa.array(values, _TS)

    def region(self) -> pa.Array:
        explicit = self.string("region")
        if explicit is not None:
            explicit = pc.utf8_upper(pc.utf8_trim_whitespace(explicit))
            ok = pc.match_substring_regex(explicit, r"^[A-Z]{2}-[A-Z0-9]{1,3}$")
            bad = np_mask(pc.and_kleene(pc.is_valid(explicit), pc.invert(ok)))
            self.flags.add(
                bad,
                "INVALID_FIELD",
                "region must be an ISO 3166-2 code like US-MA; stored as unknown",
                "region",
                error=False,
            )
            explicit = pc.if_else(pa.array(bad), pa.scalar(None, pa.string()), explicit)
        state = self.string("state")
        if state is None:
            return explicit if explicit is not None else pa.nulls(self.n, pa.string())
        country = self.string("country")
        if country is None:
            derived = map_values(state, None, fn=lambda s: region_code(s, None))
        else:
            joined = pc.binary_join_element_wise(pc.fill_null(state, ""), pc.fill_null(country, ""), "\x1f")
            derived = map_values(joined, None, fn=lambda s: region_code(*s.split("\x1f", 1)))
        return derived if explicit is None else pc.coalesce(explicit, derived)


def map_values(arr: pa.Array, table: dict | None, *, fn: Any = None) -> pa.Array:
    """Apply a dict (on lower-cased values) or a function once per distinct value; None stays null."""
    enc = pc.dictionary_encode(arr)
    uniq = enc.dictionary.to_pylist()
    mapped = [table.get(str(u).strip().lower()) for u in uniq] if table is not None else [fn(u) for u in uniq]
    return pc.take(pa.array(mapped, pa.string()), enc.indices)


def pseudonyms(ps: Pseudonymizer, system: str, ids: pa.Array | None) -> pa.Array | None:
    if ids is None:
        return None
    enc = pc.dictionary_encode(ids)
    uniq = enc.dictionary.to_pylist()
    out = ps.many(system, uniq)
    return pc.take(pa.array(out, pa.string()), enc.indices)


def condition_codes(t: Cols, ctx: NormalizeContext) -> dict[str, Any]:
    """code, code_system, icd10/icd9/snomed columns; flags invalid and unmapped codes per row."""
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
        if r[6] is not None:
            err_code, msg = r[6]
            t.flags.add(idx_np == j, err_code, msg, "code", error=False)
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


def _code_one(system: str, code: str, ctx: NormalizeContext) -> tuple:
    name = _SHORT.get(system.strip().upper()) or ctx.system_name(system)
    icd10 = icd9 = snomed = None
    mapped, issue = False, None
    value = code.strip()
    if name == codes.ICD10CM:
        icd10 = codes.canonical_icd10(code, ctx.icd10)
        value = icd10 or value.upper()
        if icd10 is None:
            issue = (
                "ICD10_INVALID",
                describe("code", code, f"is not in ICD-10-CM ({ctx.icd10.release})", Syntax.ICD10),
            )
        elif ctx.snomed_map is not None:
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
        targets = ctx.snomed_map.snomed_to_icd10(value) if ctx.snomed_map else []
        if targets:
            icd10, mapped = targets[0], True
        else:
            why = (
                "no SNOMED CT → ICD-10-CM map is loaded"
                if ctx.snomed_map is None
                else "not in the loaded map"
            )
            issue = (
                "CODE_UNMAPPED",
                describe("SNOMED CT code", value, f"has no ICD-10-CM code: {why}", Syntax.SNOMED),
            )
    else:
        value = f"{system}|{value}"
        issue = (
            "CODE_SYSTEM_UNKNOWN",
            describe("code_system", system, "is not ICD-10-CM, ICD-9-CM or SNOMED CT", _SHORT),
        )
    snomed_mapped = name == codes.ICD10CM and snomed is not None
    return name, value, icd10, icd9, snomed, mapped, issue, snomed_mapped


def observation_values(t: Cols) -> dict[str, Any]:
    """Canonical values/units per (loinc, unit) pair, LOINC check digits, possible ranges."""
    loinc = pc.utf8_trim_whitespace(t.string("loinc", required=True))
    value = t.column("value", pa.float64())
    unit = t.string("unit")
    if unit is None:
        unit = pa.nulls(t.n, pa.string())
    panel = t.string("panel_loinc")
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
        read_as = units.non_ucum(u) if u != "\x00" else None
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
    conv = raw * factor[idx] + offset[idx]
    with np.errstate(invalid="ignore"):
        impossible = (~np.isfinite(raw) & ~np.isnan(raw)) | (
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
    bad_loinc = [c for c in luniq.to_pylist() if c is not None and not codes.loinc_valid(c)]
    bad_mask = np_mask(pc.is_in(loinc, pa.array(bad_loinc, pa.string())))
    if bad_loinc:
        f.add(
            bad_mask,
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
        "original_unit": unit,
        "loinc_valid": pa.array(~bad_mask, pa.bool_(), mask=np_mask(pc.is_null(loinc))),
    }


def _range_msgs(loinc: pa.Array, conv: np.ndarray, mask: np.ndarray) -> np.ndarray:
    msgs = np.empty(len(conv), dtype=object)
    lo = loinc.to_pylist() if mask.any() else []
    for i in np.flatnonzero(mask).tolist():
        spec = units.CANONICAL.get(lo[i] or "")
        msgs[i] = units.out_of_range(spec, float(conv[i])) if spec else "value is not a finite number"
    return msgs


__all__ = ["Cols", "Flags", "condition_codes", "map_values", "observation_values", "pseudonyms", "scalar_day"]
