"""A real server (the app's assembly: interceptor, health, reflection + the serving plugin) on
127.0.0.1, run on its own event loop in a background thread so tests can use blocking clients."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from healthai.app.server import RunningServer, build_server
from healthai.app.settings import Settings
from healthai.serving.plugin import ServingPlugin, plugin
from healthai.serving.runtime import idle
from healthai.serving.settings import ServingSettings

from .tiny_models import write_risk_version


class ServerThread:
    def __init__(self, serving: ServingSettings, surveillance: Any = None) -> None:
        self.loop = idle.new_event_loop()  # the loop ``healthai serve`` runs on
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        settings = Settings(port=0, dev_mode=True, serving=serving)
        self.plugin: ServingPlugin = plugin(settings=settings, surveillance=surveillance)
        self.running: RunningServer = self.run(self._build(settings))
        self.port = self.running.port
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")

    async def _build(self, settings: Settings) -> RunningServer:
        running = build_server(settings, [self.plugin])
        await running.start()
        return running

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
        """Runs a coroutine on the server's loop and waits for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def submit(self, fn: Callable[[], Coroutine[Any, Any, Any]]) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(fn(), self.loop)

    def poll(self) -> None:
        """One repository scan (what the watcher does every reload_poll_s)."""
        self.run(self.plugin.manager.poll_once())

    def close(self) -> None:
        self.channel.close()
        self.run(self.running.stop(grace=1.0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def risk_repo(tmp_path: Path) -> Path:
    """A repository with one risk model (4 features), version 1."""
    root = tmp_path / "models"
    write_risk_version(root, "risk_tiny", 1, np.array([1.0, 0.5, -0.25, 2.0]), bias=-1.0)
    return root


@pytest.fixture
def make_server() -> Iterator[Callable[..., ServerThread]]:
    servers: list[ServerThread] = []

    def make(repo: Path, surveillance: Any = None, **serving: Any) -> ServerThread:
        serving.setdefault("reload_poll_s", 0.0)
        s = ServerThread(ServingSettings(model_repository=repo, **serving), surveillance)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()
