"""Typed flat records (one Arrow table per kind) → normalized rows, vectorized.

``normalize_table(kind, table, ctx=..., source=...)``. Input columns per kind (``INPUT_COLUMNS``;
extra columns are ignored; ``REQUIRED_COLUMNS`` must exist, else InvalidInput naming them; a table
holding every required column of another kind, one of them foreign to this kind, is refused as that
kind's table sent under the wrong kind: its rows would replace stored records with empty ones):

- patient: **patient_id**; sex (male/female/other/unknown or M/F/O/U), birth_date, deceased,
  deceased_date, state (name or postal code), country, region (ISO 3166-2; overrides state).
- encounter: **encounter_id, patient_id**; status, class_code, start, end, state, region.
- condition: **condition_id, patient_id, code**; code_system (ICD10CM | ICD9CM | SNOMED or a FHIR
  system URI; default ICD10CM), encounter_id, clinical_status, verification_status, onset, recorded,
  state, region.
- observation: **observation_id, patient_id, loinc, value**; unit, panel_loinc, encounter_id,
  status, category, effective, state, region. Two rows with the same observation_id and different
  loinc are the components of one panel. Observation rows have record_key ``pseudonym(id)#loinc``.
  A censored ``value`` (``<5``, ``>=600``) stores its bound with ``value_comparator``.

Coded columns take their FHIR value set's codes (any case): status and class_code (v3 ActCode, or HL7
v2's E/I/O), clinical_status, verification_status, category. Other text there is not stored (it may be
a name in the wrong column): a warning, or a rejected row for an observation's status (as for FHIR).
A code without its system's syntax (an SSN under ICD10CM), a code_system that is no URI or system name
(``http://name@host``), and a loinc or panel_loinc not shaped like a LOINC code are never stored either.

Every kind also takes county (a US county FIPS or name, in the row's state) and postal_code (a
ZIP code, for the county when no county is given; not stored). A row with no state or region (and no
country but the US) is placed by a county FIPS code alone (its state and county), else by a ZIP code
alone (the state and county the ZIP table lists it under; one it does not list is warned: no place).
Tables of one request (:func:`normalize_tables`): an encounter, condition or observation row with no
place of its own takes its patient row's, and keeps it when the patient later moves (as FHIR).

Ids are raw local ids (pseudonymized here). Dates/times: Arrow date or timestamp, or ISO-8601 strings
(YYYY, YYYY-MM, YYYY-MM-DD or a date-time); a timestamp or date-time without a time zone is UTC. A
year or month alone is its first day: an onset so given is warned (DATE_PARTIAL, as FHIR's
onsetDateTime). The UTC offset a time was written in (its ``±hh:mm``, or the column's time zone) is
kept in ``<name>_utc_offset_min``. ``unit`` may be omitted (null): the value is then taken to be in the code's
canonical UCUM unit (``units.CANONICAL``); for codes without one it is stored unitless. Each row is
one record; per-row problems become per-row outcomes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from healthai.errors import InvalidInput
from healthai.normalize import birth_guard, dates, flat_codes
from healthai.normalize import flat_checks as fc
from healthai.normalize.context import NormalizeContext
from healthai.normalize.fhir_condition import further_group_rows
from healthai.normalize.fhir_resources import ENCOUNTER_STATUS, OBSERVATION_STATUS
from healthai.normalize.gc_pause import gc_paused
from healthai.normalize.identity import record_system
from healthai.normalize.records import (
    CONDITION,
    ENCOUNTER,
    KINDS,
    OBSERVATION,
    OFFSET_SUFFIX,
    PATIENT,
    SCHEMAS,
    IssueCode,
    NormalizedBatch,
)
from healthai.normalize.redact import describe
from healthai.normalize.value_sets import (
    CLINICAL_STATUS,
    ENCOUNTER_CLASS,
    OBSERVATION_CATEGORY,
    VERIFICATION_STATUS,
    same,
)

# where the record happened: a state (name or postal code) and country, or an ISO 3166-2 region; a US
# county (FIPS or name) or a ZIP code gives the county (the ZIP code itself is not stored)
_LOCATION = ("state", "country", "region", "county", "postal_code")
INPUT_COLUMNS: dict[str, tuple[str, ...]] = {
    PATIENT: ("patient_id", "sex", "birth_date", "deceased", "deceased_date", *_LOCATION),
    ENCOUNTER: ("encounter_id", "patient_id", "status", "class_code", "start", "end", *_LOCATION),
    CONDITION: ("condition_id", "patient_id", "code", "code_system", "encounter_id", "clinical_status",
                "verification_status", "onset", "recorded", *_LOCATION),
    OBSERVATION: ("observation_id", "patient_id", "loinc", "value", "unit", "panel_loinc", "encounter_id",
                  "status", "category", "effective", *_LOCATION),
}
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    PATIENT: ("patient_id",),
    ENCOUNTER: ("encounter_id", "patient_id"),
    CONDITION: ("condition_id", "patient_id", "code"),
    OBSERVATION: ("observation_id", "patient_id", "loinc", "value"),
}
_ID_COLUMN = {
    PATIENT: "patient_id",
    ENCOUNTER: "encounter_id",
    CONDITION: "condition_id",
    OBSERVATION: "observation_id",
}
_RESOURCE = {PATIENT: "Patient", ENCOUNTER: "Encounter", CONDITION: "Condition", OBSERVATION: "Observation"}


def _refuse_other_kind(kind: str, columns: list[str]) -> None:
    """InvalidInput when ``columns`` are another kind's table (every column it requires, one of them not
    a ``kind`` column): an observation table sent as patients would store each patient again, empty."""
    looks_like = [(len(required), other, foreign) for other, required in REQUIRED_COLUMNS.items()
                  if other != kind and all(c in columns for c in required)
                  and (foreign := [c for c in required if c not in INPUT_COLUMNS[kind]])]
    if looks_like:  # the kind whose table it is most surely (an observation table holds encounter_id too)
        _, other, foreign = max(looks_like)
        raise InvalidInput(f"{kind} records hold the column(s) of {other} records ({', '.join(foreign)}): "
                           f"send this table with kind {other}", field=foreign[0])


@gc_paused()  # the payload's objects are freed by reference counting
def normalize_table(kind: str, table: pa.Table, *, ctx: NormalizeContext, source: str,
                    patients: pa.Table | None = None) -> NormalizedBatch:
    """Normalize a flat table of one kind. One outcome per row; rows of non-rejected records.
    ``patients``: the normalized patient rows of the same request, whose places rows without their
    own take (:func:`normalize_tables`)."""
    if kind not in KINDS:
        raise InvalidInput(
            describe("record kind", kind, f"is unknown (one of {', '.join(KINDS)})", KINDS), field="kind"
        )
    if not source:
        raise InvalidInput("source must be a non-empty name", field="source")
    if not isinstance(table, pa.Table):
        raise InvalidInput(f"expected a pyarrow.Table, got {type(table).__name__}")
    repeated = sorted({c for c in table.column_names if table.column_names.count(c) > 1})
    if repeated:  # which of two 'value' columns is the value? the sender must say
        raise InvalidInput(f"{kind} records name column(s) {', '.join(map(repr, repeated))} more than once",
                           field=repeated[0])
    missing = [c for c in REQUIRED_COLUMNS[kind] if c not in table.column_names]
    if missing:
        raise InvalidInput(f"{kind} records lack required column(s): {', '.join(missing)}", field=missing[0])
    _refuse_other_kind(kind, table.column_names)
    t = fc.Cols(table, fc.Flags(table.num_rows), kind)
    ps = ctx.pseudonymizer
    id_col = _ID_COLUMN[kind]
    ids = t.string(id_col, required=True)
    patient_ids = ids if kind == PATIENT else t.string("patient_id", required=True)
    rid = fc.pseudonyms(ps, record_system(source, _RESOURCE[kind]), ids)
    pid = rid if kind == PATIENT else fc.pseudonyms(ps, record_system(source, "Patient"), patient_ids)
    out: dict[str, Any] = {"resource_id": rid, "patient_id": pid, "record_key": rid}
    if kind != PATIENT:
        out["region"] = t.region()
    if kind in (CONDITION, OBSERVATION):
        out["encounter_id"] = fc.pseudonyms(ps, record_system(source, "Encounter"), t.string("encounter_id"))
    dup_key = ids
    if kind == PATIENT:
        out.update(_patient(t, ctx, pid))
    elif kind == ENCOUNTER:
        out.update(_encounter(t, ctx))
    elif kind == CONDITION:
        out.update(flat_codes.condition_codes(t, ctx))
        out.update(
            {
                "clinical_status": t.coded("clinical_status", same(CLINICAL_STATUS)),
                "verification_status": t.coded("verification_status", same(VERIFICATION_STATUS)),
                "onset": _onset(t, ctx),
                "recorded": t.time("recorded", ctx),
            }
        )
    else:
        out.update(flat_codes.observation_values(t))
        out.update(
            {
                "status": t.coded("status", same(OBSERVATION_STATUS), error=True),
                "category": t.coded("category", same(OBSERVATION_CATEGORY)),
                "effective": t.time("effective", ctx),
            }
        )
        loinc = out["loinc"]
        dup_key = pc.binary_join_element_wise(pc.fill_null(ids, ""), pc.fill_null(loinc, ""), "#")
        # a flat observation row is identified by (observation_id, loinc): stable across re-sends
        out["record_key"] = pc.binary_join_element_wise(rid, pc.fill_null(loinc, ""), "#")
    out["region"], out["county"] = t.place(out["region"])
    if patients is not None and kind != PATIENT:
        _take_patient_place(out, patients)
    for name in dates.EVENT_COLUMNS.get(kind, ()):
        out[name + OFFSET_SUFFIX] = t.utc_offset(name)
    t.flags.duplicates(dup_key, id_col)
    rejected = t.flags.rejected()
    outcomes = t.flags.outcomes(_RESOURCE[kind], rid)
    unstored = out.pop("_not_stored", None)  # conditions whose code is no code: accepted, not stored
    kept = ~rejected if unstored is None else ~rejected & ~unstored
    keep = pa.array(kept)
    schema = SCHEMAS[kind]
    n_keep = int(kept.sum())
    columns = []
    for f in schema:
        if f.name == "source":
            columns.append(pa.array([source] * n_keep, pa.string()) if n_keep else pa.array([], pa.string()))
            continue
        col = out.get(f.name)
        if col is None:
            columns.append(pa.nulls(n_keep, f.type))
            continue
        arr = col if isinstance(col, pa.Array | pa.ChunkedArray) else pa.array(col)
        columns.append(pc.filter(arr, keep).cast(f.type))
    tables = {k: SCHEMAS[k].empty_table() for k in KINDS}
    tables[kind] = pa.Table.from_arrays(columns, schema=schema)
    if kind == CONDITION and ctx.snomed_map is not None:
        tables[kind] = _with_further_groups(tables[kind], ctx)
    if ctx.date_policy is not dates.DatePolicy.FULL:
        tables = dates.apply(tables, policy=ctx.date_policy, pseudonymizer=ps, birth_dates={},
                             outcomes=outcomes)
    return NormalizedBatch(outcomes, tables)


def normalize_tables(tables: Mapping[str, pa.Table], *, ctx: NormalizeContext, source: str
                     ) -> list[NormalizedBatch]:
    """Normalize the flat tables of one request (kind -> table), one batch per kind in the order given.
    The patients come first: an encounter, condition or observation row without its own place (no
    region, county or ZIP code giving one) takes the place of its patient's row in the request, and is
    stored with it, as a FHIR resource sent with its Patient: a later address of the patient does not
    move it. Rows whose patient is not in the request take the stored patient's latest place when
    counted (``surveillance.links``)."""
    done: dict[str, NormalizedBatch] = {}
    if PATIENT in tables:
        done[PATIENT] = normalize_table(PATIENT, tables[PATIENT], ctx=ctx, source=source)
    patients = done[PATIENT].tables[PATIENT] if PATIENT in done else None
    for kind, table in tables.items():
        if kind != PATIENT:
            done[kind] = normalize_table(kind, table, ctx=ctx, source=source, patients=patients)
    return [done[kind] for kind in tables]


def _take_patient_place(out: dict[str, Any], patients: pa.Table) -> None:
    """Rows with neither region nor county take their patient's (a patient row of the same request)."""
    if patients.num_rows == 0:
        return
    own = pc.or_kleene(pc.is_valid(out["region"]), pc.is_valid(out["county"]))
    at = pc.index_in(out["patient_id"], value_set=patients["patient_id"].combine_chunks())
    for name in ("region", "county"):
        theirs = pc.take(patients[name].combine_chunks(), at)
        out[name] = pc.if_else(own, out[name], theirs)


