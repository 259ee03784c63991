"""Three replicas on loopback, one SIGKILLed mid-load (issue 7 item 4).

Three real ``healthai serve`` processes, each with its own store (``ParquetStore`` keeps its dedup
index and commit sequence in process memory, so a store directory must not be shared by processes).
Workers drive Ingest and Risk.Score through one SDK client that round-robins over the three
addresses; one replica is killed with SIGKILL while calls are in flight. Checked: no error reaches a
caller (the SDK retried the UNAVAILABLE attempts on the others), every ingest the SDK returned
(acknowledged) is in the union of the three stores afterwards — the killed replica's included — and
service recovers: the SDK marks the killed address down, no call is routed to it once the first
seconds have passed, and every worker keeps completing calls on the other two. The throughput before,
during and after is printed (``-s`` shows it) but not asserted: two replicas serve about 2/3 of what
three did (runs here: 0.63-0.76 after/before), and on a shared 2-core machine that ratio is
noise-bound (a CI run measured 0.47); speed is checked by benchmarks, not unit tests.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from healthai.app.settings import KEY_ENV, Settings
from healthai.app.testing import start_server_process, stop_server_process
from healthai.normalize.identity import Pseudonymizer, record_system
from healthai.serving.risk.card import example_patient
from healthai.serving.settings import newest_version_dir
from healthai.store import ParquetStore
from healthai_client import Client, RetryPolicy

KEY = "5e" * 32  # one pseudonym key for every replica: the same patient has the same record key
SOURCE = "replica-fault-test"
WORKERS = 6
WARMUP_S, BEFORE_S, DURING_S, AFTER_S = 1.0, 4.0, 2.0, 4.0


@dataclass
class Load:
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    done_by_worker: dict[int, list[float]] = field(default_factory=dict)  # completion times (monotonic)
    acked: list[str] = field(default_factory=list)  # patient ids whose ingest returned
    errors: list[BaseException] = field(default_factory=list)

    @property
    def done(self) -> list[float]:
        return [t for times in self.done_by_worker.values() for t in times]


def rate(times: list[float], start: float, stop: float) -> float:
    return sum(start <= t < stop for t in times) / (stop - start)


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[tuple[list[subprocess.Popen[bytes]], list[int], list[Path]]]:
    stores = [tmp_path / f"store{i}" for i in range(3)]
    env = {KEY_ENV: KEY, "HEALTHAI_SERVING__RELOAD_POLL_S": "0"}

    def start(store: Path) -> tuple[subprocess.Popen[bytes], int]:
        return start_server_process(["--store-uri", str(store), "--log-level", "WARNING"], env,
                                    stderr=subprocess.DEVNULL)

    with ThreadPoolExecutor(3) as pool:
        started = list(pool.map(start, stores))
    procs, ports = [p for p, _ in started], [port for _, port in started]
    try:
        yield procs, ports, stores
    finally:
        for proc in procs:
            if proc.poll() is None:
                stop_server_process(proc)


def worker(client: Client, load: Load, w: int, features: np.ndarray) -> None:
    i = 0
    while not load.stop.is_set():
        i += 1
        try:
            if i % 2:
                pid = f"w{w}-{i}"
                r = client.ingest_flat(patients=[{"patient_id": pid, "sex": "female", "region": "US-MA"}])
                assert r.accepted == 1 and r.rejected == 0, r
                with load.lock:
                    load.acked.append(pid)
            else:
                assert len(client.score("risk_heart", features).patients) == 1
        except BaseException as exc:  # every failure is a finding: none may reach the caller
            with load.lock:
                load.errors.append(exc)
            return
        with load.lock:
            load.done_by_worker.setdefault(w, []).append(time.monotonic())


def retry_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]


@pytest.mark.timeout(120)
def test_sigkill_one_replica_mid_load(replicas: tuple[list[subprocess.Popen[bytes]], list[int], list[Path]],
                                      caplog: pytest.LogCaptureFixture) -> None:
    procs, ports, stores = replicas
    addresses = [f"127.0.0.1:{p}" for p in ports]
    caplog.set_level(logging.INFO, logger="healthai_client.client")
    load = Load()
    card = json.loads((newest_version_dir("risk_heart") / "model_card.json").read_text())
    features = np.array([list(example_patient(card).values())], np.float32)
    policy = RetryPolicy(max_attempts=6, initial_backoff_s=0.02, max_backoff_s=0.2)
    with Client(addresses=addresses, retry=policy, timeout=15, source=SOURCE) as client:
        threads = [threading.Thread(target=worker, args=(client, load, w, features), daemon=True)
                   for w in range(WORKERS)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(WARMUP_S + BEFORE_S)
        t_kill = time.monotonic()
        procs[0].send_signal(signal.SIGKILL)
        time.sleep(DURING_S)
        retries_at_recovery = len(retry_messages(caplog))
        time.sleep(AFTER_S)
        t_end = time.monotonic()
        down = client.down_addresses
        load.stop.set()
        for t in threads:
            t.join(20)
        assert not any(t.is_alive() for t in threads)
    assert procs[0].wait(10) == -signal.SIGKILL

    before = rate(load.done, t0 + WARMUP_S, t_kill)
    during = rate(load.done, t_kill, t_kill + DURING_S)
    after = rate(load.done, t_kill + DURING_S, t_end)
    retried = retry_messages(caplog)
    on_killed = [m for m in retried if addresses[0] in m]
    print(f"\nreplicas: calls/s before kill {before:.0f} (3 replicas), during {during:.0f} "
          f"(first {DURING_S:.0f} s), after {after:.0f} (2 replicas), after/before {after / before:.2f}; "
          f"retried attempts {len(retried)} ({len(on_killed)} on the killed replica); "
          f"acked ingests {len(load.acked)}")

    assert not load.errors, f"{len(load.errors)} call(s) failed at the caller: {load.errors[:3]}"
    assert on_killed, "no call to the killed replica was retried: the kill did not hit calls in flight"
    assert all("UNAVAILABLE" in m for m in retried), retried[:3]
    # recovered: the killed address is known down, nothing was routed to it after the first seconds,
    # and every worker completed calls on the survivors in the last AFTER_S seconds
    assert down == (addresses[0],), down
    assert retried[retries_at_recovery:] == [], retried[retries_at_recovery:][:3]
    stalled = [w for w in range(WORKERS)
               if not any(t >= t_kill + DURING_S for t in load.done_by_worker.get(w, []))]
    assert not stalled, f"worker(s) {stalled} completed no call after the first {DURING_S:.0f} s"

    # nothing acknowledged is lost: every acked patient is in one of the stores (the killed one too)
    for proc in procs[1:]:
        assert stop_server_process(proc) == 0
    ps = Pseudonymizer(Settings().pseudonym_key({KEY_ENV: KEY}))
    system = record_system(SOURCE, "Patient")
    opened = [ParquetStore(str(s)).open() for s in stores]
    keys = {pid: ps.pseudonym(system, pid) for pid in load.acked}
    kept_by_killed = sum(opened[0].contains("patient", SOURCE, key) for key in keys.values())
    lost = [pid for pid, key in keys.items() if not any(s.contains("patient", SOURCE, key) for s in opened)]
    print(f"replicas: acked ingests found in the stores: {len(load.acked) - len(lost)}/{len(load.acked)} "
          f"({kept_by_killed} in the killed replica's store)")
    assert not lost, f"{len(lost)} acknowledged records lost, e.g. {lost[:3]}"
    assert kept_by_killed > 0  # the killed replica's acknowledged commits survived SIGKILL
