"""``healthai ingest-kafka`` against librdkafka's mock cluster: every record stored exactly once and
every reject dead-lettered exactly once across SIGKILLs at the worst points, then a clean SIGTERM."""

from __future__ import annotations

import io
import json
import secrets
import urllib.request
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from healthai.ingest.kafka import decode, dlq
from healthai.ingest.service import IngestCore
from healthai.normalize.context import NormalizeContext
from healthai.normalize.records import KINDS, Status
from healthai.store import ParquetStore
from healthai.v1 import ingest_pb2
from tests.ingest.kafkakit import mock_cluster, start_consumer, stop, wait_for

TOPIC, DLQ, GROUP = "health-events", "health-events.dlq", "healthai-ingest"
FIXTURE = Path(__file__).resolve().parents[1] / "normalize" / "fixtures" / "data_quality_bundle.json"
ROWS = 200


def _arrow(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue()


def _observations(m: int) -> pa.Table:
    values = [None if i % 50 == 7 else 60.0 + i % 40 for i in range(ROWS)]  # 4 rejects a message
    return pa.table({"observation_id": [f"m{m}-{i}" for i in range(ROWS)],
                     "patient_id": [f"p{i % 37}" for i in range(ROWS)],
                     "loinc": ["8867-4"] * ROWS,
                     "value": pa.array(values, pa.float64()), "unit": ["/min"] * ROWS,
                     "effective": ["2026-05-01T10:00:00Z"] * ROWS})


def _messages() -> list[tuple[bytes | None, dict[str, str]]]:
    arrow = {"content-type": "application/vnd.apache.arrow.stream", "healthai-kind": "observation"}
    out: list[tuple[bytes | None, dict[str, str]]] = [
        (_arrow(_observations(m)), arrow) for m in range(24)
    ]
    out.append((_arrow(_observations(3)), arrow))  # a producer retry: all rows already stored
    out.append((b"not an arrow stream", arrow))  # poison: unreadable
    out.append((_arrow(_observations(99)), {"healthai-kind": "observation"}))  # poison: no content-type
    out.append((FIXTURE.read_bytes(), {"content-type": "application/fhir+json", "healthai-source": "dq"}))
    patient = ingest_pb2.PatientRecord
    flat = ingest_pb2.FlatRecords(patients=[patient(patient_id="p1", sex="female"),
                                            patient(patient_id="p2", sex="robot"),
                                            patient(patient_id="p3", birth_date="2090-01-01")])
    out.append((flat.SerializeToString(), {"content-type": "application/x-protobuf"}))
    conditions = pa.table({"condition_id": [f"c{i}" for i in range(10)], "patient_id": ["p1"] * 10,
                           "code_system": ["ICD10CM"] * 10, "code": ["E11.9"] * 9 + ["NOPE"]})
    buf = io.BytesIO()
    pq.write_table(conditions, buf)
    parquet = {"content-type": "application/vnd.apache.parquet", "healthai-kind": "condition"}
    out.append((buf.getvalue(), parquet))
    return out


def _expected(key: bytes, msgs: list[tuple[bytes | None, dict[str, str]]], where: list[tuple[int, int]]):
    """Record keys per kind and DLQ positions, from normalizing each message here (same key)."""
    core = IngestCore(NormalizeContext.create(key=key), ParquetStore("unused"), 1_000_000)
    keys: dict[str, set[str]] = {k: set() for k in KINDS}
    dead: set[tuple[int, int, int]] = set()
    for (value, headers), (part, offset) in zip(msgs, where, strict=True):
        try:
            fmt = decode.message_format(headers)
            batch = decode.normalize_message(core, value, headers, fmt, TOPIC)
        except decode.InvalidInput:
            dead.add((part, offset, -1))
            continue
        dead |= {(part, offset, o.index) for o in batch.outcomes if o.status is Status.REJECTED}
        for kind, t in batch.tables.items():
            keys[kind] |= {f"{s}|{r}" for s, r in zip(t["source"].to_pylist(), t["record_key"].to_pylist(),
                                                      strict=True)}
    return keys, dead


def test_kill_restart_exactly_once_and_dlq(tmp_path: Path) -> None:
    key_hex = secrets.token_hex(32)
    store, log = tmp_path / "store", tmp_path / "consumer.log"
    with mock_cluster() as cluster:
        producer = cluster.producer()
        msgs = _messages()
        where: list[tuple[int, int, int]] = []

        def produce(i: int) -> None:
            value, headers = msgs[i]

            def done(err, m, _i=i) -> None:
                assert err is None, err
                where.append((_i, m.partition(), m.offset()))
            producer.produce(TOPIC, value=value, headers=list(headers.items()), partition=i % 4,
                             on_delivery=done)
            producer.flush(10)

        # The last message (a Parquet batch with a rejected record) is held back until after the third
        # kill, so the last consumer surely processes records and rejects (and counts them).
        held_back = len(msgs) - 1
        for i in range(held_back):
            produce(i)
        # 1: SIGKILL after a durable store write, before its DLQ entries and offsets
        p = start_consumer(cluster, store, key_hex, log, fault="after-store:2")
        assert p.wait(90) == -9
        # 2: SIGKILL after the DLQ entries were acknowledged, before the offset commit
        p = start_consumer(cluster, store, key_hex, log, fault="after-dlq:2")
        assert p.wait(90) == -9
        # 3: SIGKILL from outside, mid-stream (part of the topic is consumed)
        p = start_consumer(cluster, store, key_hex, log)
        done_before = sum(ParquetStore(str(store)).open().count(k) for k in KINDS)
        wait_for(lambda: sum(ParquetStore(str(store)).open().count(k) for k in KINDS) > done_before,
                 90, "progress", p, log)
        assert stop(p, 9) == -9
        produce(held_back)
        positions = [(p, o) for _, p, o in sorted(where)]
        keys, dead = _expected(bytes.fromhex(key_hex), msgs, positions)
        assert len(dead) > 100 and sum(map(len, keys.values())) > 4000  # poison and good records both
        # 4: to the end, then SIGTERM
        status = tmp_path / "status.json"
        extra = ["--metrics-port", "0", "--status-file", str(status)]
        p = start_consumer(cluster, store, key_hex, log, extra=extra)
        ends = cluster.high_watermarks(TOPIC)
        wait_for(lambda: cluster.committed(TOPIC, GROUP) == ends, 120, "all offsets committed", p, log)
        url = f"http://127.0.0.1:{json.loads(status.read_text())['metrics_port']}/metrics"
        lag_zero = [f'healthai_kafka_consumer_lag{{partition="{i}",topic="{TOPIC}"}} 0.0' for i in range(4)]

        def scrape() -> str:
            return urllib.request.urlopen(url, timeout=10).read().decode()

        wait_for(lambda: all(line in scrape() for line in lag_zero), 30, "lag 0 on every partition", p, log)
        metrics = scrape()
        assert stop(p) == 0, log.read_text()[-3000:]

    text = log.read_text()
    assert "fault injection: SIGKILL after-store #2" in text
    assert "fault injection: SIGKILL after-dlq #2" in text
    assert "stopped:" in text
    s = ParquetStore(str(store)).open()
    for kind in KINDS:
        t = s.read(kind, ["source", "record_key"])
        pairs = zip(t["source"].to_pylist(), t["record_key"].to_pylist(), strict=True)
        got = [f"{a}|{b}" for a, b in pairs]
        assert len(got) == len(set(got)), f"{kind}: a record stored twice"
        assert set(got) == keys[kind], f"{kind}: stored records differ from the accepted ones"
    letters = cluster.read_all(DLQ)
    got_dead = [(int(h[dlq.H_PARTITION]), int(h[dlq.H_OFFSET]), int(h[dlq.H_INDEX]))
                for h in ({k: v.decode() for k, v in m.headers()} for m in letters)]
    assert len(got_dead) == len(set(got_dead)), "a reject dead-lettered twice"
    assert set(got_dead) == dead
    by_pos = {(int(h[dlq.H_OFFSET]), int(h[dlq.H_PARTITION])): (h, m.value()) for m in letters
              for h in [{k: v.decode() for k, v in m.headers()}] if h[dlq.H_INDEX] == "-1"}
    poison = by_pos[positions[25][1], positions[25][0]]
    assert poison[0][dlq.H_REASON] == "MESSAGE_INVALID" and poison[1] == b"not an arrow stream"
    assert by_pos[positions[26][1], positions[26][0]][0][dlq.H_PATH] == "headers.content-type"
    fhir = [json.loads(m.value()) for m in letters if m.partition() == positions[27][0]
            and int(dict(m.headers())[dlq.H_OFFSET].decode()) == positions[27][1]]
    assert [(d["resource_type"], len(d["issues"])) for d in fhir] == [("Observation", 3)]
    assert "healthai_kafka_records_total{" in metrics and 'outcome="rejected"' in metrics


@pytest.mark.parametrize(("protocol", "mechanism"), [("SASL_SSL", "SCRAM-SHA-512"), ("SSL", None)])
def test_tls_and_sasl_settings_reach_librdkafka(tmp_path: Path, protocol: str, mechanism: str | None) -> None:
    from confluent_kafka import Consumer, KafkaException

    from healthai.ingest.kafka.settings import KafkaSettings

    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate")
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    ks = KafkaSettings(security_protocol=protocol, sasl_mechanism=mechanism, sasl_username="ingest",
                       sasl_password_file=pw, ssl_ca_location=ca, properties={"client.rack": "r1"})
    conf = ks.client_config({})
    assert conf["security.protocol"] == protocol and conf["ssl.ca.location"] == str(ca)
    assert conf["client.rack"] == "r1"
    if mechanism:
        assert (conf["sasl.mechanism"], conf["sasl.username"], conf["sasl.password"]) == (mechanism, "ingest",
                                                                                           "s3cret")
    # librdkafka itself validates the names and reads the CA file: a bogus CA is refused by it
    with pytest.raises(KafkaException, match=r"ssl\.ca\.location|certificate|CA"):
        Consumer({**conf, "group.id": "g"})


def test_sasl_without_password_is_refused_with_the_field() -> None:
    from healthai.errors import InvalidInput
    from healthai.ingest.kafka.settings import KafkaSettings

    ks = KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_username="u")
    with pytest.raises(InvalidInput) as exc:
        ks.client_config({})
    assert exc.value.field == "kafka.sasl_username"


def test_the_dead_letter_topic_cannot_be_the_consumed_one() -> None:
    """Each rejected message would be dead-lettered into the topic being read, and read again forever."""
    from healthai.ingest.kafka.settings import KafkaSettings

    with pytest.raises(ValueError, match="dead letters need a topic of their own"):
        KafkaSettings(topic="health-events", dlq_topic="health-events")
