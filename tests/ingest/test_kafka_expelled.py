"""A consumer expelled from the group mid-batch (its store write stalled past max.poll.interval.ms)
must not dead-letter that batch: the partition's new owner does, exactly once."""

from __future__ import annotations

import secrets
from pathlib import Path

from healthai.ingest.kafka import dlq
from healthai.normalize.records import KINDS
from healthai.store import ParquetStore
from tests.ingest.kafkakit import mock_cluster, start_consumer, stop, wait_for
from tests.ingest.test_kafka import DLQ, GROUP, TOPIC, _arrow, _expected, _observations

ARROW = {"content-type": "application/vnd.apache.arrow.stream", "healthai-kind": "observation"}
# expelled after 8 s without a poll; a DLQ produce takes at most 2 s; the first store write stalls 20 s
LEASE = {"HEALTHAI_KAFKA__MAX_POLL_INTERVAL_MS": "8000", "HEALTHAI_KAFKA__DLQ_TIMEOUT_MS": "2000"}


def test_expelled_consumer_does_not_dead_letter_twice(tmp_path: Path) -> None:
    key_hex = secrets.token_hex(32)
    store = tmp_path / "store"
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    msgs = [(_arrow(_observations(m)), ARROW) for m in range(6)]  # 4 rejects each
    with mock_cluster() as cluster:
        producer = cluster.producer()
        where: list[tuple[int, int]] = []
        for value, headers in msgs:
            producer.produce(TOPIC, value=value, headers=list(headers.items()), partition=0,
                             on_delivery=lambda err, m: where.append((m.partition(), m.offset())))
            producer.flush(10)
        a = start_consumer(cluster, store, key_hex, log_a, fault="stall-after-store:1:20", env=LEASE)
        stalled = "fault injection: stall after-store #1"
        wait_for(lambda: stalled in log_a.read_text(), 60, "A stalls", a, log_a)
        b = start_consumer(cluster, store, key_hex, log_b, env=LEASE)  # takes over once A is expelled
        end = cluster.high_watermarks(TOPIC)[0]
        wait_for(lambda: cluster.committed(TOPIC, GROUP)[0] == end, 120, "all offsets committed", b, log_b)
        wait_for(lambda: "batch abandoned" in log_a.read_text(), 60, "A abandons its batch", a, log_a)
        assert stop(a) == 0, log_a.read_text()[-3000:]
        assert stop(b) == 0, log_b.read_text()[-3000:]
        letters = cluster.read_all(DLQ)
    keys, dead = _expected(bytes.fromhex(key_hex), msgs, where)
    got = [(int(h[dlq.H_PARTITION]), int(h[dlq.H_OFFSET]), int(h[dlq.H_INDEX]))
           for h in ({k: v.decode() for k, v in m.headers()} for m in letters)]
    assert len(got) == len(set(got)), "a reject dead-lettered twice"
    assert set(got) == dead and len(dead) == 24
    s = ParquetStore(str(store)).open()
    for kind in KINDS:
        t = s.read(kind, ["source", "record_key"])
        pairs = [f"{x}|{y}" for x, y in zip(t["source"].to_pylist(), t["record_key"].to_pylist(),
                                             strict=True)]
        assert len(pairs) == len(set(pairs)) and set(pairs) == keys[kind]
