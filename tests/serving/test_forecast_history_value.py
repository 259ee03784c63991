"""A forecaster's history cell that is no count: NaN and infinity are refused as not finite, without the
remark about negative counts (which only explains refusing a negative one), over Forecast and KServe."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from healthai.v1 import forecast_pb2, forecast_pb2_grpc

from .tiny_models import write_forecast_version

REGIONS = ["US-MA", "US-NY", "US-CT"]
W, S = 4, 3
NEGATIVE_REMARK = "this model was not trained on negative counts"


@pytest.fixture
def server(tmp_path, make_server):
    write_forecast_version(tmp_path / "models", "forecast_tiny", 1, REGIONS, window=W, steps=S)
    return make_server(tmp_path / "models")


@pytest.mark.parametrize(("value", "text"), [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf")])
def test_forecast_history_not_finite(server, value: float, text: str) -> None:
    counts = np.ones((W, 3), np.float32)
    counts[2, 1] = value
    with pytest.raises(grpc.RpcError) as err:
        forecast_pb2_grpc.ForecastStub(server.channel).Forecast(forecast_pb2.ForecastRequest(
            model_name="forecast_tiny", history=forecast_pb2.History(region_ids=REGIONS,
                                                                     counts=counts.ravel().tolist())),
            timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == f"history.counts[2][US-NY]: value {text} is not a finite count"


@pytest.mark.parametrize("value", [np.nan, np.inf, -3.0])
def test_kserve_history_cell(server, value: float) -> None:
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException

    counts = np.ones((1, W, 3), np.float32)
    counts[0, 2, 1] = value
    tensor = triton.InferInput("history", list(counts.shape), "FP32")
    tensor.set_data_from_numpy(counts)
    with pytest.raises(InferenceServerException) as err, \
            triton.InferenceServerClient(f"127.0.0.1:{server.port}") as client:
        client.infer("forecast_tiny", [tensor])
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
    message = err.value.message()
    assert "value nan" in message or "value inf" in message or message.endswith(
        f"history[0][2][1] (region US-NY): value -3.0 is not a finite count >= 0 ({NEGATIVE_REMARK})")
    assert (NEGATIVE_REMARK in message) == (value < 0)
