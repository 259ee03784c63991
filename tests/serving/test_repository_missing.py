"""A model repository folder that does not exist refuses start-up naming the setting (it used to start,
report ready and serve nothing, warning every scan); an existing empty one starts as before. A folder
that disappears later is warned about once, and a config.pbtxt that cannot be parsed is logged once
per content, not on every scan."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton

from healthai.app.server import build_server
from healthai.app.settings import Settings
from healthai.errors import InvalidInput
from healthai.serving.plugin import plugin

from .tiny_models import write_risk_version

MANAGER = "healthai.serving.runtime.manager"


def test_missing_repository_refuses_start_naming_the_setting(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_repo"

    async def start() -> None:
        settings = Settings(port=0, dev_mode=True, serving={"model_repository": missing, "reload_poll_s": 0})
        running = build_server(settings, [plugin(settings=settings)])
        await running.start()  # stops what it started, then raises
        await running.stop(0)

    with pytest.raises(InvalidInput, match=r"serving\.model_repository") as refused:
        asyncio.run(start())
    assert refused.value.field == "serving.model_repository"
    assert f"{missing} does not exist" in refused.value.message

    a_file = tmp_path / "models.txt"
    a_file.write_text("not a folder")
    done = subprocess.run(
        [sys.executable, "-m", "healthai.app", "serve", "--dev", "--port", "0", "--store-uri",
         str(tmp_path / "store"), "--model-repository", str(a_file)],
        capture_output=True, text=True, timeout=60, check=False, env={**os.environ})
    assert done.returncode == 2, done.stderr
    setting = "serving.model_repository (--model-repository, HEALTHAI_SERVING__MODEL_REPOSITORY)"
    assert f"cannot start: {setting}: {a_file} is not a directory" in done.stderr
    assert "Traceback" not in done.stderr


def test_empty_repository_starts_ready_and_loads_what_appears(tmp_path: Path, make_server) -> None:
    repo = tmp_path / "models"
    repo.mkdir()
    server = make_server(repo)
    stub = triton.service_pb2_grpc.GRPCInferenceServiceStub(server.channel)
    assert stub.ServerReady(triton.service_pb2.ServerReadyRequest(), timeout=5).ready
    assert server.plugin.manager.model_names() == []
    write_risk_version(repo, "risk_tiny", 1, np.array([1.0, 0.5, -0.25, 2.0]))
    server.poll()
    assert server.plugin.manager.model_names() == ["risk_tiny"]


def test_repository_that_disappears_is_warned_about_once(tmp_path: Path, make_server, caplog) -> None:
    repo = tmp_path / "models"
    repo.mkdir()
    server = make_server(repo)
    moved = tmp_path / "elsewhere"
    repo.rename(moved)
    with caplog.at_level(logging.INFO, logger=MANAGER):
        for _ in range(3):
            server.poll()
        moved.rename(repo)
        server.poll()
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert [m for level, m in messages if level == "WARNING"] == [
        f"model repository {repo} does not exist (any more); no models are served until it is back"]
    assert [m for level, m in messages if level == "INFO"] == [f"model repository {repo} is back"]


def test_unparsable_config_is_logged_once_per_content(risk_repo: Path, make_server, caplog) -> None:
    server = make_server(risk_repo)
    config = risk_repo / "risk_tiny" / "config.pbtxt"
    good = config.read_text()
    with caplog.at_level(logging.ERROR, logger=MANAGER):
        config.write_text(good + "garbage {\n")
        for _ in range(4):
            server.poll()
        refusals = [r for r in caplog.records if "risk_tiny version (all) REFUSED" in r.getMessage()]
        assert len(refusals) == 1, [r.getMessage() for r in caplog.records]
        assert "still serving version(s) [1]" in refusals[0].getMessage()
        config.write_text(good + "garbage { again\n")  # another content: logged again
        server.poll()
        server.poll()
    refusals = [r for r in caplog.records if "risk_tiny version (all) REFUSED" in r.getMessage()]
    assert len(refusals) == 2
    config.write_text(good)
    server.poll()
    assert all(e.state == "READY" for e in server.plugin.manager.index())
