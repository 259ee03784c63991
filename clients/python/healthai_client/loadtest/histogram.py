"""A log-linear latency histogram in the style of HdrHistogram (written here: no dependency).

Values are integers (the harness records microseconds). Values below ``2·half`` get one bucket each;
above, every power-of-two range is split into ``half`` equal buckets, so any recorded value is known
to within a relative error of 1/half (``significant_digits=3`` -> half = 1024, error < 0.1%) in a
few tens of kB of counts, however many values are recorded. Percentiles use the nearest-rank
definition and report the midpoint of the bucket holding that rank.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


class LogLinearHistogram:
    def __init__(self, *, significant_digits: int = 3, max_value: int = 3_600_000_000) -> None:
        if not 1 <= significant_digits <= 5:
            raise ValueError(f"significant_digits must be in 1..5, got {significant_digits}")
        if max_value < 2:
            raise ValueError(f"max_value must be >= 2, got {max_value}")
        self.significant_digits = significant_digits
        self.sub_bits = math.ceil(math.log2(2 * 10**significant_digits))
        self.sub_count = 1 << self.sub_bits
        self.half = self.sub_count // 2
        self.max_value = int(max_value)
        self.counts = np.zeros(self._index(self.max_value) + 1, dtype=np.int64)
        self.total = 0
        self.min = math.inf
        self.max = -math.inf
        self.sum = 0.0
        self.clamped = 0  # values above max_value, recorded as max_value

    # -- indexing ---------------------------------------------------------------------------------

    def _index(self, value: int) -> int:
        if value < self.sub_count:
            return value
        shift = value.bit_length() - self.sub_bits
        return self.sub_count + (shift - 1) * self.half + ((value >> shift) - self.half)

    def _indices(self, values: np.ndarray) -> np.ndarray:
        v = values.astype(np.int64)
        big = v >= self.sub_count
        bits = np.frexp(v.astype(np.float64))[1].astype(np.int64)  # == int.bit_length below 2**53
        shift = np.where(big, bits - self.sub_bits, 0)
        return np.where(big, self.sub_count + (shift - 1) * self.half + ((v >> shift) - self.half), v)

    def bucket_bounds(self, index: int) -> tuple[int, int]:
        """Inclusive [lowest, highest] value that lands in bucket ``index``."""
        if index < self.sub_count:
            return index, index
        shift = (index - self.sub_count) // self.half + 1
        m = (index - self.sub_count) % self.half + self.half
        return m << shift, ((m + 1) << shift) - 1

    # -- recording --------------------------------------------------------------------------------

    def record(self, value: float) -> None:
        self.record_many(np.asarray([value]))

    def record_many(self, values: Any) -> None:
        v = np.asarray(values, dtype=np.float64).ravel()
        if v.size == 0:
            return
        if np.any(~np.isfinite(v)) or np.any(v < 0):
            raise ValueError("histogram values must be finite and >= 0")
        v = np.rint(v).astype(np.int64)
        over = v > self.max_value
        self.clamped += int(over.sum())
        v = np.minimum(v, self.max_value)
        np.add.at(self.counts, self._indices(v), 1)
        self.total += int(v.size)
        self.sum += float(v.sum())
        self.min = min(self.min, float(v.min()))
        self.max = max(self.max, float(v.max()))

    def merge(self, other: LogLinearHistogram) -> None:
        if (other.sub_bits, other.max_value) != (self.sub_bits, self.max_value):
            raise ValueError("can only merge histograms with the same significant_digits and max_value")
        self.counts += other.counts
        self.total += other.total
        self.sum += other.sum
        self.clamped += other.clamped
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    # -- queries ----------------------------------------------------------------------------------

    def _value_of(self, index: int) -> float:
        lo, hi = self.bucket_bounds(index)
        return (lo + hi) / 2

    def percentile(self, p: float) -> float:
        """Value at percentile ``p`` in [0, 100] (nearest rank); NaN when empty."""
        if not 0 <= p <= 100:
            raise ValueError(f"percentile must be in [0, 100], got {p}")
        if self.total == 0:
            return math.nan
        if p == 0:
            return self.min
        rank = max(1, math.ceil(p / 100 * self.total))
        index = int(np.searchsorted(np.cumsum(self.counts), rank))
        return min(max(self._value_of(index), self.min), self.max)

    @property
    def mean(self) -> float:
        return self.sum / self.total if self.total else math.nan

    def cdf(self) -> tuple[np.ndarray, np.ndarray]:
        """(bucket midpoints, cumulative fraction) over non-empty buckets — for plotting."""
        idx = np.nonzero(self.counts)[0]
        if idx.size == 0:
            return np.zeros(0), np.zeros(0)
        mids = np.array([self._value_of(int(i)) for i in idx])
        frac = np.cumsum(self.counts[idx]) / self.total
        return mids, frac

    def summary(self, percentiles: tuple[float, ...] = (50, 90, 99, 99.9)) -> dict[str, float]:
        out = {f"p{p:g}": self.percentile(p) for p in percentiles}
        out.update(min=self.min if self.total else math.nan, max=self.max if self.total else math.nan,
                   mean=self.mean, count=float(self.total))
        return out
