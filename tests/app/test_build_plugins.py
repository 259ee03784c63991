"""``build_plugins`` assembles the same plugins whatever was imported before it (importing the
submodule ``healthai.serving.plugin`` used to shadow a package-level ``plugin`` function)."""

from __future__ import annotations

from pathlib import Path

import healthai.serving.plugin  # noqa: F401  (the import that broke build_plugins)
from healthai.app.main import build_plugins
from healthai.app.settings import Settings


def test_build_plugins_after_the_serving_plugin_module_was_imported(tmp_path: Path) -> None:
    settings = Settings(port=0, dev_mode=True, store_uri=str(tmp_path / "store"))
    names = [n for p in build_plugins(settings) for n in p.service_names]
    assert "healthai.v1.Ingest" in names and "healthai.v1.Risk" in names
    assert "inference.GRPCInferenceService" in names
