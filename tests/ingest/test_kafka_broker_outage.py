"""Broker outages: an unreachable broker at start-up ends in a clean "cannot start" (exit 2) after
``connect_timeout_s``, or at once on SIGTERM; brokers lost mid-run show in the metrics (broker up 0, no
lag series rather than a stale 0) while librdkafka's repeated connection errors are logged once, then
summarized. Also: a message rejected whole carries its reason into the dead-letter entry and the log."""

from __future__ import annotations

import gc
import json
import secrets
import signal
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
from confluent_kafka import Producer

from healthai.ingest.kafka import dlq
from healthai.ingest.kafka.health import BrokerState, Throttle
from tests.ingest.kafkakit import QUIET, MockCluster, mock_cluster, start_consumer, stop, wait_for
from tests.ingest.test_kafka import DLQ, GROUP, TOPIC, _arrow

UNREACHABLE = SimpleNamespace(bootstrap="127.0.0.1:1")  # nothing listens on port 1
ARROW = [("content-type", b"application/vnd.apache.arrow.stream"), ("healthai-kind", b"observation")]


def _lines(log: Path) -> list[str]:
    return log.read_text().splitlines()


def test_unreachable_at_start_up_is_a_clean_error_after_the_wait(tmp_path: Path) -> None:
    log = tmp_path / "consumer.log"
    t0 = time.monotonic()
    proc = start_consumer(UNREACHABLE, tmp_path / "store", secrets.token_hex(32), log,  # type: ignore[arg-type]
                          env={"HEALTHAI_KAFKA__CONNECT_TIMEOUT_S": "3"})
    assert proc.wait(30) == 2, log.read_text()
    assert time.monotonic() - t0 < 20
    text = log.read_text()
    assert "Traceback" not in text and "KafkaException" not in text, text
    assert "cannot start: no Kafka broker answered within 3 s (kafka.bootstrap_servers)" in text, text
    assert len(_lines(log)) < 15, text  # not one line per connection attempt


def test_sigterm_while_waiting_for_the_brokers_exits_at_once(tmp_path: Path) -> None:
    log = tmp_path / "consumer.log"
    proc = start_consumer(UNREACHABLE, tmp_path / "store", secrets.token_hex(32), log,  # type: ignore[arg-type]
                          env={"HEALTHAI_KAFKA__CONNECT_TIMEOUT_S": "120"})
    wait_for(lambda: "waiting up to 120 s for the brokers" in log.read_text(), 30, "the wait", proc, log)
    t0 = time.monotonic()
    assert stop(proc, signal.SIGTERM, timeout=15) == 0, log.read_text()
    assert time.monotonic() - t0 < 5, log.read_text()
    assert "Traceback" not in log.read_text()


