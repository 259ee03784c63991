"""The store's commit log: one create-exclusive entry per commit sequence, shared by every process.

``_commits/<sequence:012d>.json`` names the part files of that commit. A writer (1) catches up on the
entries it has not read, indexing their rows' keys, (2) drops the rows already stored, (3) writes its
part files under hidden ``.pending-`` names (fsynced), (4) claims the next sequence by creating its
entry exclusively, and (5) renames the pending files into place. Losing the claim to another writer
means someone committed first: back to (1), so a row is never stored by two writers. Entries are
written before anything is acknowledged and files before their entry, so a reader that sees an entry
finds its files (pending or renamed); a crash between (4) and (5) is rolled forward by the next
writer or ``open``.

Exclusive create is ``link(2)`` of a fully written temporary file (atomic, content included) on a
local or NFS filesystem. Object stores have the same primitive (S3 and MinIO: PUT with
``If-None-Match: *``; GCS: ``ifGenerationMatch=0``) but pyarrow's filesystems do not expose it, so
there the log is not used (see ``ParquetStore``): dedup across replicas then holds per process only.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

LOG_DIR = "_commits"


@dataclass(frozen=True)
class Entry:
    sequence: int
    batch_id: str
    files: list[tuple[str, str]]  # (pending, final) paths relative to the store root


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalCommitLog:
    def __init__(self, root: str) -> None:
        self.dir = Path(root) / LOG_DIR

    def sequences_after(self, sequence: int) -> list[int]:
        if not self.dir.is_dir():
            return []
        out = []
        for name in os.listdir(self.dir):
            stem, dot, ext = name.partition(".")
            if ext == "json" and dot and stem.isdigit() and int(stem) > sequence:
                out.append(int(stem))
        return sorted(out)

    def read(self, sequence: int) -> Entry:
        doc = json.loads((self.dir / f"{sequence:012d}.json").read_text())
        return Entry(sequence, doc["batch_id"], [(f["pending"], f["final"]) for f in doc["files"]])

    def claim(self, entry: Entry) -> bool:
        """Create the entry of ``entry.sequence`` exclusively (content included); False if taken."""
        if not self.dir.is_dir():
            self.dir.mkdir(parents=True, exist_ok=True)
            _fsync_dir(self.dir.parent)
        body = {"batch_id": entry.batch_id,
                "files": [{"pending": p, "final": f} for p, f in entry.files]}
        tmp = self.dir / f".tmp-{uuid.uuid4().hex}"
        with open(tmp, "w") as f:
            json.dump(body, f)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, self.dir / f"{entry.sequence:012d}.json")
        except FileExistsError:
            return False
        finally:
            tmp.unlink()
        _fsync_dir(self.dir)
        return True
