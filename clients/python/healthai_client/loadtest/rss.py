"""Resident memory of the server under load (``--rss-pid PID``, automatic with ``--spawn``): sampled
from ``/proc/<pid>/status`` on a background thread, so a sustained run shows whether memory stays flat."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

WARMUP_FRACTION = 0.2  # growth is measured from the end of the first fifth of the run


def read_rss_bytes(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError as e:
        raise ValueError(f"cannot read the memory of process {pid}: {e.strerror} (Linux /proc needed)") from e
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"process {pid} reports no VmRSS")


class RssSampler:
    """``with RssSampler(pid) as s: ...`` -> ``s.samples`` = [(seconds since start, bytes)]."""

    def __init__(self, pid: int, interval_s: float = 0.25) -> None:
        read_rss_bytes(pid)  # fail now, not in the thread
        self.pid, self.interval_s = pid, interval_s
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        t0 = time.perf_counter()
        while True:
            try:
                self.samples.append((time.perf_counter() - t0, read_rss_bytes(self.pid)))
            except ValueError:
                return  # the process ended
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def summarize(samples: list[tuple[float, int]]) -> dict[str, Any]:
    if not samples:
        return {}
    mb = [b / 2**20 for _, b in samples]
    end_t = samples[-1][0]
    after = [m for (t, _), m in zip(samples, mb, strict=True) if t >= WARMUP_FRACTION * end_t] or mb
    return {"start_mb": round(mb[0], 1), "after_warmup_mb": round(after[0], 1), "end_mb": round(mb[-1], 1),
            "max_mb": round(max(mb), 1), "growth_after_warmup_pct": round(100 * (mb[-1] / after[0] - 1), 2),
            "samples": len(mb)}
