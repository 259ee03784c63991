"""One pseudonym key per store: a store written under one key refuses writers holding another.

Pseudonyms are keyed hashes, so the same patient sent again under a new key gets new pseudonyms: the
store's idempotency cannot see the re-send, every record is stored twice and counted twice. The store
therefore keeps a check value of its key, ``HMAC-SHA-256(key, "urn:healthai:key-check|1")`` (a hash of a
constant: it reveals no patient data and not the key), written by its first writer. A writer with another
key stops at start-up. Changing the key means a new store: re-ingest into it.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import uuid
from pathlib import Path

import pyarrow.fs as pafs

from healthai.errors import InvalidInput
from healthai.normalize.identity import Pseudonymizer
from healthai.store import ParquetStore
from healthai.store.commitlog import LOG_DIR

log = logging.getLogger(__name__)

KEY_CHECK_FILE = "_healthai/pseudonym-key-check.json"
KEY_SETTING = "pseudonym_key_file (--pseudonym-key-file, HEALTHAI_PSEUDONYM_KEY)"


def key_check(pseudonymizer: Pseudonymizer) -> str:
    return pseudonymizer.pseudonym("urn:healthai:key-check", "1")


def check_store_writable(store: ParquetStore) -> None:
    """A writer's start-up check of a local store: a file can be created (and removed) in its root and in
    its commit log. InvalidInput naming ``store_uri`` and the OS's reason otherwise (a read-only
    directory or mount, a full disk), rather than a server that starts and then fails every ingest."""
    if store.filesystem.type_name != "local":  # object stores: S3's log probes its conditional PUT
        return
    root = Path(store.root)  # created by ``open``; the log's directory by its first commit
    for directory in (d for d in (root, root / LOG_DIR) if d.is_dir()):
        probe = directory / f".probe-{uuid.uuid4().hex}"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, b"probe")
                os.fsync(fd)
            finally:
                os.close(fd)
                probe.unlink(missing_ok=True)
        except OSError as e:
            name = errno.errorcode.get(e.errno or 0, type(e).__name__)
            raise InvalidInput(
                f"store_uri {store.display_uri!r}: the store cannot be written ({name}: {e.strerror or e} "
                f"in {str(directory)!r}); every ingested batch is written there: give this user write "
                "access to it (or free space)", field="store_uri") from e


def check_store_key(store: ParquetStore, pseudonymizer: Pseudonymizer, *, record: bool = True) -> None:
    """Check that the open store can be written (``check_store_writable``), then record this key's check
    in it if it has none (unless not ``record``: a dev server's random key, meant to change);
    InvalidInput if the store holds another key's."""
    check_store_writable(store)
    mine = key_check(pseudonymizer)
    found = _read(store)
    if found is None and not record:
        return
    if found is None:
        body = json.dumps({"key_check": mine, "of": "HMAC-SHA-256(key, 'urn:healthai:key-check|1')"}).encode()
        created = store.create_exclusive(KEY_CHECK_FILE, body)
        if created is None:  # no exclusive create on this filesystem: a plain write
            store.filesystem.create_dir(f"{store.root}/_healthai", recursive=True)
            with store.filesystem.open_output_stream(f"{store.root}/{KEY_CHECK_FILE}") as f:
                f.write(body)
        elif not created:  # another writer recorded its key first
            found = _read(store)
        if found is None:
            if store.sequence:
                log.warning("store %r holds data written before it recorded its pseudonym key; this key is "
                            "recorded now (data written under another key would not deduplicate)",
                            store.display_uri)
            return
    if found != mine:
        raise InvalidInput(
            f"the store {store.display_uri!r} was written under another pseudonym key than {KEY_SETTING}: "
            "the same patients would get new pseudonyms and every re-sent record would be stored and "
            "counted twice. Start with the key it was written under, or use a new store (a new key means "
            "re-ingesting into a new store)" + ("" if record else "; --dev without a key makes a random one"),
            field="pseudonym_key_file")


def _read(store: ParquetStore) -> str | None:
    path = f"{store.root}/{KEY_CHECK_FILE}"
    try:
        with store.filesystem.open_input_stream(path) as f:
            return str(json.loads(f.read())["key_check"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        if store.filesystem.get_file_info(path).type == pafs.FileType.NotFound:
            return None
        raise InvalidInput(f"the store's {KEY_CHECK_FILE} is unreadable ({type(e).__name__}): restore it or "
                           "remove it to record the current key", field="store_uri") from None
