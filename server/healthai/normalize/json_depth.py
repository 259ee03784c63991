"""A bounded nesting-depth check for JSON text, run before it is parsed.

``json.loads`` recurses once per nested array/object and raises RecursionError (an INTERNAL error,
not the caller's fault as it should be) somewhere past ~1,000 levels, and code walking the parsed
document recurses as well. Real FHIR resources nest a few dozen levels at most, so deeper payloads
are refused as invalid input before any parsing.

The check works on the UTF-8 bytes at C speed: escape sequences (a backslash and the character
after it) are removed, then everything but quotes and brackets; in what is left a bracket lies in a
string literal exactly when an odd number of quotes precede it, and numpy sums the running depth of
the others. Multi-byte UTF-8 sequences never contain ASCII bytes, so no byte of a non-ASCII
character is mistaken for a bracket, a quote or a backslash.
"""

from __future__ import annotations

import re

import numpy as np

MAX_JSON_DEPTH = 100

_KEEP = b'"[]{}'
_DROP = bytes(b for b in range(256) if b not in _KEEP)
_ESCAPE = re.compile(rb"\\.", re.DOTALL)  # left to right, so "\\\"" is two escapes
_QUOTE = ord('"')
_STEP = np.zeros(256, np.int8)
_STEP[list(b"[{")] = 1
_STEP[list(b"]}")] = -1


def json_depth_exceeds(data: bytes | str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether arrays/objects in the JSON ``data`` nest more than ``limit`` levels deep.

    Exact for valid JSON; for malformed JSON (which the parser then refuses anyway) it may err.
    """
    if data.count("[" if isinstance(data, str) else b"[") + \
            data.count("{" if isinstance(data, str) else b"{") <= limit:  # cheap: cannot be deeper
        return False
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    if b"\\" in data:
        data = _ESCAPE.sub(b"", data)
    kept = np.frombuffer(data.translate(None, _DROP), np.uint8)  # quotes and brackets, in order
    if len(kept) <= limit:
        return False
    outside = (np.cumsum(kept == _QUOTE) & 1) == 0  # an even number of quotes before: not in a string
    depth = np.cumsum(_STEP[kept] * outside, dtype=np.int64)
    return bool(depth.max(initial=0) > limit)
