"""build_info / ort_library_path / `healthai info` report what was built."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

import healthai
from healthai.ops import build_info, get_num_threads, ort_library_path, set_num_threads


def test_build_info_fields() -> None:
    info = build_info()
    assert info["version"] == healthai.__version__
    assert info["cpu"] is True
    assert isinstance(info["cuda"], bool)
    assert (info["cuda_version"] is None) == (not info["cuda"])
    if info["ort_ops"]:
        path = ort_library_path()
        assert path is not None and path.is_file() and info["ort_ops_library_path"] == str(path)
    else:
        assert ort_library_path() is None and "not built" in info["ort_ops_note"]


def test_thread_count_setting() -> None:
    before = get_num_threads()
    try:
        set_num_threads(1)
        assert get_num_threads() == 1
    finally:
        set_num_threads(before)


def test_healthai_info_command() -> None:
    res = subprocess.run(
        [sys.executable, "-c", "from healthai.cli import main; main(['info'])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    info = json.loads(res.stdout)
    assert info["version"] == healthai.__version__ and "cuda" in info


def test_gil_released_during_kernel() -> None:
    """Another Python thread keeps running during one long kernel call."""
    import threading
    import time

    from healthai.ops import aggregate

    n = 200_000
    indptr = np.arange(n + 1, dtype=np.int64) * 8
    indices = np.random.default_rng(0).integers(0, n, size=8 * n)
    x = np.ones((n, 64), np.float32)
    ticks: list[float] = []
    stop = threading.Event()

    def ticker() -> None:
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.0005)

    t = threading.Thread(target=ticker)
    t.start()
    try:
        time.sleep(0.01)
        t0 = time.perf_counter()
        aggregate(indptr, indices, x, num_threads=1)
        t1 = time.perf_counter()
    finally:
        stop.set()
        t.join()
    during = [tick for tick in ticks if t0 < tick < t1]
    # with the GIL held the ticker could not run at all inside the call
    assert len(during) >= 2, f"{len(during)} ticks during a {1e3 * (t1 - t0):.1f} ms call"
