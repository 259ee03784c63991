"""Prometheus metrics of the Kafka consumer (in the server's registry, served on ``metrics_port``)."""

from __future__ import annotations

from collections import Counter as Counts
from contextlib import suppress

from prometheus_client import Counter, Gauge

from healthai.observability.metrics import REGISTRY, count_ingest_records

RECORDS = Counter("healthai_kafka_records", "Records consumed from Kafka, by message format and outcome.",
                  ("topic", "format", "outcome"), registry=REGISTRY)
STORED = Counter("healthai_kafka_rows_stored", "Rows written to the store by the Kafka consumer.", ("topic",),
                 registry=REGISTRY)
DUPLICATES = Counter("healthai_kafka_rows_duplicate",
                     "Rows skipped because the store already held them (re-delivery).", ("topic",),
                     registry=REGISTRY)
DEAD = Counter("healthai_kafka_dead_lettered", "Entries written to the dead-letter topic.", ("topic",),
               registry=REGISTRY)
MESSAGES = Counter("healthai_kafka_messages", "Messages processed and committed.", ("topic",),
                   registry=REGISTRY)
BROKER_UP = Gauge("healthai_kafka_broker_up", "1 while the consumer reaches a Kafka broker, 0 during an "
                  "outage (the lag series are then withdrawn: unknown, not 0).", ("topic",),
                  registry=REGISTRY)
CLIENT_ERRORS = Counter("healthai_kafka_client_errors", "Errors librdkafka reported (broker unreachable, "
                        "authentication, ...), by error name.", ("topic", "error"), registry=REGISTRY)
LAG = Gauge("healthai_kafka_consumer_lag", "Messages behind the high watermark, per assigned partition.",
            ("topic", "partition"), registry=REGISTRY)


class KafkaMetrics:
    def __init__(self, topic: str) -> None:
        self.topic = topic
        self._lagging: set[int] = set()  # partitions with a lag series

    def batch(self, counts: Counts[tuple[str, str]], *, stored: int, duplicates: int, dead: int,
              messages: int) -> None:
        for (fmt, outcome), n in counts.items():
            RECORDS.labels(self.topic, fmt, outcome).inc(n)
            count_ingest_records(f"kafka_{fmt}", outcome, n)
        STORED.labels(self.topic).inc(stored)
        DUPLICATES.labels(self.topic).inc(duplicates)
        DEAD.labels(self.topic).inc(dead)
        MESSAGES.labels(self.topic).inc(messages)

    def lag(self, partition: int, value: int) -> None:
        LAG.labels(self.topic, str(partition)).set(value)
        self._lagging.add(partition)

    def drop_lag(self, partition: int) -> None:
        self._lagging.discard(partition)
        with suppress(KeyError):
            LAG.remove(self.topic, str(partition))

    def broker_up(self, up: bool) -> None:
        BROKER_UP.labels(self.topic).set(1 if up else 0)
        if not up:  # the last lag seen is not the lag now: withdraw it
            for partition in list(self._lagging):
                self.drop_lag(partition)

    def client_error(self, name: str) -> None:
        CLIENT_ERRORS.labels(self.topic, name).inc()
