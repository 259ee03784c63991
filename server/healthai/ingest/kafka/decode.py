"""One Kafka message -> a normalized batch, by its ``content-type`` header.

| content-type | value |
|---|---|
| ``application/fhir+json`` (or ``application/json``) | FHIR R4 JSON: Bundle, resource or array |
| ``application/vnd.apache.arrow.stream`` | Arrow IPC stream of flat records of one kind |
| ``application/vnd.apache.parquet`` | a Parquet file of flat records of one kind |
| ``application/x-protobuf`` | ``healthai.v1.FlatRecords`` (any mix of kinds) |

Arrow and Parquet messages name their record kind in the ``healthai-kind`` header (patient,
encounter, condition, observation). ``healthai-source`` names the sending system (else the
consumer's default source). A message that cannot be read as a whole raises
:class:`healthai.errors.InvalidInput` naming the header or the part of the value at fault.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.parquet as pq
from google.protobuf.message import DecodeError

from healthai.errors import InvalidInput
from healthai.ingest.convert import FLAT_KINDS, PROTO_KIND, arrow_table
from healthai.ingest.convert import flat_tables as flat_tables_of
from healthai.ingest.service import IngestCore, _check_source
from healthai.normalize.flat import normalize_table
from healthai.normalize.records import KINDS, NormalizedBatch
from healthai.v1 import ingest_pb2

FHIR, ARROW, PARQUET, PROTOBUF = "fhir", "arrow", "parquet", "protobuf"
CONTENT_TYPES = {
    "application/fhir+json": FHIR,
    "application/json": FHIR,
    "application/vnd.apache.arrow.stream": ARROW,
    "application/vnd.apache.parquet": PARQUET,
    "application/x-protobuf": PROTOBUF,
}
H_CONTENT_TYPE, H_KIND, H_SOURCE = "content-type", "healthai-kind", "healthai-source"


def headers_of(raw: Sequence[tuple[str, bytes | None]] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in raw or ():
        if value is not None:
            out[key.lower()] = value.decode("utf-8", errors="replace")
    return out


def message_format(headers: dict[str, str]) -> str:
    ctype = headers.get(H_CONTENT_TYPE)
    if ctype is None:
        raise InvalidInput(f"message has no {H_CONTENT_TYPE} header (one of {', '.join(CONTENT_TYPES)})",
                           field=f"headers.{H_CONTENT_TYPE}")
    fmt = CONTENT_TYPES.get(ctype.split(";", 1)[0].strip().lower())
    if fmt is None:
        raise InvalidInput(f"{H_CONTENT_TYPE} is not one of {', '.join(CONTENT_TYPES)}",
                           field=f"headers.{H_CONTENT_TYPE}")
    return fmt


def flat_tables(core: IngestCore, value: bytes | None, headers: dict[str, str], fmt: str,
                default_source: str) -> tuple[str, dict[str, pa.Table]]:
    """(source, kind -> table) of an Arrow, Parquet or protobuf message, checked like an Ingest
    request (size limit, decodable); normalization is left to the caller. Raises InvalidInput."""
    source = _check_source(headers.get(H_SOURCE) or default_source)
    if not value:
        raise InvalidInput("message value is empty", field="value")
    if fmt == PROTOBUF:
        flat = ingest_pb2.FlatRecords()
        try:
            flat.ParseFromString(value)
        except DecodeError as e:
            raise InvalidInput(f"value is not a healthai.v1.FlatRecords message: {e}", field="value") from e
        core._check_count(sum(len(getattr(flat, a)) for a, *_ in FLAT_KINDS.values()), "flat records")
        return source, flat_tables_of(flat)
    kind = headers.get(H_KIND)
    if kind not in KINDS:
        raise InvalidInput(f"{fmt} messages need a {H_KIND} header (one of {', '.join(KINDS)})",
                           field=f"headers.{H_KIND}")
    if fmt == ARROW:
        _, table = arrow_table(ingest_pb2.ArrowRecords(kind=PROTO_KIND[kind], ipc_stream=value))
    else:
        try:
            table = pq.read_table(pa.BufferReader(value))
        except (pa.ArrowInvalid, OSError) as e:
            raise InvalidInput(f"value is not a readable Parquet file: {str(e)[:200]}", field="value") from e
    core._check_count(table.num_rows, f"{fmt} records")
    return source, {kind: table}


def normalize_message(core: IngestCore, value: bytes | None, headers: dict[str, str], fmt: str,
                      default_source: str) -> NormalizedBatch:
    """Normalize one message (the same validation as the Ingest RPCs). Raises InvalidInput."""
    source = headers.get(H_SOURCE) or default_source
    if not value:
        raise InvalidInput("message value is empty", field="value")
    if fmt == FHIR:
        fhir = ingest_pb2.FhirPayload(json=value)
        return core.normalize(ingest_pb2.IngestRequest(source=source, fhir=fhir))
    if fmt == PROTOBUF:
        flat = ingest_pb2.FlatRecords()
        try:
            flat.ParseFromString(value)
        except DecodeError as e:
            raise InvalidInput(f"value is not a healthai.v1.FlatRecords message: {e}", field="value") from e
        return core.normalize(ingest_pb2.IngestRequest(source=source, flat=flat))
    kind = headers.get(H_KIND)
    if kind not in KINDS:
        raise InvalidInput(f"{fmt} messages need a {H_KIND} header (one of {', '.join(KINDS)})",
                           field=f"headers.{H_KIND}")
    if fmt == ARROW:
        arrow = ingest_pb2.ArrowRecords(kind=PROTO_KIND[kind], ipc_stream=value)
        return core.normalize(ingest_pb2.IngestRequest(source=source, arrow=arrow))
    try:
        table = pq.read_table(pa.BufferReader(value))
    except (pa.ArrowInvalid, OSError) as e:
        raise InvalidInput(f"value is not a readable Parquet file: {str(e)[:200]}", field="value") from e
    if table.num_rows > core.max_records:
        raise InvalidInput(f"Parquet message holds {table.num_rows} records; the limit is "
                           f"max_records_per_request={core.max_records}", field="value")
    try:
        return normalize_table(kind, table, ctx=core.ctx, source=source)
    except InvalidInput as e:
        raise InvalidInput(f"value: {e.message}", field=f"value.{e.field}" if e.field else "value") from e
