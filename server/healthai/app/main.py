"""Run the server process: build plugins, serve until SIGTERM/SIGINT, shut down gracefully.

Shutdown order: every service's health -> NOT_SERVING, ``server.stop(grace)`` (no new calls,
in-flight calls drain), plugins stop in reverse order (the Ingest plugin closes its store; every
acknowledged record is already fsynced), exit code 0.

Start-up refusals (a store it cannot write, a port file it cannot write, a damaged store file) raise
``HealthAIError`` before anything is served: ``healthai serve`` prints ``cannot start: ...`` and exits 2.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import os
import signal
from pathlib import Path
from typing import Any

from healthai import observability, security
from healthai.app.server import ServicePlugin, build_server
from healthai.app.settings import Settings
from healthai.errors import InvalidInput
from healthai.ingest.plugin import IngestPlugin

log = logging.getLogger(__name__)


def build_plugins(settings: Settings) -> list[ServicePlugin]:
    """Ingest always; the serving plugin (Risk/Forecast/KServe) when ``settings.serving.enabled``."""
    ingest = IngestPlugin(settings)
    plugins: list[ServicePlugin] = [ingest]
    surveillance: Any = ingest.surveillance
    if settings.stored_counts == "private":  # callers see released (noisy) counts, never exact ones
        from healthai.surveillance.released import ReleasedCounts

        surveillance = ReleasedCounts(ingest.store)
        log.info("stored counts: private releases only (the newest matching release in the store's ledger)")
    if settings.serving.enabled:
        serving = importlib.import_module("healthai.serving.plugin")
        plugins.append(serving.plugin(settings=settings, surveillance=surveillance))
    if settings.scenario.enabled:
        scenario = importlib.import_module("healthai.scenario.plugin")
        plugins.append(scenario.plugin(settings=settings, surveillance=surveillance))
    return plugins


async def run(settings: Settings, *, port_file: Path | None = None,
              stop_event: asyncio.Event | None = None) -> int:
    stop_event = stop_event or asyncio.Event()
    if port_file is not None:  # refused before anything listens, not after "serving" was logged
        _check_port_file(port_file)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_event.set)
    obs = observability.setup(settings.observability)
    try:
        running = build_server(
            settings, build_plugins(settings),
            interceptors=[*obs.interceptors, *security.interceptors(settings.security)],
            add_port=lambda server, address: security.add_port(server, address, settings.security))
        await running.start()
    except BaseException:
        obs.close()
        raise
    # What start-up loaded (code sets, models, graphs) lives as long as the process: moved out of the
    # collector's generations, full collections no longer walk it (one took ~50 ms while serving).
    gc.collect()
    gc.freeze()
    if port_file is not None:
        try:
            _write_port_file(port_file, running.port)
        except InvalidInput:
            await running.stop()
            obs.close()
            raise
    await stop_event.wait()
    log.info("signal received")
    await running.stop()
    obs.close()
    return 0


def _port_file_error(port_file: Path, e: OSError) -> InvalidInput:
    return InvalidInput(f"port_file (--port-file) {str(port_file)!r}: cannot write it ({e.strerror})",
                        field="port_file")


def _check_port_file(port_file: Path) -> None:
    """Whether the port file can be written where asked (its directory exists, is writable)."""
    probe = port_file.with_name(port_file.name + ".tmp")
    try:
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise _port_file_error(port_file, e) from e


def _write_port_file(port_file: Path, port: int) -> None:
    """Atomically: a reader sees no file or the whole port number."""
    tmp = port_file.with_name(port_file.name + ".tmp")
    try:
        tmp.write_text(f"{port}\n")
        os.replace(tmp, port_file)
    except OSError as e:
        raise _port_file_error(port_file, e) from e


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def serve(settings: Settings, *, port_file: Path | None = None) -> int:
    """Blocking entry point of ``healthai serve``; returns the process exit code."""
    configure_logging(settings.log_level)
    # the serving scheduler's dynamic batching needs to know when the loop would go idle
    from healthai.serving.runtime.idle import new_event_loop

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(run(settings, port_file=port_file))
