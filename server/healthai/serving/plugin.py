"""The serving plugin the server process loads: Risk, Forecast, KServe v2 and Diagnostics over one
model manager (see ``healthai.app.server.ServicePlugin``)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc

from healthai.serving import diagnostics
from healthai.serving.forecast import servicer as forecast
from healthai.serving.forecast.card import inspect_forecast
from healthai.serving.kserve import servicer as kserve
from healthai.serving.risk import charlson
from healthai.serving.risk import servicer as risk
from healthai.serving.risk.task import inspect_risk
from healthai.serving.runtime.manager import ModelManager
from healthai.serving.settings import ServingSettings
from healthai.v1 import diagnostics_pb2_grpc, forecast_pb2_grpc, risk_pb2_grpc

log = logging.getLogger(__name__)


class ServingPlugin:
    service_names = (risk.SERVICE_NAME, forecast.SERVICE_NAME, kserve.SERVICE_NAME, diagnostics.SERVICE_NAME)

    def __init__(self, settings: ServingSettings, surveillance: forecast.Surveillance | None = None) -> None:
        self.settings = settings
        self.manager = ModelManager(settings, inspectors=[inspect_risk, inspect_forecast])
        self.surveillance = surveillance

    def add_to_server(self, server: grpc.aio.Server) -> None:
        risk_pb2_grpc.add_RiskServicer_to_server(risk.RiskServicer(self.manager, self.settings), server)
        forecast_pb2_grpc.add_ForecastServicer_to_server(
            forecast.ForecastServicer(self.manager, self.settings, self.surveillance), server)
        kserve.add_to_server(kserve.InferenceServicer(self.manager), server)
        diagnostics_pb2_grpc.add_DiagnosticsServicer_to_server(diagnostics.DiagnosticsServicer(), server)

    async def start(self) -> None:
        await asyncio.to_thread(charlson.warm)
        await self.manager.start()
        log.info("model repository %s: %s", self.settings.model_repository,
                 ", ".join(f"{e.name} v{e.version} {e.state}" for e in self.manager.index()) or "empty")

    async def stop(self) -> None:
        await self.manager.stop()


def plugin(*, settings: Any, surveillance: forecast.Surveillance | None = None) -> ServingPlugin:
    """Entry point for ``healthai.app``: ``settings`` is the app Settings (or ServingSettings itself)."""
    serving = settings if isinstance(settings, ServingSettings) else settings.serving
    return ServingPlugin(serving, surveillance)
