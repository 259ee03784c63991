"""Row versions: a record re-sent with other content replaces the one stored before.

Every stored row carries ``row_digest``, a 64-bit hash of its content. A row whose (kind, source,
record_key) is already stored is a duplicate when its digest equals the latest stored version's, and a
new version otherwise: it is written, and from then on every read takes the latest version of each key
(commit order; row order within a commit). So a Condition re-sent as ``entered-in-error``, or an
Observation whose value was corrected, counts as sent last; re-sending the same content stores nothing.

The digest leaves out the key itself (and ``resource_id``, which the key names). On every kind but
patient, ``region`` and ``county`` get a digest of their own (``row_place_digest``; 0 when both are
null): a FHIR Condition's place comes from the Patient sent in the same payload, so a row without one
is the same record as a stored row that has one (a Condition sent in a bundle, then alone in a bulk
export), while a row with another place (a flat record's corrected ``state``) is a new version. Rows
stored before digests existed (an earlier release's files: no ``row_digest`` column, or a null one) get
theirs computed from their stored content when the store indexes their file (:func:`stored_digests`),
so they are corrected like any other; a row that this release normalizes differently is stored once
more, as its new version, when it is re-sent.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

DIGEST_COLUMN = "row_digest"
PLACE_COLUMN = "row_place_digest"
KEY_COLUMNS = ("source", "record_key")
_CONTEXT = ("region", "county")  # taken from the payload's Patient on every kind but patient
_SAME_AS_KEY = ("resource_id",)  # the record key names the resource: hashing it adds nothing
_SEP = "\x1f"
_SEED, _PRIME = np.uint64(0xCBF29CE484222325), np.uint64(0x100000001B3)
_NO_PLACE = bytes(8)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_DICTIONARY_FROM = 2048  # rows: below, encoding a dictionary costs more than it saves


def row_digests(kind: str, table: pa.Table) -> pa.Array:
    """int64 content digests of ``table``'s rows (see the module docstring): per column, a hash of the
    value (pandas' SipHash for text, a 64-bit mix of the bits for numbers and times) salted with the
    column's name, folded in in name order. A null leaves the digest as it is, so a column that a row
    lacks (added to the schema after the row was stored) and a null one are the same content."""
    context = () if kind == "patient" else _CONTEXT
    skip = {*KEY_COLUMNS, *_SAME_AS_KEY, DIGEST_COLUMN, PLACE_COLUMN, *context}
    return _fold(table, sorted(c for c in table.column_names if c not in skip), _SEED)


def place_digests(kind: str, table: pa.Table) -> pa.Array:
    """int64 digests of the rows' ``region`` and ``county`` (0 where both are null; 0 on patients, whose
    place is in :func:`row_digests`)."""
    if kind == "patient":
        return pa.array(np.zeros(table.num_rows, np.int64))
    return _fold(table, [c for c in _CONTEXT if c in table.column_names], np.uint64(0))


def _fold(table: pa.Table, columns: list[str], seed: np.uint64) -> pa.Array:
    digest = np.full(table.num_rows, seed, np.uint64)
    with np.errstate(over="ignore"):
        for name in columns:
            col = table[name]
            if col.null_count == len(col):
                continue
            folded = (digest ^ (_column_hash(col) + _salt(name))) * _PRIME
            digest = folded if col.null_count == 0 else np.where(
                pc.is_valid(col).to_numpy(zero_copy_only=False), folded, digest)
    return pa.array(digest.view(np.int64))


@functools.cache
def _salt(name: str) -> np.uint64:
    return np.uint64(int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little"))


def _column_hash(col: pa.ChunkedArray) -> np.ndarray:
    """A uint64 hash of each value (anything at null positions)."""
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):  # identifier pseudonyms
        col = pc.binary_join(pc.cast(col, pa.list_(pa.string())), _SEP)
    if pa.types.is_large_string(col.type):
        col = pc.cast(col, pa.string())
    if pa.types.is_string(col.type) and len(col) < _DICTIONARY_FROM:
        values = (col if col.null_count == 0 else pc.fill_null(col, "")).to_numpy(zero_copy_only=False)
        return pd.util.hash_array(values.astype(object, copy=False), categorize=False)
    if pa.types.is_string(col.type):  # a long column: hash each distinct text once (most hold few)
        col = pc.dictionary_encode(col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col)
    if pa.types.is_dictionary(col.type):
        words = pc.cast(col.dictionary, pa.string()).to_numpy(zero_copy_only=False).astype(object, copy=False)
        hashed = pd.util.hash_array(words, categorize=False)
        indices = col.indices if col.null_count == 0 else pc.fill_null(col.indices, 0)
        return hashed[indices.to_numpy(zero_copy_only=False)] if len(words) else np.zeros(len(col), np.uint64)
    if pa.types.is_timestamp(col.type):
        col = pc.cast(col, pa.int64())
    elif pa.types.is_date(col.type):
        col = pc.cast(pc.cast(col, pa.date32()), pa.int32())
    if not pa.types.is_float64(col.type):
        col = pc.cast(col, pa.float64())
    bits = (col if col.null_count == 0 else pc.fill_null(col, 0.0)).to_numpy(zero_copy_only=False)
    return _mix(bits.view(np.uint64))


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: every input bit moves every output bit (in ``_fold``'s errstate)."""
    x = (x ^ (x >> _S30)) * _M1
    x = (x ^ (x >> _S27)) * _M2
    return x ^ (x >> _S31)


