"""The Kafka ingest loop: consume a batch, normalize, commit to the store, dead-letter, commit offsets.

Per batch (at most ``batch_max_messages`` messages and ``batch_max_bytes`` of values):

1. each message is normalized like an Ingest request (:mod:`.decode`); an unreadable message is
   rejected whole;
2. the accepted rows of all messages go to the store in one durable commit (fsynced);
3. rejected records go to the dead-letter topic (:mod:`.dlq`), acknowledged by the brokers;
4. only then are the offsets committed (synchronously).

A crash anywhere re-delivers the uncommitted batch: the store drops rows it already holds (its
``(source, record_key)`` index) and the DLQ skips entries behind its watermark, so every record is
stored once and every reject dead-lettered once. Rebalances happen inside ``consume`` between batches,
so nothing is in flight when partitions are revoked. SIGTERM finishes the batch, commits, leaves the
group and exits 0. Memory is bounded by the batch limits plus librdkafka's prefetch queue
(``fetch_queue_kbytes``).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import Counter
from typing import Any

import pyarrow as pa

from healthai.app.settings import Settings
from healthai.errors import HealthAIError, InvalidInput, TooLarge
from healthai.ingest.kafka import decode
from healthai.ingest.kafka.dlq import DeadLetters, DlqEntry
from healthai.ingest.kafka.metrics import KafkaMetrics
from healthai.ingest.service import IngestCore
from healthai.normalize.context import NormalizeContext
from healthai.normalize.records import Severity, Status
from healthai.store import ParquetStore, new_batch_id

log = logging.getLogger(__name__)

FAULT_ENV = "HEALTHAI_KAFKA_FAULT"  # fault injection for the crash tests: "after-store:N" | "after-dlq:N"


def _import_kafka() -> Any:
    try:
        import confluent_kafka
    except ImportError as e:
        raise InvalidInput("Kafka ingest needs confluent-kafka: pip install 'confluent-kafka==2.16.1' "
                           "(its wheel bundles librdkafka)", field="kafka") from e
    return confluent_kafka


class KafkaIngest:
    """Owns the consumer, the DLQ producer and the store; ``run(stop)`` until ``stop`` is set."""

    def __init__(self, settings: Settings, ctx: NormalizeContext | None = None) -> None:
        ck = _import_kafka()
        self.ck = ck
        self.ks = ks = settings.kafka
        self.ctx = ctx or NormalizeContext.create(
            key=settings.pseudonym_key(), snomed_map_nlm=settings.snomed_map_nlm,
            omop_concept=settings.omop_concept, omop_relationship=settings.omop_concept_relationship,
            date_policy=settings.date_policy)
        self.store = ParquetStore(settings.store_uri)
        self.core = IngestCore(self.ctx, self.store, settings.max_records_per_request)
        self.source = ks.source or ks.topic
        base = ks.client_config()
        self.consumer = ck.Consumer({
            **base, "group.id": ks.group_id, "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "isolation.level": "read_committed", "queued.max.messages.kbytes": ks.fetch_queue_kbytes,
            "session.timeout.ms": ks.session_timeout_ms, "error_cb": self._error, **ks.properties})
        producer = ck.Producer({**base, "enable.idempotence": True, "acks": "all", "linger.ms": 5,
                                **ks.properties})
        peek = ck.Consumer({**base, "group.id": f"{ks.group_id}.dlq-peek", "enable.auto.commit": False,
                            **ks.properties})
        self.dlq = DeadLetters(producer, peek, ks.dlq_topic)
        self.metrics = KafkaMetrics(ks.topic)
        self._fault = _parse_fault(os.environ.get(FAULT_ENV, ""))
        self._stages: Counter[str] = Counter()
        self._lag_at = 0.0

    # ------------------------------------------------------------------ lifecycle
    def run(self, stop: threading.Event) -> int:
        self.store.open()
        self.dlq.check_partitions(self.ks.topic)
        self.consumer.subscribe([self.ks.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info("consuming %s as group %s (dlq %s)", self.ks.topic, self.ks.group_id, self.ks.dlq_topic)
        try:
            while not stop.is_set():
                msgs = self.consumer.consume(self.ks.batch_max_messages, self.ks.poll_timeout_s)
                for chunk in self._chunks(msgs):
                    self.process(chunk)
                self._update_lag()
        finally:
            self.consumer.close()  # leaves the group: partitions move to the other consumers at once
            self.dlq.producer.flush(10)
            self.dlq.peek.close()
            self.store.close()
        log.info("stopped: %d dead-lettered", self.dlq.sent)
        return 0

    def _chunks(self, msgs: list[Any]) -> list[list[Any]]:
        out: list[list[Any]] = [[]]
        size = 0
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() != self.ck.KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", err)
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

    def _on_revoke(self, _consumer: Any, partitions: list[Any]) -> None:
        # consume() calls this between batches: every processed batch is already committed
        for tp in partitions:
            self.dlq.watermarks.pop(tp.partition, None)
            self.metrics.drop_lag(tp.partition)
        log.info("revoked partitions %s", sorted(tp.partition for tp in partitions))

    def _error(self, err: Any) -> None:
        log.warning("kafka: %s", err)

    # ------------------------------------------------------------------ one batch
    def process(self, msgs: list[Any]) -> None:
        tables: dict[str, list[pa.Table]] = {}
        dead: list[DlqEntry] = []
        counts: Counter[tuple[str, str]] = Counter()
        for m in msgs:
            headers = decode.headers_of(m.headers())
            fmt = "unknown"
            try:
                fmt = decode.message_format(headers)
                batch = decode.normalize_message(self.core, m.value(), headers, fmt, self.source)
            except HealthAIError as e:
                reason = "MESSAGE_TOO_LARGE" if isinstance(e, TooLarge) else "MESSAGE_INVALID"
                dead.append(DlqEntry(m.topic(), m.partition(), m.offset(), 0, -1, reason, e.field or "",
                                     e.message, original=m.value() or b"",
                                     original_headers=list(m.headers() or [])))
                counts[(fmt, "rejected_message")] += 1
                continue
            seq = 0
            for o in batch.outcomes:
                counts[(fmt, o.status.value.lower())] += 1
                if o.status is not Status.REJECTED:
                    continue
                first = next(i for i in o.issues if i.severity is Severity.ERROR)
                dead.append(DlqEntry(
                    m.topic(), m.partition(), m.offset(), seq, o.index, first.code, first.field_path,
                    first.message, o.resource_type,
                    [{"code": i.code, "field_path": i.field_path, "message": i.message,
                      "severity": i.severity.value} for i in o.issues]))
                seq += 1
            for kind, t in batch.tables.items():
                if t.num_rows:
                    tables.setdefault(kind, []).append(t)
        merged = {k: pa.concat_tables(ts) if len(ts) > 1 else ts[0] for k, ts in tables.items()}
        commit = self.core.commit(merged, new_batch_id())  # durable before anything is acknowledged
        self._stage("after-store")
        self.dlq.send(dead)
        self._stage("after-dlq")
        offsets: dict[int, Any] = {}
        for m in msgs:
            offsets[m.partition()] = self.ck.TopicPartition(m.topic(), m.partition(), m.offset() + 1)
        self.consumer.commit(offsets=list(offsets.values()), asynchronous=False)
        self.metrics.batch(counts, stored=sum(commit.stored.values()), duplicates=commit.duplicates,
                           dead=len(dead), messages=len(msgs))
        log.info("batch of %d messages: stored %s, %d duplicates, %d dead-lettered", len(msgs),
                 commit.stored, commit.duplicates, len(dead))

    def _stage(self, name: str) -> None:
        self._stages[name] += 1
        if self._fault == (name, self._stages[name]):
            log.warning("fault injection: SIGKILL %s #%d", name, self._stages[name])
            os.kill(os.getpid(), signal.SIGKILL)

    def _update_lag(self) -> None:
        now = time.monotonic()
        if now - self._lag_at < 1.0:
            return
        self._lag_at = now
        try:
            assigned = self.consumer.assignment()
            for tp in self.consumer.position(assigned) if assigned else ():
                _low, high = self.consumer.get_watermark_offsets(tp, cached=True)
                if high >= 0 and tp.offset >= 0:
                    self.metrics.lag(tp.partition, max(0, high - tp.offset))
        except self.ck.KafkaException as e:  # lag is best effort; the next batch retries
            log.debug("lag not updated: %s", e)


def _parse_fault(spec: str) -> tuple[str, int] | None:
    if not spec:
        return None
    name, _, n = spec.partition(":")
    return name, int(n or 1)
