"""Append-only Parquet dataset, partitioned by record kind and ingest date, written atomically.

Layout under the store root (hive-style, readable by ``pyarrow.dataset`` / Spark / DuckDB)::

    kind=<kind>/ingest_date=<YYYY-MM-DD>/part-<sequence:012d>-<batch_id>.parquet

A commit writes one file per kind. On a local filesystem each file is written to a dot-prefixed
temporary name, fsynced, renamed into place and its directory fsynced — all before ``commit``
returns, so an acknowledged record survives ``kill -9`` or a power cut. Object stores (S3, GCS) get a
direct write (an object appears atomically on close); other pyarrow filesystems write a temporary
name and move it. A crash between two files of one commit can leave part of an unacknowledged
commit on disk; the sender retries and idempotency drops what is already there.

Idempotency: every row carries ``source`` and ``record_key``; a (kind, source, record_key) stored once
is never stored again with the same content, within a commit or across restarts (the key index is
rebuilt from the dataset when the store opens). Sent again with other content it is stored as a new
version, and reads take each key's latest version (:mod:`healthai.store.versions`); rows an earlier
release stored without a digest get theirs from their content when their file is indexed. On a local (or
NFS) filesystem this also holds across processes sharing the directory (replicas of ``healthai serve``
and of the Kafka consumer): commits go through a create-exclusive commit log
(:mod:`healthai.store.commitlog`), and a writer indexes every commit it has not seen before writing.
On S3 (and S3-compatible stores with conditional PUT) the same log is kept with ``If-None-Match: *``
PUTs through boto3 (a runtime requirement), so the guarantee holds there too; without boto3, and on
GCS and other pyarrow filesystems, dedup is per process.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from healthai.errors import FailedPrecondition, InvalidInput
from healthai.store.commitlog import LOG_DIR, Entry, LocalCommitLog, S3CommitLog, write_part
from healthai.store.versions import (
    DIGEST_COLUMN,
    PLACE_COLUMN,
    VersionIndex,
    digests_of,
    lacks_digests,
    latest_rows,
    record_keys,
    stored_digests,
    with_digests,
)

log = logging.getLogger(__name__)

SOURCE_COLUMN = "source"
ID_COLUMN = "record_key"
_PART = re.compile(r"^part-(\d{12})-([0-9a-f]{32})\.parquet$")
_KIND = re.compile(r"^[a-z][a-z0-9_]*$")
_SEP = "\x1f"
# rows to write of one kind, their keys and versions, and whether every key is new (none a version)
_Fresh = tuple[pa.Table, list[str], list[bytes | None], bool]


@dataclass(frozen=True)
class CommitResult:
    batch_id: str
    sequence: int  # 0 when nothing new was written
    stored: dict[str, int] = field(default_factory=dict)  # new rows per kind
    duplicates: int = 0  # rows dropped: (kind, source, record_key) already stored with the same content
    revised: dict[str, list[str]] = field(default_factory=dict)  # kind -> resource ids stored as new versions
    files: list[str] = field(default_factory=list)  # relative to the store root
    skipped: dict[str, pa.Table] = field(default_factory=dict)  # the duplicate rows per kind (not written)
    generalized: dict[str, list[str]] = field(default_factory=dict)  # kind -> resource ids the guard changed
    rewritten: list[str] = field(default_factory=list)  # committed files the guard rewrote (same rows)


class CommitGuard(Protocol):
    """Rewrites rows inside a commit, knowing every committed row of the kinds it watches
    (e.g. :class:`healthai.normalize.birth_guard.BirthDateGuard`)."""

    watch: Mapping[str, tuple[str, ...]]  # kind -> columns the guard must see of every committed row
    read_needs: tuple[str, ...]  # columns ``apply_read`` needs besides those asked for

    def observe(self, kind: str, table: pa.Table, path: str) -> None: ...

    def apply(self, tables: Mapping[str, pa.Table], read: Callable[[str], pa.Table]
              ) -> tuple[dict[str, pa.Table], dict[str, list[str]], dict[str, pa.Table]]: ...

    def apply_read(self, kind: str, table: pa.Table) -> pa.Table: ...


def new_batch_id() -> str:
    return uuid.uuid4().hex


def _open_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    if "://" not in uri:
        return pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())
    try:
        filesystem, root = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as e:
        raise InvalidInput(f"store_uri {uri!r}: {e}", field="store_uri") from e
    return filesystem, root.rstrip("/")


def _check_keys(kind: str, table: pa.Table) -> None:
    for col in (SOURCE_COLUMN, ID_COLUMN):
        if col not in table.column_names:
            raise InvalidInput(f"table lacks the idempotency column {col!r}", field=col)
        if table[col].null_count:
            raise ValueError(f"{kind} rows: {table[col].null_count} null {col!r} value(s); every stored row "
                             "needs a key (normalizer contract)")


def _kind_of(rel: str) -> str:
    """The kind of a part file named relative to the store root (``kind=<kind>/...``)."""
    return rel.split("/", 1)[0].removeprefix("kind=")


def _keys(table: pa.Table) -> list[str]:
    return record_keys(table).to_pylist()


class ParquetStore:
    """Thread-safe; ``open()`` before use (rebuilds the key index), ``close()`` to flush."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.filesystem, self.root = _open_filesystem(uri)
        self._local = self.filesystem.type_name == "local"
        self._direct = self.filesystem.type_name in ("s3", "gcs")
        self._log: LocalCommitLog | S3CommitLog | None = (
            LocalCommitLog(self.root) if self._local else _object_store_log(uri, self.filesystem, self.root))
        self._lock = threading.Lock()
        self._index = VersionIndex()
        self._sequence = 0
        self._open = False
        self._guard: CommitGuard | None = None
        self._undigested = 0  # rows indexed whose digests were computed here (stored before digests)

    @property
    def guard(self) -> CommitGuard | None:
        return self._guard

    def set_guard(self, guard: CommitGuard) -> None:
        """Install the commit guard; an open store shows it every committed row it watches."""
        with self._lock:
            self._guard = guard
            if self._open:
                for kind, path in self._part_files():  # in commit order
                    if kind in guard.watch:
                        guard.observe(kind, self._read_indexed(kind, path, versions=False), self._rel(path))

    def create_exclusive(self, rel: str, body: bytes) -> bool | None:
        """Create the file ``rel`` (under the store root) with ``body`` atomically, only if it does not
        exist: True, or False when it does; None when this store has no exclusive create (no commit log,
        e.g. ``gs://``)."""
        return None if self._log is None else self._log.create(rel, body)

    @property
    def display_uri(self) -> str:
        """The URI without its query, which may hold credentials: for messages and logs."""
        return self.uri.split("?", 1)[0]

    @property
    def sequence(self) -> int:
        """Sequence of the last commit that wrote something (changes whenever the data does)."""
        return self._sequence

    def refresh(self) -> int:
        """Index the commits other processes sharing the store (replicas) made since this one's last
        look, and return the sequence: reads and counts then see their rows, latest versions included."""
        with self._lock:
            if self._open and self._log is not None:
                self._catch_up()
            return self._sequence

    def open(self) -> ParquetStore:
        try:
            return self._open_store()
        except OSError as exc:  # an unreachable object store, a bucket that does not exist, no permission
            raise InvalidInput(f"store_uri {self.display_uri!r}: cannot open the store ({exc})",
                               field="store_uri") from exc

    def _open_store(self) -> ParquetStore:
        with self._lock:
            self.filesystem.create_dir(self.root, recursive=True)
            if isinstance(self._log, S3CommitLog) and not self._log.check_conditional_put():
                raise InvalidInput(f"store_uri {self.uri!r}: the object store ignores or lacks conditional "
                                   "PUT (If-None-Match: *), which replicas need to store each record once",
                                   field="store_uri")
            self._index.clear()
            self._undigested = 0
            rows, listed, highest = 0, set(), 0
            for kind, path in self._part_files():
                name = path.rsplit("/", 1)[-1]
                match = _PART.match(name)
                assert match is not None
                highest = max(highest, int(match.group(1)))
                table = self._index_part(kind, path)
                self._index.add(kind, _keys(table), digests_of(table))
                if self._guard is not None and kind in self._guard.watch:
                    self._guard.observe(kind, table, self._rel(path))
                listed.add(self._rel(path))
                rows += table.num_rows
            # Every logged commit, not only those after the highest file listed: another process may
            # have renamed its files into place while an earlier commit's files were still pending.
            self._sequence = 0
            rows += self._catch_up(skip=listed)
            self._sequence = max(self._sequence, highest)  # stores written before the log existed
            swept = self._log.sweep_orphans() if isinstance(self._log, LocalCommitLog) else 0
            self._open = True
            undigested = self._undigested
        if undigested:
            log.info("store %s: %d row(s) stored by a release before row digests (2026-12-07) indexed with "
                     "digests computed from their content: corrections of them are stored as new versions",
                     self.display_uri, undigested)
        if swept:
            log.info("store %s: removed %d pending file(s) of commits that never completed", self.uri, swept)
        log.info("store %s opened: %d rows indexed, sequence %d", self.uri, rows, self._sequence)
        return self

    def close(self) -> None:
        """Wait for an in-flight commit; every acknowledged commit is already durable."""
        with self._lock:
            self._open = False

    def kinds(self) -> list[str]:
        return sorted({kind for kind, _ in self._part_files()})

    def count(self, kind: str) -> int:
        """Distinct records (keys) stored of ``kind``; a record stored in several versions counts once."""
        return self._index.count(kind)

    def contains(self, kind: str, source: str, source_id: str) -> bool:
        return (kind, f"{source}{_SEP}{source_id}") in self._index

    def superseded(self, kind: str) -> int:
        """Rows of ``kind`` stored as a later version of a record already stored (0: every read of the
        files gives each record once)."""
        return self._index.superseded.get(kind, 0)

    def commit(self, tables: dict[str, pa.Table], *, batch_id: str | None = None,
               now: dt.datetime | None = None) -> CommitResult:
        """Durably append ``tables`` (kind -> rows), skipping rows already stored. Returns after fsync.

        ``batch_id`` (32 hex digits; new if None) names the files; several commits may share one.
        """
        batch_id = batch_id or new_batch_id()
        if not re.fullmatch(r"[0-9a-f]{32}", batch_id):
            raise InvalidInput(f"batch_id {batch_id!r} is not 32 lower-case hex digits", field="batch_id")
        today = (now or dt.datetime.now(dt.UTC)).date().isoformat()
        with self._lock:
            if not self._open:
                raise RuntimeError("store is not open")
            for kind, table in tables.items():  # validate everything before writing anything
                if not _KIND.match(kind):
                    raise InvalidInput(f"record kind {kind!r} is not a valid partition name", field="kind")
                _check_keys(kind, table)
            for attempt in range(1_000_000):  # another writer taking our sequence: catch up, retry
                if self._log is not None:
                    self._catch_up()
                work, generalized, rewrites = (self._guard.apply(tables, self._read_rel)
                                               if self._guard is not None else (tables, {}, {}))
                rewritten_from = {rel: digests_of(t) for rel, t in rewrites.items()}
                rewrites = {rel: with_digests(_kind_of(rel), t) for rel, t in rewrites.items()}
                fresh: dict[str, _Fresh] = {}
                skipped: dict[str, pa.Table] = {}
                revised: dict[str, list[str]] = {}
                for kind, table in work.items():
                    table = with_digests(kind, table)
                    keys = _keys(table)
                    digests = digests_of(table)
                    keep, versions = self._index.split(kind, keys, digests)
                    if versions and "resource_id" in table.column_names:
                        revised[kind] = table["resource_id"].take(versions).to_pylist()
                    if not all(keep):
                        mask = pa.array(keep)
                        skipped[kind] = table.filter(pc.invert(mask))
                        table = table.filter(mask)
                        keys = [k for k, kept in zip(keys, keep, strict=True) if kept]
                        digests = [d for d, kept in zip(digests, keep, strict=True) if kept]
                    if keys:
                        fresh[kind] = (table, keys, digests, not versions and len(keys) == len(keep))
                duplicates = sum(t.num_rows for t in skipped.values())
                if not fresh:
                    return CommitResult(batch_id=batch_id, sequence=0, duplicates=duplicates,
                                        skipped=skipped)
                sequence = self._sequence + 1
                if self._log is None:
                    files = [self._write(kind, today, sequence, batch_id, table)
                             for kind, (table, *_) in fresh.items()]
                    for rel, table in rewrites.items():  # object stores: a PUT replaces atomically
                        write_part(table, f"{self.root}/{rel}", self.filesystem)
                    break
                claimed = self._commit_logged(fresh, today, sequence, batch_id, attempt, rewrites)
                if claimed is not None:
                    files = claimed
                    break
            self._sequence = sequence
            for kind, (table, new_keys, digests, all_new) in fresh.items():
                self._index.add(kind, new_keys, digests, new=all_new)
                if self._guard is not None and kind in self._guard.watch:
                    self._guard.observe(kind, table, next(f for f in files if f.startswith(f"kind={kind}/")))
            for rel, table in rewrites.items():
                self._index.refresh(_kind_of(rel), _keys(table), rewritten_from[rel], digests_of(table))
        if rewrites:
            log.info("commit %d rewrote %d earlier file(s): event dates on a birth date learnt now",
                     sequence, len(rewrites))
        if generalized:  # only rows really written
            written = {k: set(fresh[k][0]["resource_id"].to_pylist()) for k in generalized if k in fresh}
            generalized = {k: [r for r in ids if r in written[k]]
                           for k, ids in generalized.items() if k in fresh}
        return CommitResult(batch_id=batch_id, sequence=sequence, duplicates=duplicates, files=files,
                            stored={kind: t.num_rows for kind, (t, *_) in fresh.items()}, skipped=skipped,
                            revised=revised,
                            generalized={k: ids for k, ids in generalized.items() if ids},
                            rewritten=sorted(rewrites))

    def _commit_logged(self, fresh: dict[str, _Fresh], day: str, sequence: int,
                       batch_id: str, attempt: int, rewrites: dict[str, pa.Table]) -> list[str] | None:
        """Pending files, the exclusive claim of ``sequence``, the renames; None if the claim is lost."""
        assert self._log is not None
        names = []
        for kind, (table, *_) in fresh.items():
            rel_dir = f"kind={kind}/ingest_date={day}"
            pending = f"{rel_dir}/.pending-{batch_id}-{attempt}-{kind}.parquet"
            names.append((pending, f"{rel_dir}/part-{sequence:012d}-{batch_id}.parquet", table))
        for i, (final, table) in enumerate(sorted(rewrites.items())):
            pending = f"{final.rsplit('/', 1)[0]}/.pending-{batch_id}-{attempt}-rw{i}.parquet"
            names.append((pending, final, table))
        self._log.write_pending([(pending, table) for pending, _, table in names])
        files = [(pending, final) for pending, final, _ in names]
        entry = Entry(sequence, batch_id, files[:len(fresh)], files[len(fresh):])
        if not self._log.claim(entry):
            for pending, _ in files:  # someone committed first: their rows may overlap ours
                self._log.discard(pending)
            return None
        # The claim is the durable commit point: a promotion lost in a crash is rolled forward
        # (both names are read), so the promotions need no fsync of their own.
        for pending, final in files:
            self._log.promote(pending, final)
        return [final for _, final in entry.files]

    def _catch_up(self, skip: set[str] | frozenset[str] = frozenset()) -> int:
        """Index the commits other processes logged since our sequence (rolling forward renames)."""
        if self._log is None:
            return 0
        rows = 0
        for sequence in self._log.sequences_after(self._sequence):
            entry = self._log.read(sequence)
            for pending, final in entry.replaces:  # rewrites of committed files: roll forward
                self._index_rewrite(pending, final)
            for pending, final in entry.files:
                if final in skip:  # indexed from the listing already
                    continue
                kind = _kind_of(final)
                table = self._read_keys(kind, pending, final)
                self._index.add(kind, _keys(table), digests_of(table))
                if self._guard is not None and kind in self._guard.watch:
                    self._guard.observe(kind, table, final)
                rows += table.num_rows
                with contextlib.suppress(FileNotFoundError):  # a writer died before its rename
                    self._log.promote(pending, final)
            self._sequence = sequence
        return rows

    def _index_rewrite(self, pending: str, final: str) -> None:
        """Promote another writer's rewrite of a committed file, re-indexing the rows it changed. Once the
        writer has promoted it, the rows before are gone: they are left as indexed (a re-send of such a
        row is then stored once more: an extra row, never a wrong read)."""
        assert self._log is not None
        kind = _kind_of(final)
        try:
            new = self._read_indexed(kind, f"{self.root}/{pending}")  # still pending: final is the old
            old = self._read_indexed(kind, f"{self.root}/{final}")
        except FileNotFoundError:
            return
        with contextlib.suppress(FileNotFoundError):
            self._log.promote(pending, final)
        if _keys(old) == _keys(new):  # the same rows in the same order, as a rewrite keeps them
            self._index.refresh(kind, _keys(old), digests_of(old), digests_of(new))

    def _read_keys(self, kind: str, pending: str, final: str) -> pa.Table:
        for rel in (final, pending, final):  # the writer may rename between our two looks
            try:
                return self._index_part(kind, f"{self.root}/{rel}")
            except FileNotFoundError:
                continue
        raise FailedPrecondition(
            f"store_uri: the commit log ({LOG_DIR}/) names {final!r} (under the store root), which is "
            "missing (so is its pending name): the store was altered, and it does not open without these "
            "committed rows: restore the file from a backup", field="store_uri")

    def _rel(self, path: str) -> str:
        return path[len(self.root):].lstrip("/")

    def _read_rel(self, rel: str) -> pa.Table:
        """A committed file's rows, every column, each with its digests (the guard's rewrites keep them:
        the index replaces a rewritten row's version only where it was the latest)."""
        return stored_digests(_kind_of(rel), pq.read_table(f"{self.root}/{rel}", filesystem=self.filesystem))

    def _index_part(self, kind: str, path: str) -> pa.Table:
        """``_read_indexed`` of a committed file; one that cannot be read (damaged, truncated, not
        readable by this user) is FailedPrecondition naming it and what to do: never skipped silently."""
        try:
            return self._read_indexed(kind, path)
        except FileNotFoundError:
            raise
        except (pa.ArrowException, OSError) as e:
            rel = self._rel(path)
            detail = (str(e).splitlines() or [""])[0].replace(self.root, "<store root>")
            raise FailedPrecondition(
                f"store_uri: {rel!r} (under the store root) cannot be read ({type(e).__name__}: {detail}). "
                "It holds committed rows, not a leftover (a commit's files keep hidden .pending-/.tmp- "
                "names until it is committed; leftovers are never read), and the store does not open "
                "without them: restore the file from a backup", field="store_uri") from e

    def _read_indexed(self, kind: str, path: str, *, versions: bool = True) -> pa.Table:
        """The key and version columns of a part file, plus those the guard watches (when the file has
        them). Two reads, not one open: on S3 a writer may promote (copy, then delete) the object between
        a footer read and a data read, and only a read that fails at its start says FileNotFoundError.
        A file of rows stored before digests existed is read whole, their digests computed from it
        (``versions``: the version columns are wanted)."""
        columns = [SOURCE_COLUMN, ID_COLUMN]
        watched = self._guard.watch.get(kind, ()) if self._guard is not None else ()
        have = set(pq.read_schema(path, filesystem=self.filesystem).names)
        columns += [c for c in (DIGEST_COLUMN, PLACE_COLUMN, *watched) if c in have and c not in columns]
        if not versions or DIGEST_COLUMN in have:
            table = pq.read_table(path, columns=columns, filesystem=self.filesystem)
            if not versions or not lacks_digests(table):
                return table
        content = pq.read_table(path, filesystem=self.filesystem)
        self._undigested += (content[DIGEST_COLUMN].null_count if DIGEST_COLUMN in have
                             else content.num_rows)
        wanted = list(dict.fromkeys([*columns, DIGEST_COLUMN, PLACE_COLUMN]))
        return stored_digests(kind, content).select(wanted)

    def read(self, kind: str, columns: list[str] | None = None) -> pa.Table:
        """The stored records of one kind, each in its latest version (schemas of older files are
        unified); empty table if none.

        With a guard, rows pass through it (e.g. an event date equal to a birth date learnt after
        the event was stored is generalized here)."""
        self.refresh()
        needs = list(self._guard.read_needs) if self._guard is not None else []
        if self.superseded(kind):
            needs += [SOURCE_COLUMN, ID_COLUMN]
        extra = [c for c in dict.fromkeys(needs) if columns is not None and c not in columns]
        wanted = (columns or []) + extra or None
        table = self.read_files(self.files(kind), wanted)
        if self.superseded(kind) and table.num_rows:
            table = latest_rows(table)
        if self._guard is not None:
            table = self._guard.apply_read(kind, table)
        return table.select(columns) if columns is not None and extra else table

    def files(self, kind: str) -> list[str]:
        """Paths (filesystem paths, in commit order) of the committed part files of one kind."""
        return [path for _, path in self._part_files(f"kind={kind}")]

    def read_files(self, paths: list[str], columns: list[str] | None = None,
                   schema: pa.Schema | None = None) -> pa.Table:
        """Rows of the given part files. A requested column that a file lacks (written before the column
        existed) is null in its rows; one no file has gets its type from ``schema`` when given."""
        tables = [self._read_columns(path, columns) for path in paths]
        if not tables:
            return pa.table({c: pa.array([], pa.string()) for c in columns or []})
        table = pa.concat_tables(tables, promote_options="permissive")
        if columns is None:
            return table
        for name in columns:
            if name not in table.column_names:
                typ = schema.field(name).type if schema is not None and name in schema.names else pa.null()
                table = table.append_column(name, pa.nulls(table.num_rows, typ))
        return table.select(columns)

    def _read_columns(self, path: str, columns: list[str] | None) -> pa.Table:
        try:
            return pq.read_table(path, columns=columns, filesystem=self.filesystem)
        except pa.ArrowInvalid:
            if columns is None:
                raise
            have = set(pq.read_schema(path, filesystem=self.filesystem).names)
            if have.issuperset(columns):
                raise  # not a missing column
            return pq.read_table(path, columns=[c for c in columns if c in have], filesystem=self.filesystem)

    def _part_files(self, under: str = "") -> Iterable[tuple[str, str]]:
        """(kind, path) of every committed part file (below ``under``), in sequence order."""
        base = f"{self.root}/{under}" if under else self.root
        selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        found: list[tuple[str, str, str]] = []
        for info in self.filesystem.get_file_info(selector):
            if info.type != pafs.FileType.File or not _PART.match(info.base_name):
                continue
            kind_dir = info.path[len(self.root):].lstrip("/").split("/", 1)[0]
            if kind_dir.startswith("kind="):
                found.append((info.base_name, kind_dir[len("kind="):], info.path))
        return [(kind, path) for _, kind, path in sorted(found)]

    def _write(self, kind: str, day: str, sequence: int, batch_id: str, table: pa.Table) -> str:
        rel_dir = f"kind={kind}/ingest_date={day}"
        name = f"part-{sequence:012d}-{batch_id}.parquet"
        directory = f"{self.root}/{rel_dir}"
        self.filesystem.create_dir(directory, recursive=True)  # not local: those have the log
        if self._direct:
            write_part(table, f"{directory}/{name}", self.filesystem)
        else:
            tmp = f"{directory}/.tmp-{name}"
            write_part(table, tmp, self.filesystem)
            self.filesystem.move(tmp, f"{directory}/{name}")
        return f"{rel_dir}/{name}"


def _object_store_log(uri: str, filesystem: pafs.FileSystem, root: str) -> S3CommitLog | None:
    """The commit log of an S3 store (boto3 installed), else None: de-duplication per process."""
    if filesystem.type_name != "s3":
        return None
    try:
        return S3CommitLog.from_uri(uri, filesystem, root)
    except ImportError:
        log.warning("store %s: boto3 is not installed (requirements-runtime.txt), so replicas sharing this "
                    "store de-duplicate per process only", uri)
        return None
