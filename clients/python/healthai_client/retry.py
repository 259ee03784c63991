"""Retry policy: exponential backoff with full jitter, for UNAVAILABLE only.

Only UNAVAILABLE is retried: the call did not reach a working server (connection refused, server
draining, model not loaded yet, or the server's store cannot be written right now: nothing of the
batch was acknowledged). Every other status — INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED
(overload: retrying would feed it), DEADLINE_EXCEEDED — is final. Ingest is safe to retry because the
service is idempotent on (source, record id); Score and Forecast are read-only.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5  # attempts in all, the first one included; 1 = no retries
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 2.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.initial_backoff_s < 0 or self.max_backoff_s < self.initial_backoff_s:
            raise ValueError("need 0 <= initial_backoff_s <= max_backoff_s")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be >= 1, got {self.multiplier}")

    def backoff_s(self, retry: int, rng: random.Random | None = None) -> float:
        """Sleep before retry number ``retry`` (1-based): uniform in [0, min(max, initial·mult^(retry-1))]."""
        cap = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (retry - 1))
        return (rng or random).uniform(0.0, cap)


NO_RETRY = RetryPolicy(max_attempts=1)
