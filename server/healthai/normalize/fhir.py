"""FHIR R4 JSON → normalized rows: ``normalize_fhir(payload, ctx=..., source=...)``.

Accepts a Bundle (transaction, batch, collection, searchset, document, history, message), a single
resource, or a JSON array of resources. Every entry is one record and gets one outcome; a Bundle inside
a Bundle (a public-health reporting message carrying an eICR document) is one record followed by each of
its entries, so outcome indices count records in that flattened order (field paths show the nesting):

- Patient, Encounter, Condition, Observation → validated selectively (the fields we use, FHIR R4
  types and cardinalities; full ``fhir.resources`` validation is ~3 MB/s, this is far faster) and
  normalized into rows (:mod:`healthai.normalize.fhir_resources`);
  Encounter, Condition and Observation need a ``subject`` (a Patient) to be stored;
- any other R4 resource type → ACCEPTED_WITH_WARNINGS ``RESOURCE_TYPE_NOT_STORED`` (checked for
  duplicates and dangling references, nothing stored);
- unknown or missing ``resourceType`` → REJECTED ``WRONG_RESOURCE_TYPE``.

Every element read is type-checked where it is read (:mod:`healthai.normalize.fhir_read`): an ``id``, a
Coding's ``code``, a Quantity's ``unit`` that is not a string, a ``coding`` that is not an array, a STU3
status string where R4 has a CodeableConcept → that record is REJECTED ``INVALID_FIELD`` (field path,
never the value); the other records are stored.

Coded elements store only codes (:mod:`healthai.normalize.fhir_coded`): a status outside its required
value set, a code without its system's syntax, a system that is no URI → not stored, warned, withheld.
A number too large to read (309+ or 4,301+ digits) rejects its record, never the payload.

References are resolved inside the payload (``urn:uuid:`` fullUrls, ``Type/id``, absolute URLs
ending in ``Type/id``, either with ``/_history/vid``, ``#contained``, and conditional references
``Type?search`` of a transaction: :class:`healthai.normalize.fhir_resources.RefIndex`); each one that
does not resolve is flagged ``REFERENCE_UNRESOLVED`` (a warning: the target may already be stored). A
subject ``Patient?identifier=system|value`` not in the payload is keyed by that identifier's pseudonym,
which the counts link to the stored Patient carrying it (:mod:`healthai.surveillance.links`); any other
unresolved search is never linked, and its warning says so. A subject that is a contained
Patient is normalized as a patient of that record only (:func:`.fhir_patient.contained_subject`).
A repeated ``Type/id`` or fullUrl → the later entries are REJECTED ``DUPLICATE_ID``. Payloads that
are not JSON, nest deeper than ``MAX_JSON_DEPTH`` levels, or whose top level is not a resource, a
Bundle or an array → :class:`healthai.errors.InvalidInput`.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from healthai.errors import InvalidInput
from healthai.normalize import dates, fhir_condition, fhir_observation, fhir_patient
from healthai.normalize import fhir_resources as fr
from healthai.normalize.context import NormalizeContext
from healthai.normalize.fhir_read import json_type
from healthai.normalize.fhir_strict import strict_issues
from healthai.normalize.fhir_types import ID_PATTERN, R4_RESOURCE_TYPES
from healthai.normalize.fhir_unknown import unknown_elements
from healthai.normalize.gc_pause import gc_paused
from healthai.normalize.identity import record_system
from healthai.normalize.json_depth import MAX_JSON_DEPTH, json_depth_exceeds
from healthai.normalize.records import (
    KINDS,
    SCHEMAS,
    Issue,
    IssueCode,
    NormalizedBatch,
    RecordOutcome,
    Severity,
    Status,
    status_of,
)
from healthai.normalize.redact import describe

_DELETE = object()  # marker of a transaction/batch DELETE entry (no resource)
BUNDLE_TYPES = frozenset(
    {"transaction", "batch", "collection", "searchset", "document", "history", "message"}
)
_NORMALIZERS = {
    "Patient": fhir_patient.normalize_patient,
    "Encounter": fhir_patient.normalize_encounter,
    "Condition": fhir_condition.normalize_condition,
    "Observation": fhir_observation.normalize_observation,
}
_SUBJECT_TYPES = frozenset({"Encounter", "Condition", "Observation"})  # stored, with a Patient subject


Record = tuple[str, Any, str | None, str | None]  # field path prefix, resource, fullUrl, conditional URL


def parse_payload(payload: bytes | str | dict | list) -> tuple[list[Record], str | None]:
    """((field path prefix, resource, fullUrl, conditional URL) per record, JSON text or None when
    given parsed).

    Raises InvalidInput for undecodable JSON or a bad top level.
    """
    doc: Any = payload
    text: str | None = None
    if isinstance(payload, bytes | bytearray | memoryview | str):
        try:
            text = payload if isinstance(payload, str) else bytes(payload).decode("utf-8")
        except UnicodeDecodeError as e:
            raise InvalidInput(f"FHIR payload is not UTF-8 text (byte {e.start})") from None
        if json_depth_exceeds(payload if isinstance(payload, bytes) else text):
            raise InvalidInput(f"JSON arrays/objects nest more than {MAX_JSON_DEPTH} levels deep; "
                               f"the limit is {MAX_JSON_DEPTH}")
        try:
            doc = _loads(text.removeprefix("\ufeff"))
        except json.JSONDecodeError as e:
            raise InvalidInput(f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
        except ValueError:  # a number Python cannot read (never expected: _loads reads long integers)
            raise InvalidInput("FHIR payload holds a JSON number that cannot be read") from None
    return _records(doc), text


def _loads(text: str) -> Any:
    """``json.loads``; an integer past Python's int-digits limit (4,300, ``sys.get_int_max_str_digits``)
    makes it raise ValueError: the text is then read again with such integers as ±infinity, so that the
    record holding one is rejected (its element is not a finite number), not the payload."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except ValueError:
        return json.loads(text, parse_int=_int_or_infinity)


