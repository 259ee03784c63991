"""Kafka consumer settings (``Settings.kafka``; env ``HEALTHAI_KAFKA__<FIELD>``). No Kafka import here.

TLS and SASL settings are passed through to librdkafka under their own names (``security.protocol``,
``ssl.ca.location``, ``sasl.mechanism``, ...); secrets come from files, never from flags. Anything
else librdkafka understands goes into ``properties`` (applied last, to consumer and producer).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from healthai.errors import InvalidInput


class KafkaSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    bootstrap_servers: str = "localhost:9092"
    topic: str = "health-events"
    dlq_topic: str = "health-events.dlq"  # needs at least as many partitions as ``topic``
    group_id: str = "healthai-ingest"
    source: str | None = None  # when a message has no ``healthai-source`` header; None = the topic name
    batch_max_messages: int = Field(500, ge=1)  # messages per store commit
    batch_max_bytes: int = Field(64 * 1024 * 1024, ge=1024)  # bytes of message values per commit
    fetch_queue_kbytes: int = Field(65536, ge=1)  # librdkafka prefetch bound (queued.max.messages.kbytes)
    poll_timeout_s: float = Field(1.0, gt=0)
    session_timeout_ms: int = Field(45_000, ge=1000)
    # librdkafka expels a consumer that has not polled for this long; a batch that comes near it is
    # abandoned before its DLQ entries (its partitions' next owner re-consumes it): see consumer.py
    max_poll_interval_ms: int = Field(300_000, ge=1000)
    dlq_timeout_ms: int = Field(30_000, ge=100)  # DLQ produce bound (message.timeout.ms and flush)
    # start-up waits this long for the brokers' metadata, then exits 2 ("cannot start"); SIGTERM ends it
    connect_timeout_s: float = Field(30.0, gt=0)
    # TLS / SASL, passed through to librdkafka
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    ssl_key_password_file: Path | None = None
    ssl_endpoint_identification_algorithm: Literal["https", "none"] = "https"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    sasl_username: str | None = None
    sasl_password_file: Path | None = None  # or env HEALTHAI_KAFKA_SASL_PASSWORD
    properties: dict[str, str] = Field(default_factory=dict)  # any other librdkafka property
    client_id: str = Field(default_factory=lambda: f"healthai-ingest-{socket.gethostname()}")

    @model_validator(mode="after")
    def _dlq_is_another_topic(self) -> KafkaSettings:
        if self.dlq_topic.strip() == self.topic.strip():  # each rejected message would be read again, forever
            raise ValueError(f"dlq_topic {self.dlq_topic!r} is the consumed topic: dead letters need a topic "
                             "of their own")
        return self

    def client_config(self, environ: dict[str, str] | None = None) -> dict[str, str | int]:
        """librdkafka properties shared by the consumer and the DLQ producer."""
        environ = dict(os.environ) if environ is None else environ
        conf: dict[str, str | int] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "security.protocol": self.security_protocol,
        }
        if self.security_protocol in ("SSL", "SASL_SSL"):
            for name, path in (("ssl.ca.location", self.ssl_ca_location),
                               ("ssl.certificate.location", self.ssl_certificate_location),
                               ("ssl.key.location", self.ssl_key_location)):
                if path is not None:
                    conf[name] = str(path)
            if self.ssl_key_password_file is not None:
                conf["ssl.key.password"] = _secret(self.ssl_key_password_file, "ssl_key_password_file")
            conf["ssl.endpoint.identification.algorithm"] = self.ssl_endpoint_identification_algorithm
        if self.security_protocol.startswith("SASL"):
            if self.sasl_mechanism is None:
                raise InvalidInput(f"security_protocol {self.security_protocol} needs sasl_mechanism",
                                   field="kafka.sasl_mechanism")
            conf["sasl.mechanism"] = self.sasl_mechanism
            if self.sasl_mechanism != "OAUTHBEARER":
                password = (_secret(self.sasl_password_file, "sasl_password_file")
                            if self.sasl_password_file is not None
                            else environ.get("HEALTHAI_KAFKA_SASL_PASSWORD"))
                if not self.sasl_username or not password:
                    raise InvalidInput(f"SASL {self.sasl_mechanism} needs sasl_username and a password "
                                       "(sasl_password_file or HEALTHAI_KAFKA_SASL_PASSWORD)",
                                       field="kafka.sasl_username")
                conf["sasl.username"] = self.sasl_username
                conf["sasl.password"] = password
        conf.update(self.properties)
        return conf


def _secret(path: Path, field: str) -> str:
    try:
        return path.read_text().strip()
    except OSError as e:
        raise InvalidInput(f"kafka.{field} {str(path)!r}: {e.strerror}", field=f"kafka.{field}") from e
