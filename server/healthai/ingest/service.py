"""The Ingest gRPC servicer (thin: proto -> normalize -> store -> proto) and its core object.

Per request: the payload is normalized (``healthai.normalize``), the rows of accepted records are
committed to the store (fsynced) and only then is the response sent. Whole-request problems (no
source, no payload, malformed JSON, a bad Arrow stream, too many records) are gRPC errors; problems
of single records are outcomes (a rejected record writes nothing, its siblings are still stored). A
store the OS refuses to write (full disk, read-only mount) is UNAVAILABLE naming the OS's reason (errno
and path logged): nothing was acknowledged, and the SDK's retry is safe (idempotent store). From that
error until the next commit succeeds, ``IngestCore.on_store_writable(False, reason)`` has told the plugin
(health ``healthai.v1.Ingest`` NOT_SERVING); the next successful commit calls it with True.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence

import grpc
import pyarrow as pa

from healthai import observability
from healthai.errors import HealthAIError, InvalidInput, TooLarge
from healthai.ingest import convert
from healthai.normalize.birth_guard import BirthDateGuard
from healthai.normalize.context import NormalizeContext
from healthai.normalize.dates import warn_generalized
from healthai.normalize.fhir import normalize_fhir
from healthai.normalize.flat import normalize_table, normalize_tables
from healthai.normalize.gc_pause import gc_paused
from healthai.normalize.records import NormalizedBatch
from healthai.store import CommitResult, ParquetStore, new_batch_id
from healthai.v1 import common_pb2, ingest_pb2, ingest_pb2_grpc

log = logging.getLogger(__name__)

MAX_SOURCE_CHARS = 256


class IngestCore:
    """Normalize one request and commit rows; synchronous (the servicer runs it in a thread)."""

    def __init__(self, ctx: NormalizeContext, store: ParquetStore, max_records: int,
                 max_response_bytes: int = 64 * 1024 * 1024) -> None:
        self.ctx = ctx
        self.store = store
        if store.guard is None:  # no stored event date equals a birth date, whatever the arrival order
            store.set_guard(BirthDateGuard(ctx.pseudonymizer))
        self.max_records = max_records
        self.max_response_bytes = max_response_bytes
        # (writable, reason) on each change: False at a store write error, True at the next good commit;
        # called from the worker thread that committed
        self.on_store_writable: Callable[[bool, str], None] | None = None
        self.store_writable = True
        self._writable_lock = threading.Lock()

    def normalize(self, request: ingest_pb2.IngestRequest) -> NormalizedBatch:
        with gc_paused():
            return self._normalize(request)

    def _normalize(self, request: ingest_pb2.IngestRequest) -> NormalizedBatch:
        source = _check_source(request.source)
        payload = request.WhichOneof("payload")
        if payload == "fhir":
            if not request.fhir.json:
                raise InvalidInput("fhir.json is empty", field="fhir.json")
            try:
                batch = normalize_fhir(request.fhir.json, ctx=self.ctx, source=source)
            except InvalidInput as e:  # the payload as a whole (not JSON, not a resource or Bundle)
                field = f"fhir.json.{e.field}" if e.field else "fhir.json"
                raise InvalidInput(f"{field}: {e.message}", field=field) from e
            self._check_count(len(batch.outcomes), "FHIR resources")
            return batch
        if payload == "flat":
            flat = request.flat
            self._check_count(sum(len(getattr(flat, attr)) for attr, *_ in convert.FLAT_KINDS.values()),
                              "flat records")
            return _merge(normalize_tables(convert.flat_tables(flat), ctx=self.ctx, source=source))
        if payload == "arrow":
            kind, table = convert.arrow_table(request.arrow)
            self._check_count(table.num_rows, "Arrow records")
            try:
                return normalize_table(kind, table, ctx=self.ctx, source=source)
            except InvalidInput as e:  # e.g. a required column is missing
                field = f"arrow.ipc_stream.{e.field}" if e.field else "arrow.ipc_stream"
                raise InvalidInput(f"arrow.ipc_stream: {e.message}", field=field) from e
        raise InvalidInput("payload: one of fhir, flat or arrow is required", field="payload")

    def commit(self, tables: dict[str, pa.Table], batch_id: str) -> CommitResult:
        return self.store.commit({k: t for k, t in tables.items() if t.num_rows}, batch_id=batch_id)

    def commit_or_unavailable(self, tables: dict[str, pa.Table], batch_id: str) -> CommitResult:
        """``commit``; a store the OS refuses to write (full disk, read-only mount, lost permission) is
        ``StoreUnavailable``, which the SDK retries: the batch was not acknowledged, and a retry is safe
        (a commit that became durable before the error is found by the next one, its records reported
        already stored)."""
        try:
            result = self.commit(tables, batch_id)
        except OSError as e:
            reason = _os_reason(e)
            log.error("batch %s: the store %s cannot be written: %s%s", batch_id, self.store.display_uri,
                      reason, f" ({e.filename})" if e.filename else "")
            self._note_writable(False, f"the store cannot be written ({reason})")
            raise StoreUnavailable(f"the store cannot be written ({reason}); nothing was acknowledged: "
                                   "retry later (records already stored are recognized)") from e
        self._note_writable(True, "a commit to the store succeeded")
        return result

    def _note_writable(self, writable: bool, reason: str) -> None:
        with self._writable_lock:
            if self.store_writable == writable:
                return
            self.store_writable = writable
            if self.on_store_writable is not None:
                self.on_store_writable(writable, reason)

    def _check_count(self, n: int, what: str) -> None:
        if n > self.max_records:
            raise TooLarge(f"request holds {n} {what}; the limit is max_records_per_request="
                           f"{self.max_records}", field="max_records_per_request")


class StoreUnavailable(HealthAIError):
    """The store cannot be written now: UNAVAILABLE, which callers retry (the message names the OS's
    reason, never the store's path or a record's value)."""

    code = grpc.StatusCode.UNAVAILABLE


def _os_reason(e: OSError) -> str:
    """``ENOSPC: No space left on device`` (errno name and text); pyarrow's errors may carry no errno."""
    if e.errno is not None and e.errno in errno.errorcode:
        return f"{errno.errorcode[e.errno]}: {e.strerror or os.strerror(e.errno)}"
    return type(e).__name__