def _metrics(port: int) -> dict[str, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for line in body.splitlines():
        if line.startswith("healthai_kafka_") and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_brokers_lost_mid_run_show_in_the_metrics_and_log_quietly(tmp_path: Path) -> None:
    log, status = tmp_path / "consumer.log", tmp_path / "status.json"
    owner = Producer({"test.mock.num.brokers": 1, "bootstrap.servers": "", **QUIET})
    brokers = owner.list_topics(timeout=10).brokers
    cluster = MockCluster(owner, ",".join(f"{b.host}:{b.port}" for b in brokers.values()))
    producer = cluster.producer()
    table = pa.table({"observation_id": ["o1"], "patient_id": ["p1"], "loinc": ["8867-4"], "value": [70.0],
                      "unit": ["/min"], "effective": ["2026-05-01T10:00:00Z"]})
    producer.produce(TOPIC, value=_arrow(table), headers=ARROW, partition=0)
    producer.flush(10)
    proc = start_consumer(cluster, tmp_path / "store", secrets.token_hex(32), log,
                          extra=["--metrics-port", "0", "--status-file", str(status)])
    try:
        wait_for(lambda: cluster.committed(TOPIC, GROUP)[0] == 1, 60, "the batch committed", proc, log)
        port = json.loads(status.read_text())["metrics_port"]
        up = f'healthai_kafka_broker_up{{topic="{TOPIC}"}}'
        lag = f'healthai_kafka_consumer_lag{{partition="0",topic="{TOPIC}"}}'
        wait_for(lambda: _metrics(port).get(lag) == 0.0, 30, "the lag reported", proc, log)
        assert _metrics(port)[up] == 1.0
        before = len(_lines(log))
        owner = cluster = producer = None  # the mock cluster goes with its owner: its broker stops listening
        gc.collect()
        t0 = time.monotonic()
        wait_for(lambda: _metrics(port).get(up) == 0.0, 30, "broker_up 0", proc, log)
        m = _metrics(port)
        assert lag not in m, "a stale lag is reported during the outage"
        assert sum(v for k, v in m.items() if k.startswith("healthai_kafka_client_errors_total")) > 0
        time.sleep(max(0.0, 15 - (time.monotonic() - t0)))
        during = _lines(log)[before:]
        assert len(during) < 25, "\n".join(during)  # each distinct error once, not per attempt
        assert any("no broker reachable" in line for line in during), "\n".join(during)
        t1 = time.monotonic()
        assert stop(proc, timeout=30) == 0, log.read_text()[-3000:]
        assert time.monotonic() - t1 < 15
    finally:
        if proc.poll() is None:
            proc.kill()


def test_throttle_logs_once_then_a_summary_per_period() -> None:
    now = [0.0]
    records: list[str] = []
    logger = SimpleNamespace(log=lambda level, fmt, *args: records.append(fmt % args))
    t = Throttle(logger, every_s=30, clock=lambda: now[0])  # type: ignore[arg-type]
    for i in range(100):
        now[0] = i * 0.1
        t.emit(30, f"kafka: b:9092/1: Connect to b:9092 failed (after {i}ms in state CONNECT)")
    t.log(3, "%s [%s] %s", "FAIL", "rdkafka#consumer-1",
          "[thrd:b:9092/1]: b:9092/1: Connect to b:9092 failed (after 3ms in state CONNECT)")
    assert len(records) == 1
    now[0] = 31.0
    t.flush()
    assert records[1].endswith("(repeated 100 times in the last 31 s)"), records
    now[0] = 62.0
    t.flush()  # quiet for a period: forgotten, so the next occurrence is logged again
    t.emit(30, "kafka: b:9092/1: Connect to b:9092 failed (after 1ms in state CONNECT)")
    assert len(records) == 3


def test_broker_state_follows_the_statistics() -> None:
    seen: list[bool] = []
    state = BrokerState(seen.append)
    state.stats(json.dumps({"brokers": {"a:9092/1": {"state": "UP"}}}))
    state.stats(json.dumps({"brokers": {"a:9092/1": {"state": "UP"}}}))
    down = {"a:9092/1": {"state": "CONNECT"}, "a:9092/bootstrap": {"state": "INIT"}}
    state.stats(json.dumps({"brokers": down}))
    state.stats(json.dumps({"brokers": {"a:9092/1": {"state": "UP"}}}))
    assert seen == [True, False, True]


def test_a_message_rejected_whole_says_why_without_patient_values(tmp_path: Path) -> None:
    log = tmp_path / "consumer.log"
    fhir = [("content-type", b"application/fhir+json"), ("healthai-source", b"ehr")]
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": "Jane Roe 1961-04-12"}
    with mock_cluster() as cluster:
        producer = cluster.producer()
        producer.produce(TOPIC, value=json.dumps(bundle).encode(), headers=fhir, partition=0)
        producer.produce(TOPIC, value=b'{"resourceType": "Patient", "name": [{"family": "Roe"', headers=fhir,
                         partition=0)
        producer.flush(10)
        proc = start_consumer(cluster, tmp_path / "store", secrets.token_hex(32), log)
        wait_for(lambda: cluster.committed(TOPIC, GROUP)[0] == 2, 60, "the batch committed", proc, log)
        assert stop(proc) == 0, log.read_text()[-3000:]
        letters = sorted(cluster.read_all(DLQ), key=lambda m: m.offset())
    reasons = [dict(m.headers())[dlq.H_MESSAGE].decode() for m in letters]
    assert len(reasons) == 2 and "entry" in reasons[0] and "JSON" in reasons[1], reasons
    text = log.read_text()
    for why in reasons:
        assert why in text  # the consumer's log says it too
    assert all("Roe" not in r and "1961" not in r for r in reasons)
    assert "Roe" not in text and "1961" not in text
