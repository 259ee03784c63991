"""Identity handling: keyed pseudonyms, generalized dates, region codes.

Policy (what leaves the normalizer):
- identifiers (resource ids, MRN, SSN, licence, passport, ...) → ``Pseudonymizer.pseudonym`` =
  hex HMAC-SHA-256 over ``system + "|" + value`` with the operator's secret key. Same key, same
  input → same pseudonym (so the store can deduplicate and join); without the key it cannot be
  reversed or recomputed. The key is never logged, printed or put in an error.
- names, telecom, addresses, contact, photo, birth place, mother's maiden name, narrative text and
  every other free text → dropped (never copied).
- birth date → generalized to year and month (day dropped); that keeps age exact to about two weeks,
  enough for the age features (:func:`healthai.normalize.features.age_years` uses the 15th).
  Death dates are generalized the same way.
- location → region code at state level, ISO 3166-2 (``US-MA``) from ``address.state`` (full
  name or postal abbreviation) and ``address.country`` (US assumed when absent). Surveillance
  counts group by this code. City, postal code, lines and geolocation are dropped.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from healthai.errors import InvalidInput
from healthai.normalize.subdivisions import subdivision_code

MIN_KEY_BYTES = 16

US_STATES: dict[str, str] = {
    "alabama": "AL", "alaska": "AK", "arizona": "AZ", "arkansas": "AR", "california": "CA",
    "colorado": "CO", "connecticut": "CT", "delaware": "DE", "district of columbia": "DC",
    "florida": "FL", "georgia": "GA", "hawaii": "HI", "idaho": "ID", "illinois": "IL",
    "indiana": "IN", "iowa": "IA", "kansas": "KS", "kentucky": "KY", "louisiana": "LA",
    "maine": "ME", "maryland": "MD", "massachusetts": "MA", "michigan": "MI", "minnesota": "MN",
    "mississippi": "MS", "missouri": "MO", "montana": "MT", "nebraska": "NE", "nevada": "NV",
    "new hampshire": "NH", "new jersey": "NJ", "new mexico": "NM", "new york": "NY",
    "north carolina": "NC", "north dakota": "ND", "ohio": "OH", "oklahoma": "OK", "oregon": "OR",
    "pennsylvania": "PA", "rhode island": "RI", "south carolina": "SC", "south dakota": "SD",
    "tennessee": "TN", "texas": "TX", "utah": "UT", "vermont": "VT", "virginia": "VA",
    "washington": "WA", "west virginia": "WV", "wisconsin": "WI", "wyoming": "WY",
    "puerto rico": "PR", "guam": "GU", "american samoa": "AS", "u.s. virgin islands": "VI",
    "northern mariana islands": "MP",
    "washington dc": "DC", "washington, dc": "DC", "washington d.c.": "DC", "washington, d.c.": "DC",
    "virgin islands": "VI", "us virgin islands": "VI", "united states virgin islands": "VI",
}  # fmt: skip
_US_ABBREV = frozenset(US_STATES.values())
_US_NAMES = frozenset({"us", "usa", "united states", "united states of america", "u.s.", "u.s.a."})


class Pseudonymizer:
    """HMAC-SHA-256 keyed pseudonyms. Build once at start-up; thread-safe (no mutable state)."""

    __slots__ = ("_cache", "_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) < MIN_KEY_BYTES:
            raise InvalidInput(f"pseudonymization key must be at least {MIN_KEY_BYTES} bytes")
        # HMAC (RFC 2104) with its keyed inner and outer SHA-256 states computed once: each digest
        # then copies them instead of re-hashing the padded key (2x faster than hmac.digest; same bytes)
        block = hashlib.sha256().block_size
        k = bytes(key) if len(key) <= block else hashlib.sha256(key).digest()
        k = k.ljust(block, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in k))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in k))
        self._cache: dict[str, str] = {}

    @classmethod
    def from_file(cls, path: str | Path) -> Pseudonymizer:
        p = Path(path)
        try:
            key = p.read_bytes().strip()
        except OSError as e:
            raise InvalidInput(f"cannot read pseudonymization key file {p}: {e.strerror}") from None
        return cls(key)

    @classmethod
    def from_env(cls, var: str = "HEALTHAI_PSEUDONYM_KEY") -> Pseudonymizer:
        value = os.environ.get(var)
        if not value:
            raise InvalidInput(f"environment variable {var} with the pseudonymization key is not set")
        return cls(value.encode())

    def __repr__(self) -> str:  # never show the key
        return "Pseudonymizer(key=<hidden>)"

    def pseudonym(self, system: str, value: str) -> str:
        msg = f"{system}|{value}"
        hit = self._cache.get(msg)
        if hit is not None:
            return hit
        out = self._digest(msg.encode()).hex()
        if len(self._cache) >= 200_000:  # bounded: ids repeat a lot inside one payload
            self._cache.clear()
        self._cache[msg] = out
        return out

    def keyed_digest(self, message: str) -> bytes:
        """HMAC-SHA-256 of ``message`` under the pseudonym key (e.g. a patient's date shift)."""
        return self._digest(message.encode())

    def many(self, system: str, values: list[str | None]) -> list[str | None]:
        """Pseudonyms of distinct values (no cache); None stays None."""
        inner = self._inner.copy()
        inner.update(f"{system}|".encode())  # the shared prefix, hashed once
        icopy, ocopy = inner.copy, self._outer.copy
        out: list[str | None] = []
        append = out.append
        for v in values:
            if v is None:
                append(None)
                continue
            h = icopy()
            h.update(v.encode())
            o = ocopy()
            o.update(h.digest())
            append(o.hexdigest())
        return out

    def _digest(self, message: bytes) -> bytes:
        h = self._inner.copy()
        h.update(message)
        o = self._outer.copy()
        o.update(h.digest())
        return o.digest()


def record_system(source: str, resource_type: str) -> str:
    """The HMAC 'system' of a resource id: ids are only unique per source and resource type."""
    return f"{source}/{resource_type}"


def region_code(state: str | None, country: str | None = None) -> str | None:
    """ISO 3166-2 subdivision code from a free-form state and country (none: the US), or None when
    unknown. US names and postal abbreviations here; other countries: ``subdivisions``."""
    if not state:
        return None
    c = (country or "US").strip().lower()
    if c not in _US_NAMES:  # elsewhere: ISO 3166-2 tables; unknown stays unknown, never guessed
        return subdivision_code(state, country or "")
    s = state.strip()
    if s.upper().replace(".", "") in _US_ABBREV:  # "MA", "D.C."
        return f"US-{s.upper().replace('.', '')}"
    abbr = US_STATES.get(s.lower())
    return f"US-{abbr}" if abbr else None


def generalize_date(text: str | None) -> tuple[int | None, int | None]:
    """FHIR date/dateTime → (year, month); the day and time are dropped. Raises ValueError."""
    if not text:
        return None, None
    if len(text) < 4 or not text[:4].isdigit():
        raise ValueError("not a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD...)")
    year = int(text[:4])
    if len(text) >= 7:
        if text[4] != "-" or not text[5:7].isdigit() or not 1 <= int(text[5:7]) <= 12:
            raise ValueError("not a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD...)")
        return year, int(text[5:7])
    return year, None
