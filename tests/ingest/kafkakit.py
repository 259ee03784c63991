"""librdkafka's mock cluster (the real Kafka protocol in-process: no Java, no Docker) and helpers to
drive ``healthai ingest-kafka`` against it as a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

REPO = Path(__file__).resolve().parents[2]
QUIET = {"log_level": 2}


@dataclass
class MockCluster:
    owner: Producer  # keeps the cluster alive; its brokers listen on 127.0.0.1
    bootstrap: str

    def producer(self) -> Producer:
        return Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True, **QUIET})

    def consumer(self, group: str, **extra: Any) -> Consumer:
        return Consumer({"bootstrap.servers": self.bootstrap, "group.id": group, "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", **QUIET, **extra})

    def partitions(self, topic: str) -> int:
        return len(self.owner.list_topics(topic, timeout=10).topics[topic].partitions)

    def high_watermarks(self, topic: str) -> dict[int, int]:
        c = self.consumer("healthai-test-peek")
        try:
            return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                    for p in range(self.partitions(topic))}
        finally:
            c.close()

    def committed(self, topic: str, group: str) -> dict[int, int]:
        c = self.consumer(group)
        try:
            tps = [TopicPartition(topic, p) for p in range(self.partitions(topic))]
            return {tp.partition: tp.offset for tp in c.committed(tps, timeout=10)}
        finally:
            c.close()

    def read_all(self, topic: str) -> list[Any]:
        """Every message of ``topic`` (all partitions, from the start to the current end)."""
        ends = self.high_watermarks(topic)
        c = self.consumer("healthai-test-reader")
        c.assign([TopicPartition(topic, p, 0) for p in ends])
        out: list[Any] = []
        deadline = time.monotonic() + 30
        try:
            while len(out) < sum(ends.values()) and time.monotonic() < deadline:
                out += [m for m in c.consume(500, 0.5) if m.error() is None]
        finally:
            c.close()
        return out


@contextmanager
def mock_cluster() -> Iterator[MockCluster]:
    owner = Producer({"test.mock.num.brokers": 1, "bootstrap.servers": "", **QUIET})
    brokers = owner.list_topics(timeout=10).brokers
    yield MockCluster(owner, ",".join(f"{b.host}:{b.port}" for b in brokers.values()))
    owner.flush(5)


def start_consumer(cluster: MockCluster, store: Path, key_hex: str, log: Path, *, fault: str = "",
                   extra: list[str] | None = None, env: dict[str, str] | None = None) -> subprocess.Popen:
    env = {**os.environ, "HEALTHAI_PSEUDONYM_KEY": key_hex, "HEALTHAI_KAFKA__SESSION_TIMEOUT_MS": "6000",
           "HEALTHAI_KAFKA__PROPERTIES__HEARTBEAT.INTERVAL.MS": "500", "HEALTHAI_KAFKA_FAULT": fault,
           **(env or {})}
    cmd = [sys.executable, "-m", "healthai.cli", "ingest-kafka", "--bootstrap-servers", cluster.bootstrap,
           "--store-uri", str(store), "--batch-max-messages", "3", "--log-level", "INFO", *(extra or [])]
    with open(log, "ab") as f:
        return subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)


def wait_for(check: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen | None = None,
             log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"consumer exited ({proc.returncode}) while waiting for {what}:\n"
                                 + (log.read_text()[-3000:] if log else ""))
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}" + (f":\n{log.read_text()[-3000:]}" if log else ""))


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    proc.send_signal(sig)
    return proc.wait(timeout)
