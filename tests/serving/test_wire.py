"""healthai.serving.wire: packed float32 bytes merged into a message (``extend_float32``) are the values
``extend(array.tolist())`` would have given, bit for bit, in any shape and dtype; a forecast history
read from the wire bytes is the one read value by value."""

from __future__ import annotations

import numpy as np
import pytest

from healthai.serving.wire import extend_float32, packed_float32
from healthai.v1 import forecast_pb2, scenario_pb2


def _slow(values: np.ndarray) -> forecast_pb2.ForecastResponse:
    out = forecast_pb2.ForecastResponse(model_name="m")
    out.quantiles.extend(np.asarray(values).reshape(-1).tolist())
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_bits_as_extending_with_python_floats(dtype) -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(0, 1e3, (5, 311, 23)).astype(dtype)
    values[0, 0, :6] = [np.inf, -np.inf, -0.0, 1e-45, 3.4e38, 1e39 if dtype == np.float64 else 1.0]
    values = values[:, ::-1]  # not C-contiguous
    fast = forecast_pb2.ForecastResponse(model_name="m")
    extend_float32(fast, "quantiles", values)
    slow = _slow(values)
    assert fast.SerializeToString() == slow.SerializeToString()
    got = np.asarray(fast.quantiles, np.float32)
    np.testing.assert_array_equal(got.view(np.uint32), np.asarray(slow.quantiles, np.float32).view(np.uint32))
    assert len(fast.quantiles) == values.size


def test_nan_stays_nan_and_values_append() -> None:
    msg = forecast_pb2.ForecastResponse()
    msg.point.extend([1.0, 2.0])
    extend_float32(msg, "point", np.array([np.nan, 3.5]))
    extend_float32(msg, "point", np.zeros((0, 4)))  # nothing to add
    got = list(msg.point)
    assert got[:2] == [1.0, 2.0] and np.isnan(got[2]) and got[3] == 3.5 and len(got) == 4
    parsed = forecast_pb2.ForecastResponse.FromString(msg.SerializeToString())
    assert len(parsed.point) == 4 and parsed.point[3] == 3.5


def test_large_arrays_round_trip_through_the_wire() -> None:
    values = np.random.default_rng(1).uniform(0, 500, 1_000_003).astype(np.float32)
    msg = scenario_pb2.ScenarioResult()
    extend_float32(msg, "samples", values)
    parsed = scenario_pb2.ScenarioResult.FromString(msg.SerializeToString())
    np.testing.assert_array_equal(packed_float32(parsed, "samples", values.size), values)


def test_refuses_a_field_that_is_not_repeated_float() -> None:
    msg = scenario_pb2.ScenarioResult()
    with pytest.raises(TypeError, match="not a repeated float"):
        extend_float32(msg, "quantile_levels", np.ones(3))  # repeated double
    with pytest.raises(TypeError, match="not a repeated float"):
        extend_float32(msg, "elapsed_s", np.ones(1))


def test_forecast_history_reads_the_same_window_either_way() -> None:
    from healthai.errors import InvalidInput
    from healthai.serving.forecast.card import ForecastCard
    from healthai.serving.forecast.servicer import explicit_window

    n, steps = 300, 30  # 9,000 values: the wire-bytes path; 30 x 10 below: the per-value path
    for regions in (n, 10):
        ids = tuple(f"R{i:03d}" for i in range(regions))
        card = ForecastCard(window=20, horizons=(1,), quantile_levels=np.array([0.5]), region_ids=ids,
                            region_aliases={r: i for i, r in enumerate(ids)}, step="W")
        counts = np.random.default_rng(regions).uniform(0, 900, (steps, regions)).astype(np.float32)
        order = np.random.default_rng(1).permutation(regions)  # the caller's region order
        history = forecast_pb2.History(region_ids=[ids[c] for c in order],
                                       counts=counts[:, order].reshape(-1).tolist())
        np.testing.assert_array_equal(explicit_window(history, card), counts[-20:])
        history.counts[-1] = float("nan")  # the last step, the caller's last region
        with pytest.raises(InvalidInput, match=rf"history.counts\[29\]\[{ids[order[-1]]}\]: value nan"):
            explicit_window(history, card)
