"""Kafka -> store throughput: ``healthai ingest-kafka``'s loop (KafkaIngest) against librdkafka's mock
cluster, in this process, over a temporary Parquet store (every record normalized and fsynced).

Messages are the same realistic flat observation records as benchmarks/ingest.py (some in
non-canonical units), as Arrow IPC streams and as ``FlatRecords`` protobuf; the clock runs from the
first batch to the last offset commit (the consumer-group join before it is not counted).

    .venv/bin/python benchmarks/kafka_ingest.py            # 200,000 records per format
    .venv/bin/python benchmarks/kafka_ingest.py --quick    # 20,000
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path

from confluent_kafka import Producer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import arrow_request, flat_request, observation_table

from healthai.app.settings import Settings
from healthai.ingest.kafka.consumer import KafkaIngest

TARGET = 50_000  # flat records/s (issue 13)


def run_one(fmt: str, records: int, per_message: int, batch_messages: int) -> tuple[float, int]:
    owner = Producer({"test.mock.num.brokers": 1, "bootstrap.servers": "", "log_level": 2})
    bootstrap = ",".join(f"{b.host}:{b.port}" for b in owner.list_topics(timeout=10).brokers.values())
    producer = Producer({"bootstrap.servers": bootstrap, "log_level": 2, "linger.ms": 20})
    for m in range(records // per_message):
        table = observation_table(per_message, seed=m)
        table = table.set_column(0, "observation_id", [[f"m{m}-{i}" for i in range(per_message)]])
        if fmt == "arrow":
            value = arrow_request(table, "s").arrow.ipc_stream
            headers = [("content-type", b"application/vnd.apache.arrow.stream"),
                       ("healthai-kind", b"observation")]
        else:
            value = flat_request(table, "s").flat.SerializeToString()
            headers = [("content-type", b"application/x-protobuf")]
        producer.produce("health-events", value=value, headers=headers, partition=m % 4)
        producer.poll(0)
    producer.flush(60)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(store_uri=str(Path(tmp) / "store"), dev_mode=True, max_records_per_request=10**7,
                            kafka={"bootstrap_servers": bootstrap, "batch_max_messages": batch_messages,
                                   "properties": {"log_level": "2"}})
        ingest = KafkaIngest(settings)
        stop = threading.Event()
        state = {"rows": 0, "t0": 0.0, "t1": 0.0}
        prepare, finish = ingest.prepare, ingest.finish

        def timed_prepare(msgs: list) -> object:
            state["t0"] = state["t0"] or time.perf_counter()
            return prepare(msgs)

        def timed(batch: object) -> None:
            finish(batch)
            state["rows"] = sum(ingest.store.count(k) for k in ("observation",))
            state["t1"] = time.perf_counter()
            if state["rows"] >= records:
                stop.set()

        ingest.prepare, ingest.finish = timed_prepare, timed  # type: ignore[method-assign]
        ingest.run(stop)
    owner.flush(5)
    return records / (state["t1"] - state["t0"]), int(state["rows"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    n = 20_000 if args.quick else 200_000
    print(f"# {n:,} flat observation records per format, 1,000 per message, up to 100 messages per commit")
    print("| path | throughput | target | met |")
    print("|---|---|---|---|")
    for fmt in ("arrow", "protobuf"):
        rate, rows = run_one(fmt, n, 1_000, 100)
        assert rows == n, f"{fmt}: {rows} rows stored of {n}"
        print(f"| kafka {fmt} -> store | {rate:,.0f} rec/s | >= {TARGET:,} rec/s | "
              f"{'met' if rate >= TARGET else 'NOT met'} |")


if __name__ == "__main__":
    main()
