"""Broker reachability and quiet error logging for the Kafka consumer.

librdkafka reports every failed connection attempt (a log line and an ``error_cb`` event, several a
second per client while a broker is unreachable). :class:`Throttle` logs each distinct message once,
then at most one summary per ``every_s`` ("repeated N times"). :class:`BrokerState` turns the
consumer's statistics (``stats_cb``: each broker connection's state) and errors into
``healthai_kafka_broker_up`` and one line per outage and recovery; while no broker is reachable the lag
gauges are withdrawn (unknown, not 0).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("healthai.ingest.kafka")
_VOLATILE = re.compile(r"\s*\(after \d+ms in state \w+(, \d+ identical error\(s\) suppressed)?\)|\b\d+ ?ms\b")
_THREAD = re.compile(r"^\[thrd:[^\]]*\]: ")
_LEVELS = {0: logging.CRITICAL, 1: logging.CRITICAL, 2: logging.CRITICAL, 3: logging.ERROR,
           4: logging.WARNING, 5: logging.INFO, 6: logging.INFO, 7: logging.DEBUG}
MAX_KEYS = 1000


@dataclass
class _Seen:
    level: int
    text: str
    since: float
    repeats: int = 0


class Throttle:
    """Logs a message the first time, then counts its repeats and logs a summary every ``every_s``."""

    def __init__(self, logger: logging.Logger = log, every_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger, self.every_s, self.clock = logger, every_s, clock
        self._seen: dict[str, _Seen] = {}
        self._lock = threading.Lock()

    def emit(self, level: int, text: str) -> None:
        key = _VOLATILE.sub("", text)
        now = self.clock()
        with self._lock:
            seen = self._seen.get(key)
            fresh = seen is None
            if fresh and len(self._seen) < MAX_KEYS:
                self._seen[key] = _Seen(level, text, now)
            elif seen is not None:
                seen.repeats += 1
        if fresh:
            self.logger.log(level, "%s", text)
        self.flush()

    def log(self, level: int, fmt: str, *args: Any) -> None:
        """librdkafka's ``logger`` hook: called with (syslog level, "%s [%s] %s", facility, client, text)."""
        text = _THREAD.sub("", str(args[-1])) if args else fmt
        self.emit(_LEVELS.get(level, logging.WARNING), f"kafka: {text}")

    def flush(self) -> None:
        """Log the summaries that are due; forget messages quiet for a whole period."""
        now = self.clock()
        due: list[_Seen] = []
        with self._lock:
            for key, seen in list(self._seen.items()):
                if now - seen.since < self.every_s:
                    continue
                if seen.repeats:
                    due.append(_Seen(seen.level, seen.text, now - seen.since, seen.repeats))
                    seen.since, seen.repeats = now, 0
                else:
                    del self._seen[key]
        for d in due:
            self.logger.log(d.level, "%s (repeated %d times in the last %.0f s)", d.text, d.repeats, d.since)


class BrokerState:
    """Whether the consumer reaches a broker: ``on_change(up)`` is called at each transition."""

    def __init__(self, on_change: Callable[[bool], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.on_change, self.clock = on_change, clock
        self.up: bool | None = None  # unknown until the first metadata, statistics or error
        self.closing = False  # the client is being closed: its last statistics change nothing
        self._since = clock()
        self._lock = threading.Lock()

    def set(self, up: bool, why: str = "") -> None:
        with self._lock:
            if up == self.up or self.closing:
                return
            was, self.up = self.up, up
            now = self.clock()
            lasted, self._since = now - self._since, now
        if up and was is False:
            log.warning("kafka: a broker is reachable again (after an outage of %.0f s)", lasted)
        elif not up:
            log.error("kafka: no broker reachable%s; retrying (lag unknown until one is)",
                      f" ({why})" if why else "")
        self.on_change(up)

    def stats(self, raw: str) -> None:
        """librdkafka statistics: up when any broker connection is UP."""
        try:
            brokers = json.loads(raw).get("brokers", {})
        except ValueError:
            return
        if brokers:
            self.set(any(b.get("state") == "UP" for b in brokers.values()), "no broker connection is up")
