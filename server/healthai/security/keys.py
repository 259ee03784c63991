"""API keys per calling system, stored hashed in a JSON file that is re-read when it changes.

Key format handed to a client: ``hai_<key_id>_<secret>`` — ``key_id`` (12 hex digits) finds the
entry, ``secret`` (43 url-safe characters = 256 random bits) is checked against its hash.

File format (``SecuritySettings.api_keys_file``)::

    {"keys": [
      {"client": "ehr-north", "key_id": "3f9a0c1b2d4e",
       "hash": "sha256$<salt hex>$<sha256(salt + secret) hex>",
       "scopes": ["ingest", "score"], "expires_at": "2027-01-01T00:00:00Z"}
    ]}

``expires_at`` is optional. Why salted SHA-256 and not scrypt/argon2: the secrets are 256-bit random
values, so brute force is out of reach whatever the hash; a deliberately slow hash would only add
tens of milliseconds to every call. The file never holds a usable key.

Rotation without restart: add the new key's entry, hand the key out, remove the old entry — the
store notices each change on the next call. A malformed rewrite is logged and ignored (the last
good set keeps serving), so a typo cannot lock every client out.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from healthai.errors import Unauthenticated
from healthai.security.settings import SCOPES

log = logging.getLogger(__name__)

KEY_PREFIX = "hai_"
_KEY_ID_RE = re.compile(r"^[0-9a-f]{12}$")
_CLIENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_HASH_RE = re.compile(r"^sha256\$([0-9a-f]{32})\$([0-9a-f]{64})$")
# A file changed within this many seconds of its last load may share its mtime with the load:
# compare the bytes too (the "racily clean" case of mtime-based caches).
_RACY_WINDOW_S = 2.0


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """Who is calling: the client name (safe to log) and what it may do."""

    client: str
    key_id: str
    scopes: frozenset[str]


@dataclass(frozen=True, slots=True)
class _Entry:
    identity: ClientIdentity
    salt: bytes
    digest: bytes
    expires_at: datetime | None


def hash_secret(secret: str, salt: bytes) -> str:
    return f"sha256${salt.hex()}${hashlib.sha256(salt + secret.encode()).hexdigest()}"


def new_key(client: str, scopes: list[str], expires_at: datetime | None = None) -> tuple[str, dict[str, Any]]:
    """A fresh key (give it to the client, once) and its file entry (store it)."""
    entry_scopes = _check_scopes(scopes, where="scopes")
    if not _CLIENT_RE.match(client):
        raise ValueError(f"client {client!r} must match {_CLIENT_RE.pattern}")
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    entry: dict[str, Any] = {
        "client": client,
        "key_id": key_id,
        "hash": hash_secret(secret, secrets.token_bytes(16)),
        "scopes": sorted(entry_scopes),
    }
    if expires_at is not None:
        entry["expires_at"] = expires_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return f"{KEY_PREFIX}{key_id}_{secret}", entry


def _check_scopes(scopes: Any, *, where: str) -> frozenset[str]:
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise ValueError(f"{where} must be a list of strings, got {scopes!r}")
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"{where} has unknown scope(s) {unknown}; allowed: {list(SCOPES)}")
    return frozenset(scopes)


def _parse_entry(raw: Any, index: int) -> _Entry:
    where = f"keys[{index}]"
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be an object")
    client, key_id, hashed = raw.get("client"), raw.get("key_id"), raw.get("hash")
    if not isinstance(client, str) or not _CLIENT_RE.match(client):
        raise ValueError(f"{where}.client={client!r} must match {_CLIENT_RE.pattern}")
    if not isinstance(key_id, str) or not _KEY_ID_RE.match(key_id):
        raise ValueError(f"{where}.key_id={key_id!r} must be 12 lowercase hex digits")
    match = _HASH_RE.match(hashed) if isinstance(hashed, str) else None
    if match is None:
        raise ValueError(f"{where}.hash must be 'sha256$<32 hex salt>$<64 hex digest>'")
    expires_at = None
    if raw.get("expires_at") is not None:
        try:
            expires_at = datetime.fromisoformat(str(raw["expires_at"]))
        except ValueError as exc:
            raise ValueError(f"{where}.expires_at={raw['expires_at']!r} is not an ISO 8601 time") from exc
        if expires_at.tzinfo is None:
            raise ValueError(f"{where}.expires_at={raw['expires_at']!r} needs a time zone (e.g. 'Z')")
    scopes = _check_scopes(raw.get("scopes"), where=f"{where}.scopes")
    return _Entry(
        identity=ClientIdentity(client=client, key_id=key_id, scopes=scopes),
        salt=bytes.fromhex(match.group(1)),
        digest=bytes.fromhex(match.group(2)),
        expires_at=expires_at,
    )


def parse_key_file(data: bytes) -> dict[str, _Entry]:
    """Entries by key id; ValueError naming the entry and field on any problem."""
    try:
        doc = json.loads(data)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc.msg} at line {exc.lineno}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError('top level must be an object with a "keys" list')
    entries: dict[str, _Entry] = {}
    for index, raw in enumerate(doc["keys"]):
        entry = _parse_entry(raw, index)
        if entry.identity.key_id in entries:
            raise ValueError(f"keys[{index}].key_id={entry.identity.key_id!r} appears twice")
        entries[entry.identity.key_id] = entry
    return entries


class ApiKeyStore:
    """Checks presented keys against the hashed file; re-reads the file when it changes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._signature: tuple[int, int, int] | None = None
        self._raw = b""
        self._entries: dict[str, _Entry] = {}
        self._reload(initial=True)

    def authenticate(self, presented: str | None) -> ClientIdentity:
        """The caller's identity, or Unauthenticated (the message never echoes the key)."""
        if not presented:
            raise Unauthenticated("missing API key: send metadata 'authorization: Bearer <key>'")
        self._reload()
        key_id, secret = _split_key(presented)
        entry = self._entries.get(key_id) if key_id else None
        if entry is None or secret is None:
            raise Unauthenticated("invalid API key")
        candidate = hashlib.sha256(entry.salt + secret.encode()).digest()
        if not hmac.compare_digest(candidate, entry.digest):
            raise Unauthenticated("invalid API key")
        if entry.expires_at is not None and datetime.now(UTC) >= entry.expires_at:
            raise Unauthenticated(f"API key {key_id} expired at {entry.expires_at.isoformat()}")
        return entry.identity

    def __len__(self) -> int:
        self._reload()
        return len(self._entries)

    def _reload(self, *, initial: bool = False) -> None:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            if initial:
                raise ValueError(f"api_keys_file {self.path}: {exc.strerror}") from exc
            log.error("api_keys_file %s unreadable (%s); keeping the last good key set", self.path, exc)
            return
        signature = (st.st_mtime_ns, st.st_size, st.st_ino)
        racy = time.time() - st.st_mtime_ns / 1e9 < _RACY_WINDOW_S
        if signature == self._signature and not racy:
            return
        try:
            raw = self.path.read_bytes()
            if raw == self._raw and not initial:
                self._signature = signature
                return
            entries = parse_key_file(raw)
        except (OSError, ValueError) as exc:
            if initial:
                raise ValueError(f"api_keys_file {self.path}: {exc}") from exc
            log.error("api_keys_file %s rejected (%s); keeping the last good key set", self.path, exc)
            self._signature = signature
            return
        self._signature, self._raw, self._entries = signature, raw, entries
        log.info("api_keys_file %s loaded: %d key(s)", self.path, len(entries))


def _split_key(presented: str) -> tuple[str | None, str | None]:
    if not presented.startswith(KEY_PREFIX):
        return None, None
    key_id, sep, secret = presented[len(KEY_PREFIX) :].partition("_")
    if not sep or not _KEY_ID_RE.match(key_id) or not secret:
        return None, None
    return key_id, secret
