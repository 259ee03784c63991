"""Serving settings (model repository, runtime, batching) — nested in ``healthai.app.settings.Settings``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_MODEL_REPOSITORY = Path(__file__).resolve().parent.parent / "data" / "models"


def newest_version_dir(name: str, repository: Path = DEFAULT_MODEL_REPOSITORY) -> Path:
    """The folder of a model's newest version in a repository (the version served by default)."""
    from healthai.serving.runtime.repository import scan_versions  # the manager's own rule for versions

    versions = scan_versions(repository / name)
    if not versions:
        raise FileNotFoundError(f"{repository / name} holds no version folder")
    return versions[max(versions)].path


class ServingSettings(BaseModel):
    """How models are found, run and batched. Every field has a working default."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is refused, never ignored

    enabled: bool = True
    model_repository: Path = DEFAULT_MODEL_REPOSITORY
    # ONNX Runtime threads per session (small executions may run on the event loop: see below).
    intra_op_threads: int = Field(default=1, ge=1)
    # Where models execute: in this process (ONNX Runtime) or on a Triton Inference Server over its
    # gRPC protocol (``healthai triton prepare``; this process still reads the same repository).
    backend: Literal["onnxruntime", "triton"] = "onnxruntime"
    triton_url: str = "127.0.0.1:8001"  # host:port of Triton's gRPC endpoint
    triton_timeout_s: float = Field(default=30.0, gt=0)
    # Requests in flight to Triton per model version (the scheduler's worker threads).
    triton_max_inflight: int = Field(default=4, ge=1)
    # CUDA provider when onnxruntime-gpu and a GPU are present (falls back to CPU otherwise).
    use_cuda: bool = True
    # Poll interval of the hot-reload watcher; 0 disables watching (models load once at start).
    reload_poll_s: float = Field(default=2.0, ge=0.0)
    # Requests (not rows) waiting per model version; a full queue answers RESOURCE_EXHAUSTED at once.
    max_queue_requests: int = Field(default=1024, ge=1)
    # Turns every model's ``dynamic_batching`` block off (one request per execution) — for comparison.
    dynamic_batching: bool = True
    # Small executions run on the event loop instead of a worker thread: a batch whose measured cost
    # (moving average, see runtime/scheduler.py) is at most this many µs. Handing a run to a thread
    # and back costs the server ~100-250 µs of CPU per call and two thread wake-ups (measured on the
    # shared 2-core dev machine with a one-patient Risk.Score), so a run this short holds the loop no
    # longer than the hand-off would. A machine-level choice, not fitted to any data set.
    # 0 = every execution on the worker threads.
    inline_execute_max_us: float = Field(default=200.0, ge=0.0)
    # While the event loop is busy with other calls, a request that could batch waits for company up
    # to this long (or the model's max_queue_delay, if longer); it runs at once when the loop would go
    # idle or the batch is full, so an idle server never holds one back. Waiting then delays no work
    # the loop could do, and one execution serves many calls. Chosen from Risk.Score at concurrency 32
    # on the shared 2-core dev machine (batches of ~2.6 one-patient requests at 500 µs, ~4-6 at
    # 1-2 ms), not from any data set. Such a batch also runs on the loop when its measured cost fits
    # this window (a thread hand-off costs a saturated loop more). 0 = requests never wait on a busy loop.
    busy_batch_window_us: float = Field(default=2000.0, ge=0.0)
    # ... and when the loop goes idle meanwhile, the batch still waits this long for more calls (a
    # loaded server's loop pauses briefly while its callers are between calls; only a loop that was
    # busy since the previous arrival gathers, so a lone caller never pays it). A new call restarts it;
    # it ends once the batch is as large as the largest of the model's last 8 gathered batches. The loop
    # waits in epoll, which counts in whole milliseconds: a quiet loop runs the batch up to 1 ms after it
    # went idle; I/O that wakes it after the grace has passed runs it at once. 150, 300 and 1000 µs tried
    # on the dev machine at concurrency 4 and 32 (same within noise), not fitted to any data set.
    # 0 = run at the first idle moment.
    busy_batch_idle_grace_us: float = Field(default=150.0, ge=0.0)
    # Patients per Risk.Score call; larger batches run alone (not coalesced) but must stay under this.
    max_patients_per_request: int = Field(default=10_000, ge=1)
    # Top contributing features returned when a Risk request does not say.
    default_top_features: int = Field(default=3, ge=0)
    # Named region graphs served by Forecast: graph name -> model name.
    forecast_graphs: dict[str, str] = Field(
        default_factory=lambda: {"japan": "forecast_japan", "us_states": "forecast_us_states"}
    )