def _onset(t: fc.Cols, ctx: NormalizeContext) -> pa.Array | None:
    """The onset; a year or month alone (``2026``, ``2026-03``) is its first day, with DATE_PARTIAL (as
    FHIR's onsetDateTime): daily and weekly counts place the case there."""
    onset = t.time("onset", ctx)
    raw = t.table.column("onset").combine_chunks() if onset is not None else None
    if raw is None or not (pa.types.is_string(raw.type) or pa.types.is_large_string(raw.type)):
        return onset
    length = pc.utf8_length(pc.utf8_trim_whitespace(raw))
    for n, unit in ((4, "year"), (7, "month")):
        mask = fc.np_mask(pc.and_kleene(pc.equal(length, n), pc.is_valid(onset)))
        t.flags.add(mask, IssueCode.DATE_PARTIAL, f"onset gives only a {unit}: stored as its first day, "
                    "where daily and weekly counts place the case", "onset", error=False)
    return onset


def _with_further_groups(table: pa.Table, ctx: NormalizeContext) -> pa.Table:
    """Conditions plus a row per further ICD-10-CM map group of their mapped SNOMED CT concepts."""
    mapped = table.filter(pc.fill_null(table["icd10_mapped"], False))
    extra = [r for row in mapped.to_pylist() for r in further_group_rows(ctx.snomed_map, row)]
    return pa.concat_tables([table, pa.Table.from_pylist(extra, schema=table.schema)]) if extra else table


