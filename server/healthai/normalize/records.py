"""Normalized row schemas (one Arrow schema per record kind) and per-record outcome types.

Every normalizer returns a :class:`NormalizedBatch`: exactly one :class:`RecordOutcome` per input
record (a bundle entry, a single resource, a flat row) and one :class:`pyarrow.Table` per kind with
the rows of the records that were not rejected. Rows never carry names, addresses, telecom, free
text or raw identifiers: ``resource_id`` and ``patient_id`` are keyed pseudonyms (see
:mod:`healthai.normalize.identity`).

Deduplication key for the store: ``(source, record_key)``. ``record_key`` equals ``resource_id``
except for observation components (one blood-pressure panel gives a systolic and a diastolic row),
where it is ``resource_id + "#" + loinc`` (a code repeated in one panel adds ``"#" + component index``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import pyarrow as pa

PATIENT = "patient"
ENCOUNTER = "encounter"
CONDITION = "condition"
OBSERVATION = "observation"
KINDS: tuple[str, ...] = (PATIENT, ENCOUNTER, CONDITION, OBSERVATION)

_TS = pa.timestamp("us", tz="UTC")
# Every event time (UTC) has a companion column ``<name>_utc_offset_min``: the UTC offset, in minutes,
# the time was written in (-300 for 20:00-05:00), null for a date without a time or a time given
# without a zone. The event's local date (surveillance counts by it) is the UTC time plus this offset.
OFFSET_SUFFIX = "_utc_offset_min"
_OFFSET = pa.int16()


def _event(name: str) -> list[pa.Field]:
    return [pa.field(name, _TS), pa.field(name + OFFSET_SUFFIX, _OFFSET)]


_COMMON = [
    pa.field("source", pa.string(), nullable=False),
    pa.field("record_key", pa.string(), nullable=False),
    pa.field("resource_id", pa.string(), nullable=False),
    pa.field("patient_id", pa.string()),
]

SCHEMAS: dict[str, pa.Schema] = {
    PATIENT: pa.schema(
        [
            *_COMMON,
            pa.field("sex", pa.string()),  # male | female | other | unknown
            pa.field("birth_year", pa.int16()),
            pa.field("birth_month", pa.int8()),  # day dropped (generalized)
            pa.field("deceased", pa.bool_()),
            pa.field("deceased_year", pa.int16()),
            pa.field("deceased_month", pa.int8()),
            pa.field("region", pa.string()),  # ISO 3166-2, e.g. US-MA; null when unknown
            pa.field("county", pa.string()),  # US county FIPS, e.g. 25017 (healthai.normalize.counties)
            pa.field("identifier_pseudonyms", pa.list_(pa.string())),
            # keyed token of the full birth date (never the date): healthai.normalize.birth_guard
            pa.field("birth_date_token", pa.string()),
        ]
    ),
    ENCOUNTER: pa.schema(
        [
            *_COMMON,
            pa.field("region", pa.string()),
            pa.field("county", pa.string()),
            pa.field("status", pa.string()),
            pa.field("class_code", pa.string()),  # v3 ActCode: AMB, IMP, EMER, ...
            pa.field("type_system", pa.string()),
            pa.field("type_code", pa.string()),
            *_event("start"),
            *_event("end"),
        ]
    ),
    CONDITION: pa.schema(
        [
            *_COMMON,
            pa.field("encounter_id", pa.string()),
            pa.field("region", pa.string()),
            pa.field("county", pa.string()),
            pa.field("code_system", pa.string()),  # ICD10CM | ICD9CM | SNOMED | OTHER (primary coding)
            pa.field("code", pa.string()),  # primary code as sent (ICD-10 in canonical dotted form)
            pa.field("icd10_code", pa.string()),  # dotted ICD-10-CM: sent or mapped from SNOMED
            pa.field("icd10_mapped", pa.bool_()),  # True when icd10_code came from the SNOMED map
            pa.field("icd9_code", pa.string()),  # dotted ICD-9-CM when sent
            pa.field("snomed_code", pa.string()),  # sent, or the one concept mapping to icd10_code
            pa.field("snomed_mapped", pa.bool_()),  # True when snomed_code came from the map
            pa.field("clinical_status", pa.string()),
            pa.field("verification_status", pa.string()),
            *_event("onset"),
            *_event("abatement"),
            *_event("recorded"),
        ]
    ),
    OBSERVATION: pa.schema(
        [
            *_COMMON,
            pa.field("encounter_id", pa.string()),
            pa.field("region", pa.string()),
            pa.field("county", pa.string()),
            pa.field("status", pa.string()),
            pa.field("category", pa.string()),  # vital-signs | laboratory | survey | ...
            pa.field("loinc", pa.string()),
            pa.field("panel_loinc", pa.string()),  # e.g. 85354-9 for a BP component row
            pa.field("value", pa.float64()),  # in ``unit`` (canonical UCUM when the code is known)
            pa.field("unit", pa.string()),
            pa.field("original_value", pa.float64()),
            pa.field("original_unit", pa.string()),
            pa.field("value_code", pa.string()),  # coded value, "system|code"
            *_event("effective"),
            pa.field("loinc_valid", pa.bool_()),  # format + mod-10 check digit; null: no LOINC code
            pa.field("data_absent_reason", pa.string()),  # "system|code" when the value is absent
            pa.field("value_comparator", pa.string()),  # <, <=, >=, >: value is a bound (censored result)
        ]
    ),
}

COLUMNS: dict[str, list[str]] = {kind: schema.names for kind, schema in SCHEMAS.items()}


def empty_table(kind: str) -> pa.Table:
    return SCHEMAS[kind].empty_table()


class Status(enum.StrEnum):
    ACCEPTED = "ACCEPTED"
    ACCEPTED_WITH_WARNINGS = "ACCEPTED_WITH_WARNINGS"
    REJECTED = "REJECTED"


class Severity(enum.StrEnum):
    WARNING = "WARNING"  # record kept, something flagged
    ERROR = "ERROR"  # record rejected


class IssueCode(enum.StrEnum):
    """Machine-readable reasons. Values are stable strings clients may switch on."""

    MISSING_FIELD = "MISSING_FIELD"
    INVALID_FIELD = "INVALID_FIELD"  # wrong JSON type or unparsable value (date, number, ...)
    WRONG_RESOURCE_TYPE = "WRONG_RESOURCE_TYPE"  # unknown/missing resourceType, or kind mismatch
    RESOURCE_TYPE_NOT_STORED = "RESOURCE_TYPE_NOT_STORED"  # valid FHIR type we do not normalize
    DUPLICATE_ID = "DUPLICATE_ID"
    REFERENCE_UNRESOLVED = "REFERENCE_UNRESOLVED"
    REFERENCE_CONTAINED = "REFERENCE_CONTAINED"  # subject is a contained Patient: of that record only
    ICD10_INVALID = "ICD10_INVALID"
    ICD10_NOT_BILLABLE = "ICD10_NOT_BILLABLE"  # a category with subcodes / no 7th character: kept, flagged
    ICD9_INVALID = "ICD9_INVALID"
    LOINC_INVALID = "LOINC_INVALID"
    CODE_UNMAPPED = "CODE_UNMAPPED"  # SNOMED/other code with no ICD-10-CM mapping available
    CODE_SYSTEM_UNKNOWN = "CODE_SYSTEM_UNKNOWN"
    CODE_NOT_STORED = "CODE_NOT_STORED"  # text in a code or system that is no code (an SSN): not stored
    UNIT_UNKNOWN = "UNIT_UNKNOWN"
    UNIT_INCOMPATIBLE = "UNIT_INCOMPATIBLE"
    VALUE_MISSING = "VALUE_MISSING"
    VALUE_IMPOSSIBLE = "VALUE_IMPOSSIBLE"
    UNIT_CONFLICT = "UNIT_CONFLICT"  # Quantity.unit and .code differ (code read under UCUM; else neither)
    VALUE_CENSORED = "VALUE_CENSORED"  # Quantity.comparator (<, <=, >=, >): the value is a bound
    DATE_IMPOSSIBLE = "DATE_IMPOSSIBLE"
    UNKNOWN_ELEMENT = "UNKNOWN_ELEMENT"  # a JSON key that is not an element of the FHIR R4 type: ignored
    REFERENCE_DISPLAY_ONLY = "REFERENCE_DISPLAY_ONLY"  # a Reference with display only: link dropped
    SNOMED_INVALID = "SNOMED_INVALID"  # not an SCTID (format, partition, Verhoeff): kept as OTHER
    UNIT_NOT_UCUM = "UNIT_NOT_UCUM"  # a non-UCUM unit spelling converted to its UCUM unit
    DATE_GENERALIZED = "DATE_GENERALIZED"  # an event date equal to the full birth date, cut to its month
    DATE_PARTIAL = "DATE_PARTIAL"  # a year or month given for a day: stored as its first day
    NOT_STORED = "NOT_STORED"  # accepted, but nothing of it is stored (the message says why)


@dataclass(frozen=True, slots=True)
class Issue:
    code: str
    message: str
    field_path: str = ""
    severity: Severity = Severity.WARNING


@dataclass(slots=True)
class RecordOutcome:
    """What happened to one input record. ``source_id`` is the pseudonymized id (never raw)."""

    index: int
    resource_type: str
    source_id: str
    status: Status
    issues: list[Issue] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return self.resource_type.lower()


@dataclass(slots=True)
class NormalizedBatch:
    outcomes: list[RecordOutcome]
    tables: dict[str, pa.Table]

    def counts(self) -> dict[Status, int]:
        out = dict.fromkeys(Status, 0)
        for o in self.outcomes:
            out[o.status] += 1
        return out

    def rows(self) -> int:
        return sum(t.num_rows for t in self.tables.values())


def status_of(issues: list[Issue]) -> Status:
    if any(i.severity is Severity.ERROR for i in issues):
        return Status.REJECTED
    return Status.ACCEPTED_WITH_WARNINGS if issues else Status.ACCEPTED
