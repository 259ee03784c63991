"""One pseudonym key per store: a store written under one key refuses writers holding another.

Pseudonyms are keyed hashes, so the same patient sent again under a new key gets new pseudonyms: the
store's idempotency cannot see the re-send, every record is stored twice and counted twice. The store
therefore keeps a check value of its key, ``HMAC-SHA-256(key, "urn:healthai:key-check|1")`` (a hash of a
constant: it reveals no patient data and not the key), written by its first writer. A writer with another
key stops at start-up. Changing the key means a new store: re-ingest into it.
"""

from __future__ import annotations

import json
import logging

import pyarrow.fs as pafs

from healthai.errors import InvalidInput
from healthai.normalize.identity import Pseudonymizer
from healthai.store import ParquetStore

log = logging.getLogger(__name__)

KEY_CHECK_FILE = "_healthai/pseudonym-key-check.json"
KEY_SETTING = "pseudonym_key_file (--pseudonym-key-file, HEALTHAI_PSEUDONYM_KEY)"


def key_check(pseudonymizer: Pseudonymizer) -> str:
    return pseudonymizer.pseudonym("urn:healthai:key-check", "1")


def check_store_key(store: ParquetStore, pseudonymizer: Pseudonymizer, *, record: bool = True) -> None:
    """Record this key's check in an open store that has none (unless not ``record``: a dev server's
    random key, meant to change); InvalidInput if the store holds another key's."""
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