def _check_source(source: str) -> str:
    if not source.strip():
        raise InvalidInput("source is empty: name the sending system (e.g. 'hospital-a/ehr')", field="source")
    if len(source) > MAX_SOURCE_CHARS:
        raise InvalidInput(f"source has {len(source)} characters; at most {MAX_SOURCE_CHARS} allowed",
                           field="source")
    return source


def _merge(batches: list[NormalizedBatch]) -> NormalizedBatch:
    if len(batches) == 1:
        return batches[0]
    tables: dict[str, list[pa.Table]] = {}
    for b in batches:
        for kind, t in b.tables.items():
            tables.setdefault(kind, []).append(t)
    return NormalizedBatch(outcomes=[o for b in batches for o in b.outcomes],
                           tables={k: pa.concat_tables(ts) for k, ts in tables.items()})


def _finish(response: ingest_pb2.IngestResponse, commits: list[CommitResult], batch_id: str,
            max_bytes: int) -> ingest_pb2.IngestResponse:
    """Receipt, ALREADY_STORED marks and the size guard: if the response would exceed ``max_bytes``,
    outcomes without issues are left out (the records are stored: the answer must get through, and
    ``statuses`` stays complete)."""
    for commit in commits:
        convert.mark_already_stored(response.outcomes, commit)
        convert.mark_revised(response.outcomes, commit)
        convert.mark_generalized(response.outcomes, commit)
    response.receipt.CopyFrom(convert.receipt_to_proto(batch_id, commits))
    response.rejected = sum(1 for s in response.statuses if s == common_pb2.RECORD_STATUS_REJECTED)
    response.accepted = len(response.statuses) - response.rejected
    stored = response.receipt.stored
    observability.note(records=len(response.statuses), accepted=response.accepted,
                       rejected=response.rejected, stored=sum(stored.values()),
                       patients=int(stored.get("patient", 0)))
    if response.ByteSize() > max_bytes:
        log.warning("response of batch %s exceeds %d bytes: sending outcomes with issues only", batch_id,
                    max_bytes)
        kept = [o for o in response.outcomes if o.issues]
        del response.outcomes[:]
        response.outcomes.extend(kept)
    return response


