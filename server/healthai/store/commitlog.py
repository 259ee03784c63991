"""The store's commit log: one create-exclusive entry per commit sequence, shared by every process.

``_commits/<sequence:012d>.json`` names the part files of that commit. A writer (1) catches up on the
entries it has not read, indexing their rows' keys, (2) drops the rows already stored, (3) writes its
part files under hidden ``.pending-`` names (durably), (4) claims the next sequence by creating its
entry exclusively, and (5) promotes the pending files to their final names. Losing the claim to another
writer means someone committed first: back to (1), so a row is never stored by two writers. Entries
are written before anything is acknowledged and files before their entry, so a reader that sees an
entry finds its files (pending or promoted); a crash between (4) and (5) is rolled forward by the next
writer or ``open``.

Two backends, one interface (``sequences_after``, ``read``, ``claim``, ``write_pending``,
``promote``, ``discard``):

- :class:`LocalCommitLog` — a local or NFS directory: exclusive create is ``link(2)`` of a fully
  written temporary file (atomic, content included); promote is ``rename(2)``; files and directories
  are fsynced before the claim.
- :class:`S3CommitLog` — S3 or an S3-compatible store through boto3: exclusive create is a PUT with
  ``If-None-Match: *`` (AWS S3 since August 2024; MinIO; tested here against moto's S3 server); S3 is
  strongly consistent (read-after-write and LIST), and an object is durable when its PUT returns;
  promote is a server-side copy then delete of the pending object. ``open`` probes that the server
  honours the condition (some S3-compatible servers ignore it and overwrite) and refuses the store
  otherwise, rather than double-store.

GCS has the same primitive (``ifGenerationMatch=0``) but no backend here: no GCS server can be run
offline to test one, so on ``gs://`` stores de-duplication stays per process (see ``ParquetStore``).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

LOG_DIR = "_commits"
ORPHAN_AGE_S = 3600.0  # a pending file this old belongs to no commit in flight
# Columns unique per row by construction (the record key, the resource pseudonym, the content digest): a
# dictionary of them is built only to be abandoned for plain encoding; skipping it writes faster and smaller.
_NO_DICTIONARY = frozenset({"resource_id", "record_key", "row_digest"})


def write_part(table: pa.Table, where: Any, filesystem: pafs.FileSystem | None = None) -> None:
    """Write one part file (Parquet, snappy) to a path or an open file."""
    pq.write_table(table, where, filesystem=filesystem,
                   use_dictionary=[c for c in table.column_names if c not in _NO_DICTIONARY])


@dataclass(frozen=True)
class Entry:
    sequence: int
    batch_id: str
    files: list[tuple[str, str]]  # (pending, final) paths relative to the store root
    # (pending, final) rewrites of already committed files: same rows and keys, some values changed
    # (the birth-date guard); promoted over the final file like a new one
    replaces: list[tuple[str, str]] = field(default_factory=list)


def _body(entry: Entry) -> bytes:
    doc: dict = {"batch_id": entry.batch_id, "files": [{"pending": p, "final": f} for p, f in entry.files]}
    if entry.replaces:
        doc["replaces"] = [{"pending": p, "final": f} for p, f in entry.replaces]
    return json.dumps(doc).encode()


def _entry(sequence: int, raw: bytes) -> Entry:
    doc = json.loads(raw)
    return Entry(sequence, doc["batch_id"], [(f["pending"], f["final"]) for f in doc["files"]],
                 [(f["pending"], f["final"]) for f in doc.get("replaces", ())])


def _sequence_of(name: str) -> int | None:
    stem, dot, ext = name.partition(".")
    return int(stem) if ext == "json" and dot and stem.isdigit() else None


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalCommitLog:
    def __init__(self, root: str) -> None:
        self.root = Path(root)
        self.dir = self.root / LOG_DIR

    def sequences_after(self, sequence: int) -> list[int]:
        if sequence > 0:  # entries are dense (a writer claims the number after the last it saw):
            out: list[int] = []  # probe, rather than list a directory that grows with every commit
            while (self.dir / f"{sequence + len(out) + 1:012d}.json").exists():
                out.append(sequence + len(out) + 1)
            return out
        if not self.dir.is_dir():
            return []
        return sorted(s for s in map(_sequence_of, os.listdir(self.dir)) if s is not None and s > sequence)

    def read(self, sequence: int) -> Entry:
        return _entry(sequence, (self.dir / f"{sequence:012d}.json").read_bytes())

    def claim(self, entry: Entry) -> bool:
        """Create the entry of ``entry.sequence`` exclusively (content included); False if taken."""
        return self.create(f"{LOG_DIR}/{entry.sequence:012d}.json", _body(entry))

    def create(self, rel: str, body: bytes) -> bool:
        """Create ``rel`` (under the store root) with ``body``, atomically and only if it does not exist
        (False then); durable when it returns."""
        path = self.root / rel
        if not path.parent.is_dir():
            path.parent.mkdir(parents=True, exist_ok=True)
            fsync_dir(path.parent.parent)
        tmp = path.parent / f".tmp-{uuid.uuid4().hex}"
        try:
            with open(tmp, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:  # also when the write failed (a full disk): no temporary file is left behind
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        fsync_dir(path.parent)
        return True

    def write_pending(self, names: list[tuple[str, pa.Table]]) -> None:
        """Write and fsync each file, then fsync their directories: durable before any entry names them.
        On an error (a full disk) the files written so far are removed before it propagates: no entry
        names them, and a full disk is not filled further by each retry."""
        dirs = set()
        written: list[Path] = []
        try:
            for rel, table in names:
                path = self.root / rel
                created = [p for p in (path.parent.parent, path.parent) if not p.exists()]
                path.parent.mkdir(parents=True, exist_ok=True)
                for p in created:
                    fsync_dir(p.parent)
                written.append(path)
                with open(path, "wb") as f:
                    write_part(table, f)
                    f.flush()
                    os.fsync(f.fileno())
                dirs.add(path.parent)
            for d in dirs:
                fsync_dir(d)
        except BaseException:
            for path in written:
                with contextlib.suppress(OSError):
                    path.unlink()
            raise

    def promote(self, pending: str, final: str) -> None:
        """Rename pending to final; done already (by another process rolling forward) is fine.
        The claim is the durable commit point: a rename lost in a power cut is rolled forward."""
        try:
            os.replace(self.root / pending, self.root / final)
        except FileNotFoundError:
            if not (self.root / final).exists():
                raise

    def discard(self, pending: str) -> None:
        (self.root / pending).unlink(missing_ok=True)

    def sweep_orphans(self, older_than_s: float = ORPHAN_AGE_S) -> int:
        """Delete pending files no entry will ever name: a writer that died before its claim leaves them.
        Call after a full catch-up (every claimed entry's files are promoted by then); only files older
        than ``older_than_s`` go, so another writer's commit in flight (seconds) is never touched."""
        cutoff = time.time() - older_than_s
        removed = 0
        for path in self.root.glob("kind=*/*/.pending-*"):
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
        return removed


class S3CommitLog:
    """The log on an S3 bucket prefix; part files through the store's pyarrow filesystem."""

    def __init__(self, client: Any, bucket: str, prefix: str, filesystem: pafs.FileSystem, root: str) -> None:
        self.client, self.bucket, self.fs, self.root = client, bucket, filesystem, root
        self.prefix = f"{prefix}/" if prefix else ""
        self.dir = f"{self.prefix}{LOG_DIR}/"

    @classmethod
    def from_uri(cls, uri: str, filesystem: pafs.FileSystem, root: str) -> S3CommitLog:
        """boto3 client for an ``s3://bucket/prefix?endpoint_override=host:port&scheme=http&region=r``
        URI (pyarrow's own query parameters); credentials from the usual AWS environment."""
        import boto3  # requirements-runtime.txt; imported only for s3:// stores

        parsed = urllib.parse.urlparse(uri)
        query = dict(urllib.parse.parse_qsl(parsed.query))
        endpoint = query.get("endpoint_override")
        if endpoint and "://" not in endpoint:
            endpoint = f"{query.get('scheme', 'https')}://{endpoint}"
        client = boto3.client("s3", endpoint_url=endpoint, region_name=query.get("region"))
        return cls(client, parsed.netloc, parsed.path.strip("/"), filesystem, root)

    def sequences_after(self, sequence: int) -> list[int]:
        out: list[int] = []
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.dir, StartAfter=f"{self.dir}{sequence:012d}.json")
        for page in pages:
            for obj in page.get("Contents", ()):
                s = _sequence_of(obj["Key"][len(self.dir):])
                if s is not None and s > sequence:
                    out.append(s)
        return sorted(out)

    def read(self, sequence: int) -> Entry:
        obj = self.client.get_object(Bucket=self.bucket, Key=f"{self.dir}{sequence:012d}.json")
        return _entry(sequence, obj["Body"].read())

    def claim(self, entry: Entry) -> bool:
        return self.create(f"{LOG_DIR}/{entry.sequence:012d}.json", _body(entry))

    def create(self, rel: str, body: bytes) -> bool:
        """PUT ``rel`` (under the store prefix) with ``If-None-Match: *``: False if it exists."""
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=f"{self.prefix}{rel}",
                                   Body=body, IfNoneMatch="*", ContentType="application/json")
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            # 412: the entry exists; 409: a concurrent conditional PUT of the same key (one of them wins)
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or \
                    e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (409, 412):
                return False
            if code == "NotImplemented":
                raise RuntimeError("the object store does not support conditional PUT (If-None-Match); "
                                   "replicas cannot share this store exactly once") from e
            raise
        return True

    def check_conditional_put(self) -> bool:
        """Whether the server honours ``If-None-Match: *`` (some S3-compatible servers ignore it and
        overwrite): a probe object created twice must be refused the second time."""
        from botocore.exceptions import ClientError

        key = f"{self.dir}.probe-{uuid.uuid4().hex}"
        try:
            for _ in range(2):
                self.client.put_object(Bucket=self.bucket, Key=key, Body=b"", IfNoneMatch="*")
        except ClientError as e:
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status not in (412, 501):
                raise
            return status == 412
        finally:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        return False

    def write_pending(self, names: list[tuple[str, pa.Table]]) -> None:
        for rel, table in names:  # an object is durable and visible when its PUT (close) returns
            write_part(table, f"{self.root}/{rel}", self.fs)

    def promote(self, pending: str, final: str) -> None:
        from botocore.exceptions import ClientError

        src, dst = f"{self.prefix}{pending}", f"{self.prefix}{final}"
        try:
            self.client.copy_object(Bucket=self.bucket, Key=dst,
                                    CopySource={"Bucket": self.bucket, "Key": src})
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404"):
                raise
            if self.fs.get_file_info(f"{self.root}/{final}").type != pafs.FileType.File:
                raise FileNotFoundError(final) from e
            return  # promoted already by another process
        self.client.delete_object(Bucket=self.bucket, Key=src)

    def discard(self, pending: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=f"{self.prefix}{pending}")
