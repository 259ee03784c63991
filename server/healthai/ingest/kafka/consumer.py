"""The Kafka ingest loop: consume a batch, normalize, commit to the store, dead-letter, commit offsets.

Per batch (at most ``batch_max_messages`` messages and ``batch_max_bytes`` of values):

1. each message is normalized like an Ingest request (:mod:`.decode`); an unreadable message is
   rejected whole;
2. the accepted rows of all messages go to the store in one durable commit (fsynced), on a writer
   thread while the next batch is normalized; each kind's rows in the batch's message order, so
   within a partition a record's latest version is the one at the highest offset (Kafka orders
   nothing across partitions, nor does this);
3. rejected records go to the dead-letter topic (:mod:`.dlq`), acknowledged by the brokers;
4. only then are the offsets committed (synchronously).

A crash anywhere re-delivers the uncommitted batch: the store drops rows it already holds (its
``(source, record_key)`` index) and the DLQ skips entries behind its watermark, so every record is
stored once and every reject dead-lettered once. Rebalances happen inside ``consume`` between batches,
so nothing is in flight when partitions are revoked.

A consumer expelled from the group mid-batch (it did not poll within ``max_poll_interval_ms``, e.g. a
store write stalled) must not dead-letter: the partitions' new owner re-consumes the batch and may
already have read the DLQ watermark. So before its DLQ entries a batch checks that it is still at
least ``dlq_timeout_ms`` (which bounds the produce: ``message.timeout.ms``) away from that deadline;
if not, or if the offset commit is refused by the group, the batch is abandoned (its store rows stay:
they are idempotent) and the consumer rejoins from the committed offsets. A batch's DLQ send also
re-reads the watermark when the DLQ partition's end moved since this consumer last wrote it. What
this cannot cover is a consumer expelled by session timeout (heartbeats lost) while it can still
reach the DLQ brokers; only Kafka transactions fence that (KIP-447), which librdkafka's mock cluster
does not implement (its TxnOffsetCommit neither checks the generation nor stores offsets).

Brokers unreachable: at start-up the consumer waits ``connect_timeout_s`` for their metadata (SIGTERM
ends the wait), then refuses to start; mid-run librdkafka keeps retrying while :mod:`.health` logs each
distinct error once plus periodic summaries and reports the outage (``healthai_kafka_broker_up`` 0, no
lag). SIGTERM finishes the batch, commits, leaves the group and exits 0. Memory is bounded by the batch
limits plus librdkafka's prefetch queue (``fetch_queue_kbytes``).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from healthai.app.settings import Settings
from healthai.errors import HealthAIError, InvalidInput, TooLarge
from healthai.ingest.kafka import batching, decode
from healthai.ingest.kafka.dlq import DeadLetters, DlqEntry
from healthai.ingest.kafka.health import BrokerState, Throttle
from healthai.ingest.kafka.metrics import KafkaMetrics
from healthai.ingest.key_check import check_store_key
from healthai.ingest.service import IngestCore
from healthai.normalize.context import NormalizeContext
from healthai.normalize.records import KINDS, SCHEMAS, Severity
from healthai.store import ParquetStore, new_batch_id

log = logging.getLogger(__name__)

FAULT_ENV = "HEALTHAI_KAFKA_FAULT"  # fault injection for the crash tests (see _parse_fault)


def _import_kafka() -> Any:
    try:
        import confluent_kafka
    except ImportError as e:
        raise InvalidInput("Kafka ingest needs confluent-kafka: pip install 'confluent-kafka==2.16.1' "
                           "(its wheel bundles librdkafka)", field="kafka") from e
    return confluent_kafka


@dataclass
class Prepared:
    tables: dict[str, pa.Table]
    dead: list[DlqEntry]
    counts: Counter[tuple[str, str]]
    offsets: list[Any]
    messages: int


class Expelled(RuntimeError):
    """The consumer is (or may be) out of the group: abandon the batch before its DLQ entries."""


_GROUP_ERRORS = ("ILLEGAL_GENERATION", "UNKNOWN_MEMBER_ID", "REBALANCE_IN_PROGRESS", "FENCED_INSTANCE_ID",
                 "_STATE", "_ASSIGNMENT_LOST", "_MAX_POLL_EXCEEDED")


class KafkaIngest:
    """Owns the consumer, the DLQ producer and the store; ``run(stop)`` until ``stop`` is set."""

    def __init__(self, settings: Settings, ctx: NormalizeContext | None = None) -> None:
        ck = _import_kafka()
        self.ck = ck
        self.ks = ks = settings.kafka
        self.ctx = ctx or NormalizeContext.create(
            key=settings.pseudonym_key(), snomed_map_nlm=settings.snomed_map_nlm,
            omop_concept=settings.omop_concept, omop_relationship=settings.omop_concept_relationship,
            date_policy=settings.date_policy, reference_date=settings.latest_event_date,
            code_systems=settings.code_systems)
        self.store = ParquetStore(settings.store_uri)
        self._key_is_random = ctx is None and settings.random_key()
        self.core = IngestCore(self.ctx, self.store, settings.max_records_per_request)
        self.source = ks.source or ks.topic
        base = ks.client_config()
        self._throttle = Throttle()
        self.metrics = KafkaMetrics(ks.topic)
        self._broker = BrokerState(self.metrics.broker_up)
        # the consumer's librdkafka logs go through the throttle (served by ``consume``); the producer's
        # and the peek consumer's only from CRITICAL (they are not polled while idle, and their brokers'
        # errors are the consumer's); ``properties`` may override either
        self.consumer = ck.Consumer({
            "logger": self._throttle, "statistics.interval.ms": 5000, **base,
            "stats_cb": self._broker.stats, "group.id": ks.group_id, "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed", "queued.max.messages.kbytes": ks.fetch_queue_kbytes,
            "session.timeout.ms": ks.session_timeout_ms, "max.poll.interval.ms": ks.max_poll_interval_ms,
            "error_cb": self._error, **ks.properties})
        producer = ck.Producer({"log_level": 2, **base, "enable.idempotence": True, "acks": "all",
                                "linger.ms": 5, "message.timeout.ms": ks.dlq_timeout_ms, **ks.properties})
        props = {**base, **ks.properties}
        self._max_poll_s = int(props.get("max.poll.interval.ms", ks.max_poll_interval_ms)) / 1000
        self._dlq_s = int(props.get("message.timeout.ms", ks.dlq_timeout_ms)) / 1000
        self._last_poll = time.monotonic()
        peek = ck.Consumer({"log_level": 2, **base, "group.id": f"{ks.group_id}.dlq-peek",
                            "enable.auto.commit": False, **ks.properties})
        self.dlq = DeadLetters(producer, peek, ks.dlq_topic, timeout_s=self._dlq_s)
        self._fault = _parse_fault(os.environ.get(FAULT_ENV, ""))
        # one writer thread: the store commit of batch k overlaps the normalization of batch k + 1
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="kafka-writer")
        self._inflight: Future[None] | None = None
        self._stages: Counter[str] = Counter()
        self._lag_at = 0.0

    # ------------------------------------------------------------------ lifecycle
    def run(self, stop: threading.Event) -> int:
        self.store.open()
        try:
            check_store_key(self.store, self.ctx.pseudonymizer, record=not self._key_is_random)
            started = self.dlq.check_partitions(self.ks.topic, stop, self.ks.connect_timeout_s)
        except BaseException:
            self._close()
            raise
        if not started:
            self._close()
            log.info("stopped while waiting for the brokers")
            return 0
        self._broker.set(True)
        self.consumer.subscribe([self.ks.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info("consuming %s as group %s (dlq %s)", self.ks.topic, self.ks.group_id, self.ks.dlq_topic)
        try:
            while not stop.is_set():
                msgs = self.consumer.consume(self.ks.batch_max_messages, self.ks.poll_timeout_s)
                self._last_poll = time.monotonic()
                if any(m.error() is None for m in msgs):
                    self._broker.set(True)
                self._throttle.flush()
                try:
                    for chunk in self._chunks(msgs):
                        prepared = self.prepare(chunk)  # normalizing this batch overlaps the last write
                        self._drain()
                        self._inflight = self._writer.submit(self.finish, prepared)
                    if not msgs:
                        self._drain()
                except Expelled as e:
                    self._rejoin(e)
                self._update_lag()
            try:
                self._drain()
            except Expelled as e:  # stopping: the batch is re-consumed by the group
                log.warning("last batch abandoned: %s", e)
        finally:
            self._writer.shutdown(wait=True)
            self._close()
        log.info("stopped: %d dead-lettered", self.dlq.sent)
        return 0

    def _close(self) -> None:
        self._broker.closing = True
        self.consumer.close()  # leaves the group: partitions move to the other consumers at once
        self.dlq.producer.flush(10)
        self.dlq.peek.close()
        self.store.close()

    def _chunks(self, msgs: list[Any]) -> list[list[Any]]:
        out: list[list[Any]] = [[]]
        size = 0
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() != self.ck.KafkaError._PARTITION_EOF:
                    self._throttle.emit(logging.WARNING, f"kafka: consumer error: {err.str()}")
                    if err.fatal():
                        raise RuntimeError(f"fatal Kafka error: {err}")
                continue
            n = len(m.value() or b"")
            if out[-1] and size + n > self.ks.batch_max_bytes:
                out.append([])
                size = 0
            out[-1].append(m)
            size += n
        return [c for c in out if c]

    def _on_assign(self, _consumer: Any, partitions: list[Any]) -> None:
        for tp in partitions:
            self.dlq.load_watermark(tp.partition)
        log.info("assigned partitions %s", sorted(tp.partition for tp in partitions))

    def _drain(self) -> None:
        """Wait for the batch being written (its store commit, DLQ entries and offsets); re-raise."""
        if self._inflight is not None:
            inflight, self._inflight = self._inflight, None
            inflight.result()

    def _on_revoke(self, _consumer: Any, partitions: list[Any]) -> None:
        self._drain()  # the batch in flight commits its offsets before the partitions go
        for tp in partitions:
            self.dlq.watermarks.pop(tp.partition, None)
            self.metrics.drop_lag(tp.partition)
        log.info("revoked partitions %s", sorted(tp.partition for tp in partitions))

    def _rejoin(self, why: Expelled) -> None:
        """Drop what was consumed after the committed offsets and rejoin the group from them."""
        log.warning("batch abandoned before its dead letters and offsets: %s; rejoining the group", why)
        self.consumer.unsubscribe()
        self.dlq.watermarks.clear()
        self.consumer.subscribe([self.ks.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)

    def _check_lease(self) -> None:
        """Raise Expelled unless the DLQ produce surely ends before librdkafka's poll deadline."""
        left = self._max_poll_s - (time.monotonic() - self._last_poll)
        if left < self._dlq_s + 1.0:
            raise Expelled(f"{left:.1f} s left before max.poll.interval.ms; the DLQ produce may take "
                           f"{self._dlq_s:.1f} s")

    def _error(self, err: Any) -> None:
        """librdkafka's ``error_cb`` (served by ``consume``): counted, logged through the throttle."""
        self.metrics.client_error(err.name())
        if err.code() == self.ck.KafkaError._ALL_BROKERS_DOWN:
            self._broker.set(False, err.str())
        self._throttle.emit(logging.ERROR if err.fatal() else logging.WARNING,
                            f"kafka: {err.str()}")  # the text of librdkafka's log line: logged once

    # ------------------------------------------------------------------ one batch
    def process(self, msgs: list[Any]) -> None:
        """One batch, start to end (normalize, store, DLQ, offsets)."""
        self.finish(self.prepare(msgs))

    def prepare(self, msgs: list[Any]) -> Prepared:
        """Normalize a batch: the rows to store, the DLQ entries, the offsets to commit."""
        pending = [self._decode(m, pos) for pos, m in enumerate(msgs)]
        rows = batching.normalize_flat(self.ctx, [p for p in pending if p.fmt != decode.FHIR and
                                                  p.error is None])
        for m, p in zip(msgs, pending, strict=True):
            if p.fmt == decode.FHIR and p.error is None:
                try:
                    batch = decode.normalize_message(self.core, m.value(), p.headers, p.fmt, self.source)
                except HealthAIError as e:
                    p.error = e
                    continue
                p.add(batch.outcomes)
                rows += [batching.Rows(t, [p]) for t in batch.tables.values() if t.num_rows]
        dead: list[DlqEntry] = []
        counts: Counter[tuple[str, str]] = Counter()
        for m, p in zip(msgs, pending, strict=True):
            if p.error is not None:
                reason = "MESSAGE_TOO_LARGE" if isinstance(p.error, TooLarge) else "MESSAGE_INVALID"
                log.warning("message %s[%d]@%d rejected whole (%s at %s): %s", m.topic(), m.partition(),
                            m.offset(), reason, p.error.field or "-", p.error.message)
                dead.append(DlqEntry(m.topic(), m.partition(), m.offset(), 0, -1, reason, p.error.field or "",
                                     p.error.message, original=m.value() or b"",
                                     original_headers=list(m.headers() or [])))
                counts[(p.fmt, "rejected_message")] += 1
                continue
            # a canonical order (kind, index): DLQ sequence numbers must not depend on the batch
            rejected = sorted(p.rejected, key=lambda o: (_KIND_ORDER.get(o.kind, 9), o.index))
            for status, n in p.counts.items():
                counts[(p.fmt, status.value.lower())] += n
            for seq, o in enumerate(rejected):
                first = next(i for i in o.issues if i.severity is Severity.ERROR)
                dead.append(DlqEntry(
                    m.topic(), m.partition(), m.offset(), seq, o.index, first.code, first.field_path,
                    first.message, o.resource_type,
                    [{"code": i.code, "field_path": i.field_path, "message": i.message,
                      "severity": i.severity.value} for i in o.issues]))
        # each kind's rows in offset order (per partition): the store's latest version of a record is
        # its last row in the commit, so a correction later in the batch must come later here
        merged: dict[str, list[batching.Rows]] = {}
        for r in rows:
            if r.table.num_rows:
                merged.setdefault(_kind_of(r.table), []).append(r)
        offsets: dict[int, Any] = {}
        for m in msgs:
            offsets[m.partition()] = self.ck.TopicPartition(m.topic(), m.partition(), m.offset() + 1)
        return Prepared({k: batching.in_batch_order(v) for k, v in merged.items()}, dead, counts,
                        list(offsets.values()), len(msgs))

    def finish(self, b: Prepared) -> None:
        """Store (durably), dead-letter, then commit the offsets: in this order, always."""
        commit = self.core.commit(b.tables, new_batch_id())
        self._stage("after-store")
        if b.dead:
            self._check_lease()
            self.dlq.send(b.dead)
        self._stage("after-dlq")
        try:
            self.consumer.commit(offsets=b.offsets, asynchronous=False)
        except self.ck.KafkaException as e:
            if e.args and getattr(e.args[0], "name", lambda: "")() in _GROUP_ERRORS:
                raise Expelled(f"offset commit refused: {e.args[0].name()}") from e
            raise
        self.metrics.batch(b.counts, stored=sum(commit.stored.values()), duplicates=commit.duplicates,
                           dead=len(b.dead), messages=b.messages)
        log.info("batch of %d messages: stored %s (%d new versions of stored records), %d duplicates, "
                 "%d dead-lettered", b.messages, commit.stored, sum(map(len, commit.revised.values())),
                 commit.duplicates, len(b.dead))

    def _decode(self, m: Any, pos: int) -> batching.Pending:
        headers = decode.headers_of(m.headers())
        p = batching.Pending("unknown", pos, headers=headers)
        try:
            p.fmt = decode.message_format(headers)
            if p.fmt != decode.FHIR:
                p.source, p.tables = decode.flat_tables(self.core, m.value(), headers, p.fmt, self.source)
        except HealthAIError as e:
            p.error = e
        return p

    def _stage(self, name: str) -> None:
        self._stages[name] += 1
        if self._fault is not None and self._fault[:2] == (f"stall-{name}", self._stages[name]):
            log.warning("fault injection: stall %s #%d for %.1f s", name, self._stages[name], self._fault[2])
            time.sleep(self._fault[2])
        if self._fault is not None and self._fault[:2] == (name, self._stages[name]):
            log.warning("fault injection: SIGKILL %s #%d", name, self._stages[name])
            os.kill(os.getpid(), signal.SIGKILL)

    def _update_lag(self) -> None:
        now = time.monotonic()
        if now - self._lag_at < 1.0 or self._broker.up is False:  # in an outage the lag is unknown
            return
        self._lag_at = now
        try:
            assigned = self.consumer.assignment()
            if not assigned:
                return
            positions = self.consumer.position(assigned)
            if any(tp.offset < 0 for tp in positions):  # nothing fetched yet: the committed offsets
                committed = {tp.partition: tp.offset for tp in self.consumer.committed(assigned, 5)}
            for tp in positions:
                offset = tp.offset if tp.offset >= 0 else committed.get(tp.partition, -1)
                _low, high = self.consumer.get_watermark_offsets(tp, cached=tp.offset >= 0, timeout=5)
                if high >= 0 and offset >= 0:
                    self.metrics.lag(tp.partition, max(0, high - offset))
        except self.ck.KafkaException as e:  # lag is best effort; the next batch retries
            log.debug("lag not updated: %s", e)


_KIND_ORDER = {k: i for i, k in enumerate(KINDS)}


def _kind_of(table: pa.Table) -> str:
    """The record kind of a normalized table (by its schema)."""
    return next(k for k, schema in SCHEMAS.items() if table.schema.names == schema.names)


def _parse_fault(spec: str) -> tuple[str, int, float] | None:
    """"after-store:N" | "after-dlq:N" (SIGKILL) or "stall-after-store:N:SECONDS" (sleep)."""
    if not spec:
        return None
    name, _, rest = spec.partition(":")
    n, _, seconds = rest.partition(":")
    return name, int(n or 1), float(seconds or 0)