_OUTCOME_LABELS = {common_pb2.RECORD_STATUS_ACCEPTED: "accepted",
                   common_pb2.RECORD_STATUS_ACCEPTED_WITH_WARNINGS: "accepted_with_warnings",
                   common_pb2.RECORD_STATUS_REJECTED: "rejected"}


def _count_records(request: ingest_pb2.IngestRequest, statuses: Sequence[int]) -> None:
    """Prometheus: ingest records by input format and outcome."""
    fmt = request.WhichOneof("payload") or "none"
    for status, n in Counter(statuses).items():
        observability.count_ingest_records(fmt, _OUTCOME_LABELS.get(status, "unknown"), n)


class IngestServicer(ingest_pb2_grpc.IngestServicer):
    def __init__(self, core: IngestCore) -> None:
        self.core = core

    async def IngestBatch(self, request: ingest_pb2.IngestRequest,
                          context: grpc.aio.ServicerContext) -> ingest_pb2.IngestResponse:
        batch_id = new_batch_id()

        def work() -> ingest_pb2.IngestResponse:  # CPU-bound: off the event loop
            batch = self.core.normalize(request)
            commit = self.core.commit_or_unavailable(batch.tables, batch_id)
            with gc_paused():  # one message per record (no I/O from here on)
                warn_generalized(batch.outcomes, commit.generalized)
                response = ingest_pb2.IngestResponse()
                response.statuses.extend(convert.add_outcomes(response.outcomes, request, batch.outcomes))
                _count_records(request, response.statuses)
                log.info("batch %s: %d records, stored %s (%d new versions), %d duplicates", batch_id,
                         len(batch.outcomes), commit.stored, sum(map(len, commit.revised.values())),
                         commit.duplicates)
                return _finish(response, [commit], batch_id, self.core.max_response_bytes)

        return await asyncio.to_thread(work)

    async def IngestStream(self, request_iterator: AsyncIterator[ingest_pb2.IngestRequest],
                           context: grpc.aio.ServicerContext) -> ingest_pb2.IngestResponse:
        batch_id = new_batch_id()
        response = ingest_pb2.IngestResponse()
        pending: list[NormalizedBatch] = []
        commits: list[CommitResult] = []

        def take(request: ingest_pb2.IngestRequest, request_index: int) -> None:
            try:
                batch = self.core.normalize(request)
            except HealthAIError as e:  # name the offending request of the stream
                raise type(e)(f"request {request_index}: {e.message}", field=e.field) from e
            start = len(response.statuses)
            response.statuses.extend(convert.add_outcomes(response.outcomes, request, batch.outcomes,
                                                          request_index))
            _count_records(request, response.statuses[start:])
            pending.append(batch)
            if sum(b.rows() for b in pending) >= self.core.max_records:
                flush()

        def flush() -> None:
            if pending:
                commits.append(self.core.commit_or_unavailable(_merge(pending).tables, batch_id))
                pending.clear()

        request_index = 0
        async for request in request_iterator:
            await asyncio.to_thread(take, request, request_index)
            request_index += 1
        await asyncio.to_thread(flush)
        log.info("stream %s: %d requests, %d records, %d commits", batch_id, request_index,
                 len(response.statuses), len(commits))
        return await asyncio.to_thread(_finish, response, commits, batch_id, self.core.max_response_bytes)
