"""Serving settings (model repository, runtime, batching) — nested in ``healthai.app.settings.Settings``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

DEFAULT_MODEL_REPOSITORY = Path(__file__).resolve().parent.parent / "data" / "models"


class ServingSettings(BaseModel):
    """How models are found, run and batched. Every field has a working default."""

    enabled: bool = True
    model_repository: Path = DEFAULT_MODEL_REPOSITORY
    # ONNX Runtime threads per session; inference runs on a thread pool, never on the event loop.
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
    # Opt-in latency trade: a lone one-row request on an idle ONNX Runtime model runs on the event
    # loop when the model's one-row executions average at most this many µs (cheaper than the thread
    # hand-off; measured p50 1.45x -> 1.3x of an echo RPC). 0 (default) = inference always runs off
    # the event loop, so no model run can delay other calls.
    inline_execute_max_us: float = Field(default=0.0, ge=0.0)
    # Patients per Risk.Score call; larger batches run alone (not coalesced) but must stay under this.
    max_patients_per_request: int = Field(default=10_000, ge=1)
    # Top contributing features returned when a Risk request does not say.
    default_top_features: int = Field(default=3, ge=0)
    # Named region graphs served by Forecast: graph name -> model name.
    forecast_graphs: dict[str, str] = Field(
        default_factory=lambda: {"japan": "forecast_japan", "us_states": "forecast_us_states"}
    )