def _patient(t: fc.Cols, ctx: NormalizeContext, pid: pa.Array) -> dict[str, Any]:
    sex = t.string("sex")
    if sex is not None:
        sex = fc.map_values(sex, fc.SEX_VALUES)
        t.flags.add(
            fc.np_mask(pc.and_kleene(pc.is_null(sex), pc.is_valid(t.string("sex")))),
            "INVALID_FIELD",
            "sex must be male, female, other, unknown (or M, F, O, U)",
            "sex",
            error=True,
        )
    birth = t.local_time("birth_date", ctx)
    by = bm = None
    if birth is not None:
        by, bm = pc.year(birth), pc.month(birth)
        # the future is already rejected by ``t.time``
        bad = pc.fill_null(pc.less(by, ctx.min_birth_year), False)
        t.flags.add(
            fc.np_mask(bad),
            "DATE_IMPOSSIBLE",
            f"birth_date is before {ctx.min_birth_year}",
            "birth_date",
            error=True,
        )
    death = t.local_time("deceased_date", ctx)
    deceased = t.column("deceased", pa.bool_())
    dy = dm = None
    if death is not None:
        dy, dm = pc.year(death), pc.month(death)
        deceased = (
            pc.if_else(pc.is_valid(death), True, deceased) if deceased is not None else pc.is_valid(death)
        )
        if birth is not None:
            bad = pc.fill_null(pc.less(death, birth), False)
            t.flags.add(
                fc.np_mask(bad),
                "DATE_IMPOSSIBLE",
                "deceased_date is before birth_date",
                "deceased_date",
                error=True,
            )
    token = None
    if birth is not None:  # a string without its day (YYYY-MM) gives no token
        raw = t.table.column("birth_date")
        has_day = pc.greater_equal(pc.utf8_length(raw), 10) if pa.types.is_string(raw.type) else None
        token = birth_guard.tokens(ctx.pseudonymizer, pid, birth, has_day)
    return {
        "birth_date_token": token,
        "sex": sex,
        "birth_year": by,
        "birth_month": bm,
        "deceased": deceased,
        "deceased_year": dy,
        "deceased_month": dm,
        "region": t.region(),
        "identifier_pseudonyms": pa.array([[]] * t.n, pa.list_(pa.string())),
    }


def _encounter(t: fc.Cols, ctx: NormalizeContext) -> dict[str, Any]:
    start, end = t.time("start", ctx), t.time("end", ctx)
    if start is not None and end is not None:
        t.flags.add(
            fc.np_mask(pc.fill_null(pc.less(end, start), False)),
            "INVALID_FIELD",
            "end is before start",
            "end",
            error=True,
        )
    status = t.string("status")
    if status is not None:
        bad = pc.and_kleene(
            pc.is_valid(status), pc.invert(pc.is_in(status, pa.array(sorted(ENCOUNTER_STATUS))))
        )
        t.flags.add(
            fc.np_mask(bad),
            "INVALID_FIELD",
            "status is not a FHIR Encounter.status code",
            "status",
            error=True,
        )
    class_code = t.coded("class_code", ENCOUNTER_CLASS)
    return {"status": status, "class_code": class_code, "start": start, "end": end}


def outcome_counts(batch: NormalizedBatch) -> dict[str, int]:
    """Status → count (handy for logs and benchmarks)."""
    counts: dict[str, int] = {}
    for o in batch.outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    return counts


__all__ = ["INPUT_COLUMNS", "REQUIRED_COLUMNS", "normalize_table", "normalize_tables", "outcome_counts"]
