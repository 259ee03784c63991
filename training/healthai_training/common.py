"""Shared helpers for training runs: seeds, devices, data root, run folders, code version, JSON output."""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parent.parent
DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")  # the devices training knows
DATA_ROOT = Path("../shared/data")  # the built-in data sets, beside the checkout


def default_data_root() -> Path:
    """``../shared/data`` from the working folder when it is there (run from the repository root), else
    beside the checkout that holds this package or the virtual environment running it (run from any
    folder); else ``../shared/data`` as it is, which the loaders then refuse naming ``--data-root``."""
    if DATA_ROOT.is_dir():
        return DATA_ROOT
    for anchor in (Path(__file__).resolve(), Path(sys.prefix).resolve()):
        for folder in anchor.parents:
            shared = folder.parent / "shared" / "data"
            if (folder / "training" / "healthai_training").is_dir() and shared.is_dir():
                return shared
    return DATA_ROOT


def data_file(data_root: Path | str, relative: str | Path) -> Path:
    """``data_root / relative`` of a built-in data set, or a TrainingInputError naming ``--data-root``
    and the path tried (never a download)."""
    path = Path(data_root) / relative
    if not path.exists():
        from healthai_training.errors import TrainingInputError

        raise TrainingInputError(
            f"--data-root {data_root}: {path} not found (the built-in data sets live in ../shared/data "
            "beside the repository; give --data-root FOLDER)",
            field="data_root",
        )
    return path


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA when present, else CPU; ``cuda`` without a GPU is an error, and so is any device
    but ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    if not DEVICE.fullmatch(device):
        from healthai_training.errors import TrainingInputError

        raise TrainingInputError(f"device={device!r}: choose auto, cpu, cuda or cuda:N", field="device")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        from healthai_training.errors import TrainingInputError

        raise TrainingInputError(f"device={device!r} requested but no CUDA GPU is available", field="device")
    return torch.device(device)


def code_version() -> str:
    """The git commit of the checkout (``+dirty`` when the tree has changes), or ``unknown``."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def make_run_dir(root: Path | str, name: str) -> Path:
    """A fresh ``<root>/<name>-<UTC timestamp>`` folder."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
    path = Path(root) / f"{name}-{stamp}"
    path.mkdir(parents=True, exist_ok=False)
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(_jsonable(payload), indent=2, sort_keys=False) + "\n")