def with_digests(kind: str, table: pa.Table) -> pa.Table:
    """``table`` with its ``row_digest`` and ``row_place_digest`` columns (computed here)."""
    for name, digests in ((DIGEST_COLUMN, row_digests(kind, table)),
                          (PLACE_COLUMN, place_digests(kind, table))):
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, digests)
        else:
            table = table.append_column(name, digests)
    return table


def lacks_digests(table: pa.Table) -> bool:
    """Does ``table`` (rows as stored) hold rows stored before digests existed (no digest, or null)?"""
    return DIGEST_COLUMN not in table.column_names or table[DIGEST_COLUMN].null_count > 0


def stored_digests(kind: str, content: pa.Table) -> pa.Table:
    """``content`` (a part file's rows, every column) with the digests of its rows stored before digests
    existed computed from their content as :meth:`commit <healthai.store.ParquetStore.commit>` computes
    them (:func:`with_digests`); the stored digests of the other rows are kept."""
    if not lacks_digests(content):
        return content
    computed = with_digests(kind, content)
    if DIGEST_COLUMN not in content.column_names:
        return computed
    legacy = pc.is_null(content[DIGEST_COLUMN])
    for name in (DIGEST_COLUMN, PLACE_COLUMN):
        stored = (pc.cast(content[name], pa.int64()) if name in content.column_names
                  else pa.array(np.zeros(content.num_rows, np.int64)))
        merged = pc.if_else(legacy, computed[name], stored)
        computed = computed.set_column(computed.column_names.index(name), name, merged)
    return computed


def digests_of(table: pa.Table) -> list[bytes | None]:
    """Each row's version as the index keeps it: 16 bytes, the content digest then the place digest
    (None for rows without one: :func:`stored_digests` gives stored rows theirs)."""
    if DIGEST_COLUMN not in table.column_names:
        return [None] * table.num_rows
    core = pc.fill_null(table[DIGEST_COLUMN], 0).to_numpy(zero_copy_only=False).astype(np.int64)
    place = (pc.fill_null(table[PLACE_COLUMN], 0).to_numpy(zero_copy_only=False).astype(np.int64)
             if PLACE_COLUMN in table.column_names else np.zeros(table.num_rows, np.int64))
    both = np.ascontiguousarray(np.stack([core, place], 1)).view("V16").ravel().tolist()
    if table[DIGEST_COLUMN].null_count:
        valid = pc.is_valid(table[DIGEST_COLUMN]).to_pylist()
        both = [b if ok else None for b, ok in zip(both, valid, strict=True)]
    return both


