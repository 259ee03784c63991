"""``healthai ingest-kafka``: run the Kafka consumer (settings: flags > env > file > defaults)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
from pathlib import Path
from typing import Any

from healthai.app.cli import add_normalize_flags, normalize_flags
from healthai.errors import HealthAIError

log = logging.getLogger(__name__)

_KAFKA_FLAGS = ("bootstrap_servers", "topic", "dlq_topic", "group_id", "source", "batch_max_messages",
                "batch_max_bytes")


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    flags: dict[str, Any] = {n: getattr(args, n) for n in ("store_uri", "pseudonym_key_file", "log_level",
                                                            "date_policy", "max_records_per_request")}
    if args.dev:
        flags["dev_mode"] = True
    flags.update(normalize_flags(args))
    kafka = {n: getattr(args, n) for n in _KAFKA_FLAGS if getattr(args, n) is not None}
    if kafka:
        flags["kafka"] = kafka
    if args.metrics_port is not None:
        flags["observability"] = {"metrics_port": args.metrics_port}
    return flags


def _run(args: argparse.Namespace) -> int:
    from healthai.app.cli import settings_or_none
    from healthai.app.main import configure_logging

    settings = settings_or_none("ingest-kafka", args.config, _flags(args))
    if settings is None:
        return 2
    configure_logging(settings.log_level)
    from healthai import observability
    from healthai.ingest.kafka.consumer import KafkaIngest

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    obs = observability.setup(settings.observability)
    try:
        ingest = KafkaIngest(settings)
        if args.status_file is not None and obs.metrics_server is not None:
            args.status_file.write_text(json.dumps({"metrics_port": obs.metrics_server.port}))
        return ingest.run(stop)
    except HealthAIError as e:  # start-up refused (no key, no confluent-kafka, DLQ too small)
        log.error("cannot start: %s", e.message)
        return 2
    finally:
        obs.close()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ingest-kafka", help="consume a Kafka topic into the store (DLQ for rejects)")
    p.add_argument("--config", type=Path, help="settings file (TOML); the [kafka] table for Kafka")
    p.add_argument("--bootstrap-servers", help="Kafka brokers, host:port[,host:port]")
    p.add_argument("--topic", help="topic to consume (default health-events)")
    p.add_argument("--dlq-topic", help="dead-letter topic (default health-events.dlq)")
    p.add_argument("--group-id", help="consumer group (default healthai-ingest)")
    p.add_argument("--source", help="source of messages without a healthai-source header (default: topic)")
    p.add_argument("--batch-max-messages", type=int, help="messages per store commit (default 500)")
    p.add_argument("--batch-max-bytes", type=int, help="bytes of message values per commit")
    p.add_argument("--max-records-per-request", type=int, help="records per message at most")
    p.add_argument("--store-uri", help="store root: a directory or a pyarrow filesystem URI")
    p.add_argument("--pseudonym-key-file", type=Path, help="HMAC key file (or env HEALTHAI_PSEUDONYM_KEY)")
    p.add_argument("--dev", action="store_true", help="development: random pseudonym key if none is set")
    p.add_argument("--date-policy", choices=("full", "shift"), help="event dates: as sent, or shifted")
    add_normalize_flags(p)
    p.add_argument("--metrics-port", type=int, help="Prometheus /metrics port (0 picks a free one)")
    p.add_argument("--status-file", type=Path, help="write {\"metrics_port\": N} here once started")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    p.set_defaults(func=_run)