def _int_or_infinity(digits: str) -> int | float:
    try:
        return int(digits)
    except ValueError:  # too many digits for int(): far past any float
        return float(digits)


def _records(doc: Any) -> list[Record]:
    if isinstance(doc, list):
        return [(f"[{i}]", item, None, None) for i, item in enumerate(doc)]
    if not isinstance(doc, dict):
        raise InvalidInput(f"FHIR payload must be a JSON object or array, got {type(doc).__name__}")
    rtype = doc.get("resourceType")
    if rtype is None:
        raise InvalidInput("top-level JSON object has no resourceType", field="resourceType")
    if rtype != "Bundle":
        if not isinstance(rtype, str) or rtype not in R4_RESOURCE_TYPES:
            raise InvalidInput(
                describe(
                    "top-level resourceType", rtype, "is not a FHIR R4 resource type", R4_RESOURCE_TYPES
                ),
                field="resourceType",
            )
        return [("", doc, None, None)]
    btype = doc.get("type")
    if not isinstance(btype, str) or btype not in BUNDLE_TYPES:
        accepted = f"(one of {', '.join(sorted(BUNDLE_TYPES))})"
        raise InvalidInput(
            f"Bundle.type is required {accepted}"
            if btype is None
            else describe("Bundle.type", btype, f"is not accepted {accepted}", BUNDLE_TYPES),
            field="type",
        )
    entries = doc.get("entry", [])
    if not isinstance(entries, list):
        raise InvalidInput("Bundle.entry must be an array", field="entry")
    out = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            out.append((f"entry[{i}]", None, None, None))
            continue
        request = entry.get("request")
        if "resource" not in entry and isinstance(request, dict) and request.get("method") == "DELETE":
            out.append((f"entry[{i}].request.method", _DELETE, None, None))
            continue
        full_url = entry.get("fullUrl")
        resource = entry.get("resource")
        path = f"entry[{i}].resource"
        url = full_url if isinstance(full_url, str) else None
        if _nested_bundle(resource):
            # a Bundle inside a Bundle (an eICR document in its reporting message): the Bundle itself
            # (without its entries), then its entries, each a record of its own
            out.append((path, {k: v for k, v in resource.items() if k != "entry"}, url, None))
            out.extend((f"{path}.{p}", r, u, c) for p, r, u, c in _records(resource))
            continue
        out.append((path, resource, url, _conditional_url(request)))
    return out


