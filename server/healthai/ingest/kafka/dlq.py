"""The dead-letter topic: one message per rejected record (or per unreadable message), exactly once.

A DLQ message goes to the DLQ partition with the number of its source partition (so the DLQ needs at
least as many partitions as the topic), keyed ``<partition>:<offset>:<seq>``; its headers name the
origin (``healthai-origin-topic|partition|offset``), the position of the record in the message
(``healthai-record-index``, -1 for the whole message; ``healthai-dlq-seq``, its order among the
message's rejects), ``healthai-reason`` (an issue code) and ``healthai-field-path``. The value of a
rejected record is JSON: reason, field path, message, resource type, record index and every issue of
the record (no record content: the record stays in the source topic at that offset). An unreadable
message is dead-lettered whole: its original value and headers, so it can be replayed once fixed, plus
``healthai-message``, the error text (the same text an Ingest RPC returns: it names the part at fault
and, by the rule of :mod:`healthai.normalize.redact`, never quotes a patient value).

Exactly once without Kafka transactions: each consumer produces DLQ entries of a source partition in
source order to one DLQ partition (idempotent producer, acks=all), so the DLQ partition's last message
is a watermark: on assignment the consumer reads it and skips entries at or before it when a batch is
re-consumed after a crash (offsets are committed after the DLQ flush). Before each send the DLQ
partition's end is compared with where this consumer left it: if another producer wrote there since (a
consumer expelled from the group finishing its batch), the watermark is read again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from healthai.errors import HealthAIError, InvalidInput

log = logging.getLogger(__name__)

H_TOPIC = "healthai-origin-topic"
H_PARTITION = "healthai-origin-partition"
H_OFFSET = "healthai-origin-offset"
H_INDEX = "healthai-record-index"
H_SEQ = "healthai-dlq-seq"
H_REASON = "healthai-reason"
H_PATH = "healthai-field-path"
H_MESSAGE = "healthai-message"  # whole-message rejects: why (record rejects carry it in their JSON value)
MAX_MESSAGE_CHARS = 1000
_STEP_S = 1.0  # start-up metadata requests: each this long at most, so SIGTERM is honoured promptly


class BrokersUnreachable(HealthAIError):
    """No broker answered at start-up within ``connect_timeout_s``."""



@dataclass(slots=True)
class DlqEntry:
    topic: str
    partition: int
    offset: int
    seq: int  # order among the rejects of one source message
    index: int  # record index in the message; -1 = the whole message
    reason: str
    field_path: str
    message: str
    resource_type: str = ""
    issues: list[dict[str, str]] = field(default_factory=list)
    original: bytes | None = None  # whole-message rejects: the value as received
    original_headers: list[tuple[str, bytes]] = field(default_factory=list)

    @property
    def position(self) -> tuple[int, int]:
        return self.offset, self.seq

    def to_kafka(self) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
        headers = [(H_TOPIC, self.topic.encode()), (H_PARTITION, str(self.partition).encode()),
                   (H_OFFSET, str(self.offset).encode()), (H_INDEX, str(self.index).encode()),
                   (H_SEQ, str(self.seq).encode()), (H_REASON, self.reason.encode()),
                   (H_PATH, self.field_path.encode())]
        if self.original is not None:
            why = [(H_MESSAGE, self.message[:MAX_MESSAGE_CHARS].encode())]
            return self.key(), self.original, headers + why + self.original_headers
        body = {"reason": self.reason, "field_path": self.field_path, "message": self.message,
                "resource_type": self.resource_type, "record_index": self.index, "issues": self.issues}
        headers.append(("content-type", b"application/json"))
        return self.key(), json.dumps(body).encode(), headers

    def key(self) -> bytes:
        return f"{self.partition}:{self.offset}:{self.seq}".encode()


def position_of(headers: list[tuple[str, bytes]] | None) -> tuple[int, int] | None:
    """(source offset, seq) of a DLQ message from its headers; None if it is not one of ours."""
    h = {k: v for k, v in headers or () if v is not None}
    try:
        return int(h[H_OFFSET]), int(h[H_SEQ])
    except (KeyError, ValueError):
        return None


class DeadLetters:
    """Produces DLQ entries, skipping those at or before each partition's watermark."""

    def __init__(self, producer: Any, peek: Any, topic: str, timeout_s: float = 30.0) -> None:
        self.producer, self.peek, self.topic, self.timeout_s = producer, peek, topic, timeout_s
        self.watermarks: dict[int, tuple[int, int] | None] = {}
        self.ends: dict[int, int] = {}  # DLQ partition -> its end offset when this consumer last saw it
        self.sent = 0
        self.waiting = False  # the start-up wait for the brokers was logged
        self._peek_lock = threading.Lock()  # on_assign (poll thread) and send (writer thread)

    def check_partitions(self, source_topic: str, stop: threading.Event | None = None,
                         wait_s: float | None = None) -> bool:
        """Check the DLQ has as many partitions as ``source_topic``, waiting up to ``wait_s`` for the
        brokers (in 1 s steps, so ``stop`` ends the wait at once). False when stopped; raises
        :class:`BrokersUnreachable` after ``wait_s``, InvalidInput on a bad topic."""
        from confluent_kafka import KafkaException

        wait_s = self.timeout_s if wait_s is None else wait_s
        deadline = time.monotonic() + wait_s
        while True:
            try:
                src = self.producer.list_topics(source_topic, timeout=_STEP_S).topics[source_topic]
                dlq = self.producer.list_topics(self.topic, timeout=_STEP_S).topics[self.topic]
                break
            except KafkaException as e:
                err = e.args[0] if e.args else None
                why = err.str() if hasattr(err, "str") else str(e)
                if stop is not None and stop.is_set():
                    return False
                if time.monotonic() >= deadline:
                    raise BrokersUnreachable(f"no Kafka broker answered within {wait_s:g} s "
                                             f"(kafka.bootstrap_servers): {why}",
                                             field="kafka.bootstrap_servers") from None
                if not self.waiting:
                    log.warning("kafka: waiting up to %g s for the brokers: %s", wait_s, why)
                    self.waiting = True
            if stop is not None and stop.wait(0.1):
                return False
        if src.error is not None or dlq.error is not None:
            raise InvalidInput(f"topic metadata unavailable: {src.error or dlq.error}", field="kafka.topic")
        if len(dlq.partitions) < len(src.partitions):
            raise InvalidInput(f"dlq_topic {self.topic!r} has {len(dlq.partitions)} partitions; it needs at "
                               f"least as many as {source_topic!r} ({len(src.partitions)})",
                               field="kafka.dlq_topic")
        return True

    def load_watermark(self, partition: int) -> None:
        """Read the last DLQ message of ``partition`` (called on assignment)."""
        from confluent_kafka import TopicPartition

        tp = TopicPartition(self.topic, partition)
        with self._peek_lock:
            low, high = self.peek.get_watermark_offsets(tp, timeout=self.timeout_s)
            mark = None
            if high > low:
                self.peek.assign([TopicPartition(self.topic, partition, high - 1)])
                msgs = self.peek.consume(1, timeout=self.timeout_s)
                if not msgs or msgs[0].error():
                    raise RuntimeError(f"cannot read the last message of {self.topic}[{partition}]")
                mark = position_of(msgs[0].headers())
                self.peek.unassign()
        self.watermarks[partition] = mark
        self.ends[partition] = high
        log.info("dlq watermark of partition %d: %s", partition, mark)

    def send(self, entries: list[DlqEntry]) -> int:
        """Produce the entries not yet in the DLQ and wait until all are acknowledged."""
        from confluent_kafka import TopicPartition

        errors: list[str] = []
        for partition in sorted({e.partition for e in entries}):
            with self._peek_lock:
                _low, high = self.peek.get_watermark_offsets(TopicPartition(self.topic, partition),
                                                             timeout=self.timeout_s, cached=False)
            if high != self.ends.get(partition):
                log.warning("dlq partition %d was written by another producer: re-reading its watermark",
                            partition)
                self.load_watermark(partition)

        def delivered(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                self.ends[msg.partition()] = max(self.ends.get(msg.partition(), 0), msg.offset() + 1)

        n = 0
        for e in entries:
            mark = self.watermarks.get(e.partition)
            if mark is not None and e.position <= mark:
                continue  # already dead-lettered before a crash
            key, value, headers = e.to_kafka()
            self.producer.produce(self.topic, value=value, key=key, headers=headers, partition=e.partition,
                                  on_delivery=delivered)
            self.producer.poll(0)
            n += 1
        if n:
            remaining = self.producer.flush(self.timeout_s)
            if remaining or errors:
                raise RuntimeError(f"dead-letter produce failed ({remaining} undelivered): {errors[:3]}")
            for e in entries:
                self.watermarks[e.partition] = max(self.watermarks.get(e.partition) or (-1, -1), e.position)
        self.sent += n
        return n
