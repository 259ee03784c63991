"""The scenario plugin the server process loads (see ``healthai.app.server.ServicePlugin``)."""

from __future__ import annotations

from typing import Any

import grpc

from healthai.scenario.service import SERVICE_NAME, ScenarioServicer, Surveillance
from healthai.scenario.settings import ScenarioSettings
from healthai.v1 import scenario_pb2_grpc


class ScenarioPlugin:
    service_names = (SERVICE_NAME,)

    def __init__(self, settings: ScenarioSettings, surveillance: Surveillance | None = None) -> None:
        self.servicer = ScenarioServicer(settings, surveillance)

    def add_to_server(self, server: grpc.aio.Server) -> None:
        scenario_pb2_grpc.add_ScenarioServicer_to_server(self.servicer, server)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        await self.servicer.shutdown()


def plugin(*, settings: Any, surveillance: Surveillance | None = None) -> ScenarioPlugin:
    """Entry point for ``healthai.app``: ``settings`` is the app Settings (or ScenarioSettings itself)."""
    scenario = settings if isinstance(settings, ScenarioSettings) else settings.scenario
    return ScenarioPlugin(scenario, surveillance)
