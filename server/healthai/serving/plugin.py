"""The serving plugin the server process loads: Risk, Forecast, KServe v2 and Diagnostics over one
model manager (see ``healthai.app.server.ServicePlugin``).

Health per service follows the loaded models (after every scan, load and unload): Risk is NOT_SERVING
while no risk model is loaded, Forecast while no forecast model is, KServe while no model at all is
(an empty repository volume, every version refused); Diagnostics is always SERVING."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from healthai.app.server import ServiceHealth

log = logging.getLogger(__name__)


class ServingPlugin:
    service_names = (risk.SERVICE_NAME, forecast.SERVICE_NAME, kserve.SERVICE_NAME, diagnostics.SERVICE_NAME)

    def __init__(self, settings: ServingSettings, surveillance: forecast.Surveillance | None = None) -> None:
        self.settings = settings
        self.manager = ModelManager(settings, inspectors=[inspect_risk, inspect_forecast])
        self.surveillance = surveillance
        self.health: ServiceHealth | None = None

    def bind_health(self, health: ServiceHealth) -> None:
        self.health = health
        self.manager.on_change = self._report_health

    def _report_health(self) -> None:
        """Each service SERVING while a model it can serve is loaded (a risk / forecast model: one its
        inspector accepted)."""
        if self.health is None:
            return
        loaded = [v for name in self.manager.model_names() for v in self.manager.ready_versions(name)]
        where = f"model repository {self.settings.model_repository}"
        for service, kind in ((risk.SERVICE_NAME, "risk"), (forecast.SERVICE_NAME, "forecast")):
            ready = [v.name for v in loaded if kind in v.extras]
            self.health.set_ready(service, bool(ready),
                                  f"{kind} model(s) {sorted(set(ready))} loaded" if ready
                                  else f"no {kind} model is loaded ({where})")
        self.health.set_ready(kserve.SERVICE_NAME, bool(loaded),
                              f"{len(loaded)} model version(s) loaded" if loaded
                              else f"no model is loaded ({where})")

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
