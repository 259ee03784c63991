"""A model repository in Triton's layout: ``<root>/<name>/config.pbtxt`` + ``<root>/<name>/<version>/``.

Only reads the folder: which models exist, which versions each has, their parsed configs and a
fingerprint per version so the watcher can tell a changed version from an unchanged one.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

log = logging.getLogger(__name__)

CONFIG_FILE = "config.pbtxt"
MODEL_CARD = "model_card.json"


class RepositoryError(ValueError):
    """A model folder or version that cannot be used (bad config, missing files)."""


@dataclass(frozen=True)
class VersionDir:
    """One numbered version folder of a model."""

    model: str
    version: int
    path: Path
    fingerprint: tuple[tuple[str, int, int], ...]

    def card(self) -> dict[str, Any]:
        """The version's ``model_card.json`` ({} when absent)."""
        path = self.path / MODEL_CARD
        if not path.is_file():
            return {}
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise RepositoryError(f"{path}: model card is not valid JSON ({exc})") from exc


def read_config(model_dir: Path) -> model_config_pb2.ModelConfig:
    """Parses ``config.pbtxt`` into Triton's ModelConfig; the name defaults to the folder's."""
    path = model_dir / CONFIG_FILE
    config = model_config_pb2.ModelConfig()
    if path.is_file():
        try:
            text_format.Parse(path.read_text(), config)
        except text_format.ParseError as exc:
            raise RepositoryError(f"{path}: cannot parse config.pbtxt ({exc})") from exc
    if not config.name:
        config.name = model_dir.name
    if config.name != model_dir.name:
        raise RepositoryError(f"{path}: name {config.name!r} differs from its folder {model_dir.name!r}")
    if config.platform and config.platform != "onnxruntime_onnx":
        raise RepositoryError(f"{path}: platform {config.platform!r} is not served (only onnxruntime_onnx)")
    if config.backend and config.backend not in ("onnxruntime", "onnx"):
        raise RepositoryError(f"{path}: backend {config.backend!r} is not served (only onnxruntime)")
    return config


def _fingerprint(*paths: Path) -> tuple[tuple[str, int, int], ...]:
    """(relative name, size, mtime_ns) of every file under the given folders/files."""
    out: list[tuple[str, int, int]] = []
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            try:
                st = f.stat()
            except FileNotFoundError:  # removed while scanning: the next scan sees the new state
                continue
            out.append((str(f), st.st_size, st.st_mtime_ns))
    return tuple(out)


def config_fingerprint(model_dir: Path) -> tuple[tuple[str, int, int], ...]:
    """The fingerprint of a model's config.pbtxt (() when it has none)."""
    config = model_dir / CONFIG_FILE
    return _fingerprint(config) if config.is_file() else ()


def scan_versions(model_dir: Path) -> dict[int, VersionDir]:
    """Every numbered sub-folder of a model folder (Triton's layout; other names are ignored)."""
    versions: dict[int, VersionDir] = {}
    config = model_dir / CONFIG_FILE
    for child in model_dir.iterdir():
        if child.is_dir() and child.name.isdigit() and int(child.name) > 0:
            fp = _fingerprint(child, config) if config.is_file() else _fingerprint(child)
            versions[int(child.name)] = VersionDir(model_dir.name, int(child.name), child, fp)
    return versions


def scan_models(root: Path) -> dict[str, Path]:
    """Model name -> folder, for every sub-folder holding a config.pbtxt or a numbered version; {} when
    ``root`` is not a directory (the model manager refuses to start then, and warns once if it goes)."""
    if not root.is_dir():
        return {}
    models = {}
    for child in sorted(root.iterdir()):
        if not child.is_dir() or child.name.startswith("."):
            continue
        if (child / CONFIG_FILE).is_file() or any(c.name.isdigit() for c in child.iterdir()):
            models[child.name] = child
    return models
