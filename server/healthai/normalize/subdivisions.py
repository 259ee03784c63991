"""ISO 3166-2 subdivision codes outside the US, from a FHIR address's free-form state and country
(``pycountry``'s ISO 3166-2 tables, offline).

The state may be the full code (``JP-13``), the code's subdivision part (``13``, ``BY``, ``ON``) or the
subdivision's ISO name (``Tokyo``, ``Bayern``, ``Ontario``; ``Co. Dublin`` / ``County Cork`` as the
county's name), compared case- and accent-insensitively.
The country may be an alpha-2 or alpha-3 code or an English name. Anything else, and any name two
subdivisions share, stays unknown: a region is never guessed.
"""

from __future__ import annotations

import functools
import unicodedata


def _norm(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text.split(" [", 1)[0]).casefold()
    return " ".join("".join(ch for ch in folded if not unicodedata.combining(ch)).replace("-", " ").split())


@functools.lru_cache(maxsize=256)
def _alpha2(country: str) -> str | None:
    import pycountry

    try:
        return pycountry.countries.lookup(country.strip()).alpha_2
    except LookupError:
        return None


@functools.lru_cache(maxsize=64)
def _table(alpha2: str) -> dict[str, str]:
    """Normalized code / code part / name → code; keys two subdivisions share are left out."""
    import pycountry

    seen: dict[str, set[str]] = {}
    for sub in pycountry.subdivisions.get(country_code=alpha2) or ():
        for key in (sub.code, sub.code.split("-", 1)[1], sub.name):
            seen.setdefault(_norm(key), set()).add(sub.code)
    return {key: next(iter(codes)) for key, codes in seen.items() if len(codes) == 1}


def load_tables() -> None:
    """Load pycountry's country and subdivision tables now (about 80 ms, once per process), so the
    first non-US address of a request does not pay for it; normalizing contexts call it when built."""
    _alpha2("JP")
    _table("JP")


@functools.lru_cache(maxsize=4096)
def subdivision_code(state: str, country: str) -> str | None:
    """``JP-13`` for ("Tokyo", "JP"); None when the country or the state is not recognised."""
    alpha2 = _alpha2(country)
    if alpha2 is None or not state.strip():
        return None
    table, key = _table(alpha2), _norm(state)
    if key in table:
        return table[key]
    # "Co. Dublin", "County Cork": Irish (and other) addresses put the word before the county's name
    for prefix in ("county ", "co. ", "co "):
        if key.startswith(prefix) and key[len(prefix):] in table:
            return table[key[len(prefix):]]
    return None