def _conditional_url(request: Any) -> str | None:
    """``Type?search`` of a conditional update (PUT) or conditional create (POST + ifNoneExist)."""
    if not isinstance(request, dict) or not isinstance(url := request.get("url"), str):
        return None
    method, if_none = request.get("method"), request.get("ifNoneExist")
    if method == "PUT" and "?" in url:
        return url
    if method == "POST" and isinstance(if_none, str) and if_none.strip("?"):
        return f"{url.partition('?')[0]}?{if_none.lstrip('?')}"
    return None


def _nested_bundle(resource: Any) -> bool:
    return (isinstance(resource, dict) and resource.get("resourceType") == "Bundle"
            and resource.get("type") in BUNDLE_TYPES and isinstance(resource.get("entry", []), list))


def _local_id(resource: dict, full_url: str | None) -> str | None:
    rid = resource.get("id")
    if isinstance(rid, str) and rid:
        return rid
    if full_url:
        return (
            full_url.rsplit(":", 1)[-1]
            if full_url.startswith("urn:")
            else full_url.rstrip("/").rsplit("/", 1)[-1]
        )
    return None


@gc_paused()  # the payload's objects are freed by reference counting
def normalize_fhir(
    payload: bytes | str | dict | list, *, ctx: NormalizeContext, source: str
) -> NormalizedBatch:
    """Normalize one FHIR payload. One outcome per record, in input order; rows of accepted records."""
    if not source:
        raise InvalidInput("source must be a non-empty name", field="source")
    records, text = parse_payload(payload)
    n = len(records)
    outcomes: list[RecordOutcome | None] = [None] * n
    index = fr.RefIndex()
    index.latest = ctx.latest_allowed()
    pending: list[tuple[int, str, dict, str]] = []
    for i, (path, res, full_url, conditional) in enumerate(records):
        base = path or "resource"
        if res is _DELETE:
            outcomes[i] = _rejected(
                i,
                "",
                IssueCode.INVALID_FIELD,
                "DELETE entries are not supported: the store is append-only",
                path,
            )
            continue
        if not isinstance(res, dict):
            field = path if res is None else base
            msg = "entry has no resource object" if res is None else "record is not a JSON object"
            outcomes[i] = _rejected(
                i, "", IssueCode.MISSING_FIELD if res is None else IssueCode.INVALID_FIELD, msg, field
            )
            continue
        rtype = res.get("resourceType")
        if not isinstance(rtype, str) or rtype not in R4_RESOURCE_TYPES:
            outcomes[i] = _rejected(
                i,
                "",  # not a resource type we know: it may be anything the sender typed
                IssueCode.WRONG_RESOURCE_TYPE,
                "resourceType is missing"
                if rtype is None
                else describe(
                    "resourceType", rtype, "is not a FHIR R4 resource type we accept", R4_RESOURCE_TYPES
                ),
                f"{base}.resourceType",
            )
            continue
        raw_id = res.get("id")
        if raw_id is not None and not isinstance(raw_id, str):  # never read as "no id" (fullUrl instead)
            outcomes[i] = _rejected(
                i, rtype, IssueCode.INVALID_FIELD, f"id must be a string, not {json_type(raw_id)}",
                f"{base}.id",
            )
            continue
        rid = _local_id(res, full_url)
        if rid is None and rtype in _NORMALIZERS:
            outcomes[i] = _rejected(
                i, rtype, IssueCode.MISSING_FIELD, f"{rtype} has no id and no fullUrl", f"{base}.id"
            )
            continue
        if raw_id is not None and not ID_PATTERN.match(raw_id):
            outcomes[i] = _rejected(
                i,
                rtype,
                IssueCode.INVALID_FIELD,
                "id must be 1-64 characters of A-Z a-z 0-9 - .",
                f"{base}.id",
            )
            continue
        dup = index.add(i, rtype, rid, full_url, res)
        if dup is not None:
            outcomes[i] = _rejected(
                i,
                rtype,
                IssueCode.DUPLICATE_ID,
                f"{rtype} id or fullUrl repeats entry {dup} of this payload",
                f"{base}.id",
            )
            continue
        if conditional is not None:
            index.add_conditional(i, rtype, conditional)
        pending.append((i, rtype, res, base))

    to_check = _needing_reference_check(text, index, pending)
    rows: dict[str, list[dict]] = {k: [] for k in KINDS}
    ps = ctx.pseudonymizer
    # Patients first, so that rows of other resources can carry the patient's region.
    pending.sort(key=lambda p: p[1] != "Patient")
    paths: dict[str, str] = {}  # pseudonym -> field path of the record (DATE_GENERALIZED warnings)
    for i, rtype, res, base in pending:
        rid = index.id_of(i) or ""
        pid = ps.pseudonym(record_system(source, rtype), rid) if rid else ""
        rec = fr.Rec(i, base, source, pid, ctx, index)
        if to_check is None or i in to_check:
            rec.check_references(res, stored=rtype in _SUBJECT_TYPES)
        if ctx.strict_fhir:
            rec.issues += strict_issues(res, base)
        rec.issues += unknown_elements(res, rtype, base)
        normalizer = _NORMALIZERS.get(rtype)
        # a contained Patient as subject: its row is stored with the record's
        contained = fhir_patient.contained_subject(rec, res) if rtype in _SUBJECT_TYPES else None
        if normalizer is None:
            rec.warn(
                IssueCode.RESOURCE_TYPE_NOT_STORED,
                f"{rtype} is accepted but not stored",
                f"{base}.resourceType",
            )
            kind_rows: list[dict] = []
        else:
            try:
                kind_rows = normalizer(rec, res)
            except fr.Reject:
                kind_rows = []
        status = status_of(rec.issues)  # strict errors reject even when the normalizer succeeded
        if status is not Status.REJECTED and kind_rows:
            rows[rtype.lower()].extend(kind_rows)
            rows["patient"].extend([contained] if contained else [])
        elif status is not Status.REJECTED and normalizer is not None and not any(
            i.code == IssueCode.NOT_STORED for i in rec.issues  # the normalizer said why already
        ):
            # every accepted record is in the store or says why not
            rec.warn(IssueCode.NOT_STORED, f"{rtype} accepted but produced no row to store", base)
            status = Status.ACCEPTED_WITH_WARNINGS
        outcomes[i] = RecordOutcome(i, rtype, pid, status, rec.issues)
        paths[pid] = base
    dates.add_utc_offsets(rows)
    tables = {k: pa.Table.from_pylist(v, schema=SCHEMAS[k]) for k, v in rows.items()}
    done = [o for o in outcomes if o is not None]
    tables = dates.apply(tables, policy=ctx.date_policy, pseudonymizer=ps, birth_dates=index.birth_dates,
                         outcomes=done, paths=paths)
    return NormalizedBatch(done, tables)


def _needing_reference_check(
    text: str | None, index: fr.RefIndex, pending: list[tuple[int, str, dict, str]]
) -> set[int] | None:
    """Entries whose references need the per-resource check; None = all of them.

    Fast path on the raw JSON text (one regex): when every fullUrl / ``Type/id`` reference resolves
    and every contained (``#id``) reference sits in a resource that has ``contained``, only those
    resources are checked one by one.
    """
    if text is None:
        return None
    found = fr.REFERENCE_PATTERN.findall(text)
    local = [r for r in found if r.startswith("#")]
    if any(index.resolve(r) is None for r in {r for r in found if not r.startswith("#")}):
        return None
    if not local:
        return set()
    with_contained = {i: res for i, _t, res, _b in pending if "contained" in res}
    inside = sum(
        1
        for res in with_contained.values()
        for r in fr.REFERENCE_PATTERN.findall(json.dumps(res))
        if r.startswith("#")
    )
    return set(with_contained) if inside == len(local) else None


def _rejected(i: int, rtype: str, code: str, message: str, field: str) -> RecordOutcome:
    return RecordOutcome(i, rtype, "", Status.REJECTED, [Issue(code, message, field, Severity.ERROR)])
