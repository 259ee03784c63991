"""Opening a user's store for training (``--from-store``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from healthai_training.errors import TrainingInputError

if TYPE_CHECKING:
    from healthai.store import ParquetStore


def open_existing_store(uri: str) -> ParquetStore:
    """The store at ``uri``, opened; a local path that is not a directory is an input error (opening
    it would create an empty store, and a mistyped path would train on nothing)."""
    from healthai.store import ParquetStore

    if "://" not in uri and not Path(uri).expanduser().is_dir():
        raise TrainingInputError(f"store {uri}: no such directory", field="from_store")
    return ParquetStore(uri).open()
