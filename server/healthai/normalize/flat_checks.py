"""Vectorized building blocks of the flat path: column access (times and their UTC offsets, regions
and counties), per-row flags. Code and unit checks: :mod:`.flat_codes`.

Per-row checks run once per *distinct* value (places, ids) and are broadcast back with
``take``; masks are numpy booleans. Messages quote a value only through :mod:`.redact`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from healthai.errors import InvalidInput
from healthai.normalize.context import NormalizeContext
from healthai.normalize.counties import address_place
from healthai.normalize.fhir_types import parse_datetime
from healthai.normalize.gc_pause import gc_paused
from healthai.normalize.identity import Pseudonymizer, region_code
from healthai.normalize.records import Issue, RecordOutcome, Severity, Status

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


_NUMBER = r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$"
_CENSORED = r"^(?P<op><=|>=|<|>)\s*(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)$"


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

    def number(self, name: str) -> tuple[pa.Array | None, pa.Array | None]:
        """A float64 column and the comparator of each censored result (null elsewhere). Text (a CSV
        column with one non-numeric cell is read as text) is parsed row by row: a censored result (``<5``,
        ``>= 600``) gives its bound and comparator, with a VALUE_CENSORED warning (as FHIR's
        Quantity.comparator); a cell that is not a number (``high``) rejects its row, not the batch."""
        if name not in self.table.column_names:
            return None, None
        col = self.table.column(name).combine_chunks()
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            return self.column(name, pa.float64()), None
        text = pc.utf8_trim_whitespace(col.cast(pa.string()))
        parts = pc.extract_regex(text, _CENSORED)
        comparator = pc.struct_field(parts, "op")
        censored = pc.fill_null(pc.is_valid(comparator), False)
        self.flags.add(np_mask(censored), "VALUE_CENSORED", f"{name} is a censored result: its bound is "
                       "stored, with value_comparator", name, error=False)
        text = pc.if_else(censored, pc.struct_field(parts, "number"), text)
        numeric = pc.match_substring_regex(text, _NUMBER)
        bad = pc.and_kleene(pc.invert(numeric), pc.not_equal(text, ""))
        self.flags.add(np_mask(bad), "VALUE_NOT_NUMERIC", f"{name} is not a number (value withheld)", name,
                       error=True)
        return pc.cast(pc.if_else(numeric, text, pa.scalar(None, pa.string())), pa.float64()), comparator

    def coded(self, name: str, allowed: Mapping[str, str], *, error: bool = False) -> pa.Array | None:
        """A column of codes from a value set (``allowed``: lower-cased spelling -> code). Other text is not
        a code and never stored (it may be a name in the wrong column): null with a warning, or the row
        rejected with ``error``."""
        col = self.string(name)
        if col is None:
            return None
        out = map_values(col, dict(allowed))
        bad = pc.and_kleene(pc.is_null(out), pc.not_equal(pc.utf8_trim_whitespace(col), ""))
        known = ", ".join(sorted(set(allowed.values())))
        self.flags.add(np_mask(bad), "INVALID_FIELD", f"{name} is not one of {known} (value withheld)"
                       + ("" if error else ": not stored"), name, error=error)
        return out

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
            out = pc.cast(out, _TS, safe=False)  # nanoseconds (pandas' default) are cut to microseconds
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
        first = pa.scalar(dt.datetime(ctx.min_birth_year, 1, 1, tzinfo=dt.UTC), _TS)
        early = pc.less(out, first)  # before anyone alive was born: a typo
        self.flags.add(np_mask(early), "DATE_IMPOSSIBLE", f"{name} is before {ctx.min_birth_year}", name,
                       error=True)
        return out

    def local_time(self, name: str, ctx: NormalizeContext) -> pa.Array | None:
        """``time`` moved by the offset it was written in: its year, month and day are the local ones
        (a birth date-time ``1988-12-31T20:00-06:00`` is in December 1988, not in January 1989)."""
        times = self.time(name, ctx)
        offsets = self.utc_offset(name)
        if times is None or offsets is None:
            return times
        micros = pc.multiply(pc.fill_null(pc.cast(offsets, pa.int64()), 0), 60_000_000)
        return pc.add(times, pc.cast(micros, pa.duration("us")))

    def utc_offset(self, name: str) -> pa.Array | None:
        """The UTC offset (minutes) each time of column ``name`` was written in: an ISO string's ``Z`` or
        ``±hh:mm``, or the time zone of a timestamp column. Null for dates, times without a zone
        (read as UTC) and values that are not times."""
        if name not in self.table.column_names:
            return None
        col = self.table.column(name).combine_chunks()
        if pa.types.is_timestamp(col.type) and col.type.tz:
            return _zone_offsets(col)
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            return None
        # the zone is at the end of a date-time: its last 6 characters, parsed once per distinct tail
        tail = pc.if_else(pc.match_substring(col, "T"), pc.utf8_slice_codeunits(col, -6),
                          pa.scalar(None, pa.string()))
        enc = pc.dictionary_encode(tail)
        minutes = [_zone_minutes(t) for t in enc.dictionary.to_pylist()]
        return pc.take(pa.array(minutes, pa.int16()), enc.indices)

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
                values[i] = _parse_time(col[i].as_py())
            except ValueError:
                bad[i] = True
        self.flags.add(bad, "INVALID_FIELD", f"{name} is not an ISO-8601 date or date-time", name, error=True)
        return pa.array(values, _TS)

    def place(self, region: pa.Array) -> tuple[pa.Array, pa.Array]:
        """Region and US county FIPS of each row. The county: from ``county`` (a FIPS or a county name of
        the row's state), else from ``postal_code`` (a ZIP code), else the state's only county (DC). A row
        with no region (nor a country other than the US) is placed by a county FIPS code alone, else by a
        ZIP code alone (its state and county: :func:`.counties.address_place`). A county given but not
        found is flagged and stored unknown; so is a ZIP code that is a row's only place and gives none."""
        county, postal, country = self.string("county"), self.string("postal_code"), self.string("country")
        empty = pa.nulls(self.n, pa.string())
        keys = pc.binary_join_element_wise(*(pc.fill_null(c if c is not None else empty, "")
                                             for c in (region, county, postal, country)), "\x1f")
        enc = pc.dictionary_encode(keys)
        found = [_place(*(p.strip() or None for p in key.split("\x1f")))
                 for key in enc.dictionary.to_pylist()]
        placed = pc.take(pa.array([r for r, _ in found], pa.string()), enc.indices)
        counties = pc.take(pa.array([c for _, c in found], pa.string()), enc.indices)
        stated = np_mask(pc.is_valid(region))
        if county is not None:
            unknown = np_mask(pc.and_kleene(pc.not_equal(pc.utf8_trim_whitespace(county), ""),
                                            pc.is_null(counties)))
            self.flags.add(unknown & stated, "INVALID_FIELD", "county is not a US county (FIPS or name) of "
                           "the row's state; stored as unknown", "county", error=False)
            self.flags.add(unknown & ~stated, "INVALID_FIELD", "county is not a US county FIPS code, and "
                           "the row has no state to find a county name in; stored as unknown", "county",
                           error=False)
        if postal is not None:
            given = np_mask(pc.not_equal(pc.utf8_trim_whitespace(postal), ""))
            self.flags.add(given & ~stated & ~np_mask(pc.is_valid(placed)), "INVALID_FIELD", "postal_code is "
                           "the row's only place and not a US ZIP code the ZIP table lists (value withheld): "
                           "the row has no place; give its state", "postal_code", error=False)
        return placed, counties

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


def _parse_time(text: str) -> dt.datetime:
    """An ISO 8601 date or date-time (FHIR's forms); a date-time without a zone is UTC ("naive = UTC",
    as a timestamp column without a time zone). Raises ValueError."""
    try:
        return parse_datetime(text)
    except ValueError:
        if len(text) < 16 or text[10] != "T" or _ZONE.search(text[-6:]):
            raise
        return parse_datetime(text + "Z")


def _place(region: str | None, county: str | None, postal: str | None, country: str | None
           ) -> tuple[str | None, str | None]:
    """(region, county) of one row's place columns; a row without region and with a country other than
    the US is not placed by a county or ZIP code (a 5-digit postal code is no ZIP code there)."""
    if region is None and country is not None and region_code("DC", country) != "US-DC":
        return None, None
    return address_place(region, county, postal)


_ZONE = re.compile(r"(Z|[+-]\d{2}(?::?\d{2})?)$")


def _zone_minutes(tail: str) -> int | None:
    """The zone a date-time ends with (``Z``, ``±hh``, ``±hhmm`` or ``±hh:mm``) → minutes east of UTC;
    None without one or beyond ±18 h."""
    m = _ZONE.search(tail)
    if m is None:
        return None
    zone = m.group(1)
    if zone == "Z":
        return 0
    digits = zone[1:].replace(":", "")
    minutes = int(digits[:2]) * 60 + (int(digits[2:4]) if len(digits) >= 4 else 0)
    return None if minutes > 18 * 60 else (-minutes if zone[0] == "-" else minutes)


def _zone_offsets(col: pa.Array) -> pa.Array:
    """Minutes east of UTC of each value of a timestamp column with a time zone, in that zone."""
    times = pd.Series(col.to_pandas())
    local = times.dt.tz_localize(None)
    utc = times.dt.tz_convert("UTC").dt.tz_localize(None)
    minutes = ((local - utc) // pd.Timedelta(minutes=1)).astype("Int16")
    return pa.array(minutes, pa.int16())


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