def _same(stored: bytes | None, incoming: bytes | None) -> bool:
    """Is ``incoming`` the stored version? Yes when the contents match and the incoming row's place is none
    or the same. A stored row without a version (the store gives every row one: :func:`stored_digests`)
    is never taken for the same: storing a row once more is an extra row, dropping one loses a correction."""
    if stored is None:
        return False
    if stored == incoming:
        return True
    return incoming is not None and stored[:8] == incoming[:8] and incoming[8:] == _NO_PLACE


class VersionIndex:
    """Per kind: key → the latest stored version's digest, and how many rows replaced an earlier one."""

    def __init__(self) -> None:
        self._latest: dict[str, dict[str, bytes | None]] = {}
        self.superseded: dict[str, int] = {}  # kind -> rows stored as a later version of a stored key

    def clear(self) -> None:
        self._latest.clear()
        self.superseded.clear()

    def count(self, kind: str) -> int:
        return len(self._latest.get(kind, ()))

    def __contains__(self, kind_key: tuple[str, str]) -> bool:
        kind, key = kind_key
        return key in self._latest.get(kind, ())

    def add(self, kind: str, keys: Sequence[str], digests: Sequence[bytes | None], *, new: bool = False
            ) -> None:
        """Index stored rows (in commit order): each is its key's latest version. ``new``: the caller
        knows every key is distinct and not indexed yet (:meth:`split` kept them all, none a version)."""
        latest = self._latest.setdefault(kind, {})
        before = len(latest)
        if new or (len(set(keys)) == len(keys) and latest.keys().isdisjoint(keys)):  # no versions: in C
            latest.update(zip(keys, digests, strict=True))
            return
        for key, digest in zip(keys, digests, strict=True):
            latest[key] = digest
        self.superseded[kind] = self.superseded.get(kind, 0) + len(keys) - (len(latest) - before)

    def refresh(self, kind: str, keys: Sequence[str], before: Sequence[bytes | None],
                after: Sequence[bytes | None]) -> None:
        """Rows rewritten in place (the birth-date guard's generalized dates): a row the rewrite changed
        becomes its key's latest version again only if it was the latest (a key whose latest version
        is in a later file keeps it)."""
        latest = self._latest.setdefault(kind, {})
        for key, old, new in zip(keys, before, after, strict=True):
            if old != new and key in latest and latest[key] == old:
                latest[key] = new

    def split(self, kind: str, keys: Sequence[str], digests: Sequence[bytes | None]
              ) -> tuple[list[bool], list[int]]:
        """Which incoming rows to store (new keys, and changed versions of stored ones), and the
        positions of those that are new versions. A row that is its key's latest version (stored, or
        earlier in this batch: :func:`_same`) is a duplicate."""
        latest = self._latest.get(kind, {})
        unique = set(keys)
        if len(unique) == len(keys) and latest.keys().isdisjoint(unique):  # the common case, in C
            return [True] * len(keys), []
        batch: dict[str, bytes | None] = {}
        keep: list[bool] = []
        versions: list[int] = []
        for i, (key, digest) in enumerate(zip(keys, digests, strict=True)):
            if key in batch:
                known, stored = batch[key], True
            elif key in latest:
                known, stored = latest[key], True
            else:
                known, stored = None, False
            store = not stored or not _same(known, digest)
            keep.append(store)
            if store:
                if stored:
                    versions.append(i)
                batch[key] = digest
        return keep, versions


def record_keys(table: pa.Table) -> pa.Array:
    """Each row's ``source`` + separator + ``record_key``: the key the index and every read go by."""
    return pc.binary_join_element_wise(*(pc.cast(table[c], pa.string()) for c in KEY_COLUMNS), _SEP)


def latest_rows(table: pa.Table) -> pa.Table:
    """The last row of each (source, record_key) in ``table`` (rows in commit order)."""
    keys = record_keys(table)
    last = ~pd.Series(keys.to_numpy(zero_copy_only=False)).duplicated(keep="last").to_numpy()
    return table if last.all() else table.filter(pa.array(last))
