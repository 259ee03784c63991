"""Publishing a run's export into a served model repository (``--export-to``, ``--new-version``)."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

from healthai_training.common import write_json

logger = logging.getLogger(__name__)


def publish(model_dir: Path, repo: Path | None, *, new_version: bool = False) -> int | None:
    """Copy an exported ``<name>/`` folder into ``repo``: replacing the same versions there, or with
    ``new_version`` as the next version number (staged under a dot name, then renamed, so a serving
    repository never shows a half-written version). Returns the version written last."""
    if repo is None:
        return None
    dest = Path(repo) / model_dir.name
    versions = sorted(
        (p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)
    )
    _check_shared_config(model_dir, dest, replaced=set() if new_version else {p.name for p in versions})
    if not new_version:
        for version in versions:
            shutil.rmtree(dest / version.name, ignore_errors=True)
        shutil.copytree(model_dir, dest, dirs_exist_ok=True)
        written = [int(v.name) for v in versions]
        logger.info("published %s as version %s to %s", model_dir.name, ", ".join(map(str, written)), repo)
        newer = newer_versions(dest, max(written, default=0))
        if newer:
            logger.warning("%s: version %d in %s is newer than the version %d just written and stays the "
                           "one served (the newest is served unless a request pins one): publish with "
                           "--new-version, or remove version(s) %s", model_dir.name, newer[-1], repo,
                           max(written), ", ".join(map(str, newer)))
        return written[-1] if written else None
    dest.mkdir(parents=True, exist_ok=True)
    existing = [int(p.name) for p in dest.iterdir() if p.is_dir() and p.name.isdigit()]
    number = max(existing, default=0) + 1
    staging = dest / f".staging-{number}"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(versions[-1], staging)
    card_path = staging / "model_card.json"
    if card_path.is_file():
        card = json.loads(card_path.read_text())
        write_json(card_path, {**card, "version": number})
    for f in (p for p in model_dir.iterdir() if p.is_file()):  # config.pbtxt
        tmp = dest / f".{f.name}.tmp"
        shutil.copyfile(f, tmp)
        tmp.replace(dest / f.name)
    staging.rename(dest / str(number))
    logger.info("published %s as version %d to %s", model_dir.name, number, repo)
    return number


def newer_versions(dest: Path, version: int) -> list[int]:
    """Version numbers above ``version`` in a model's repository folder, ascending."""
    found = dest.iterdir() if dest.is_dir() else ()
    return sorted(int(p.name) for p in found if p.is_dir() and p.name.isdigit() and int(p.name) > version)


_DIMS = re.compile(r"dims:\s*\[[^\]]*\]")


def _check_shared_config(model_dir: Path, dest: Path, *, replaced: set[str]) -> None:
    """A model's versions share its ``config.pbtxt``: refuse to publish one whose tensor shapes differ
    while other versions of the model stay in the repository (they would no longer load)."""
    old, new = dest / "config.pbtxt", model_dir / "config.pbtxt"
    found = dest.iterdir() if dest.is_dir() else ()
    kept = sorted((p.name for p in found if p.is_dir() and p.name.isdigit() and p.name not in replaced),
                  key=int)
    if not kept or not old.is_file() or not new.is_file():
        return
    before, after = _DIMS.findall(old.read_text()), _DIMS.findall(new.read_text())
    if before != after:
        from healthai_training.errors import TrainingInputError

        raise TrainingInputError(
            f"{dest.name}: this model's tensors ({', '.join(after)}) differ from those of its version(s) "
            f"{', '.join(kept)} in {dest.parent} ({', '.join(before)}); a model's versions share one "
            "config.pbtxt, so they would no longer load. Publish it under another --model-name (the trained "
            f"export is kept in {model_dir})", field="model_name")
