"""US county (5-digit FIPS, e.g. ``25017``) of an address: its county name (FHIR ``district``) or
its ZIP code, so surveillance can count by county — where most US health departments work.

Counties are the Census 2024 Gazetteer's (the county graph's own file, shipped in
``healthai/data/graphs/us_counties``). A name matches with or without its kind ("Middlesex",
"Middlesex County", "Middlesex Co."), accents, case and "St."/"Saint" ignored; a bare name is
taken only when one county of the state has it ("Baltimore" is Baltimore County: the independent
city is "Baltimore city"), and unknown otherwise; "Municipality of Anchorage" and "La Porte" (LaPorte)
are found too. An address in the District of Columbia, a one-county state, is in 11001. A ZIP code
gives the county the US
Postal Service lists it under (package ``zipcodes``, offline; a ZIP crossing a county line counts
in its main county), and only when its state agrees with the address. Connecticut's 2022 planning
regions have no ZIP list yet: its ZIP codes give no county. An address with no state is placed by a
county FIPS code alone (``25017``: Massachusetts), else by its ZIP code alone (the state and county the
ZIP table lists it under): :func:`address_place`. Nothing is guessed; unknown is None.
The ZIP code itself is never stored.
"""

from __future__ import annotations

import csv
import functools
import re
import unicodedata
from pathlib import Path

from healthai.normalize.identity import region_code

GAZETTEER = Path(__file__).resolve().parent.parent / "data" / "graphs" / "us_counties" / \
    "2024_Gaz_counties_national.txt"
# the kind of county a Gazetteer name ends with (longest first); "city" stays part of the name, since
# "Baltimore city" and "Baltimore County" are two counties
_KINDS = ("city and borough", "planning region", "census area", "municipality", "municipio", "borough",
          "parish", "county")
_ZIP = re.compile(r"^(\d{5})(?:-?\d{4})?$")
FIPS = re.compile(r"^\d{5}$")


def _key(name: str) -> str:
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    text = re.sub(r"[.'’]", "", text)
    text = re.sub(r"\bsaint\b", "st", text)
    text = re.sub(r"\bco$", "county", " ".join(text.replace("-", " ").split()))
    # "Municipality of Anchorage", "City and Borough of Juneau": the Gazetteer puts the kind last
    return re.sub(r"^(city and borough|municipality|borough|county|parish) of (.+)$", r"\2 \1", text)


def _compact(key: str) -> str:
    return key.replace(" ", "")  # "La Porte" / "LaPorte", "De Witt" / "DeWitt"


def _base(key: str) -> str | None:
    for kind in _KINDS:
        if key.endswith(" " + kind):
            return key[: -len(kind) - 1]
    return None


@functools.cache
def _index() -> dict[str, dict[str, str]]:
    """state postal code -> {normalized name, and bare name when the state has one such county: FIPS}."""
    by_state: dict[str, dict[str, str]] = {}
    bare: dict[tuple[str, str], list[str]] = {}
    with GAZETTEER.open(encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            state, geoid, key = row["USPS"].strip(), row["GEOID"].strip(), _key(row["NAME"])
            counties = by_state.setdefault(state, {})
            counties[key] = geoid
            counties.setdefault(_compact(key), geoid)
            base = _base(key)
            if base is not None:
                bare.setdefault((state, base), []).append(geoid)
    for (state, base), geoids in bare.items():
        if len(geoids) == 1:
            by_state[state].setdefault(base, geoids[0])
    return by_state


def county_fips(state: str | None, name: str | None) -> str | None:
    """FIPS of a county named in a state (postal code, e.g. ``MA``); a FIPS given as such is kept when
    it belongs to the state."""
    if not name or not state:
        return None
    counties = _index().get(state)
    if counties is None:
        return None
    text = name.strip()
    if FIPS.match(text):
        return text if text in counties.values() else None
    key = _key(text)
    base = _base(key)
    return (counties.get(key) or counties.get(_compact(key))
            or (counties.get(base) or counties.get(_compact(base)) if base else None))


@functools.cache
def only_county(state: str) -> str | None:
    """The FIPS of a state with a single county (the District of Columbia: 11001)."""
    fips = set(_index().get(state, {}).values())
    return fips.pop() if len(fips) == 1 else None


@functools.cache
def all_counties() -> tuple[str, ...]:
    """Every county FIPS code of the Census 2024 Gazetteer (states, DC and Puerto Rico), sorted."""
    return tuple(sorted({fips for counties in _index().values() for fips in counties.values()}))


@functools.cache
def _zip_index() -> dict[str, tuple[str, str | None]]:
    """ZIP code (5 digits) -> (state postal code, county FIPS or None), retired ZIP codes included."""
    import zipcodes  # one pass over its table (42,000 ZIP codes): its per-code lookup is a scan

    index: dict[str, tuple[str, str | None]] = {}
    for z in zipcodes.list_all():
        state = z.get("state")
        if state and z.get("zip_code"):
            county = county_fips(state, z.get("county")) or only_county(state)
            index.setdefault(z["zip_code"], (state, county))
    return index


@functools.cache
def _fips_states() -> dict[str, str]:
    """County FIPS -> state postal code."""
    return {fips: state for state, counties in _index().items() for fips in counties.values()}


def zip_county(state: str | None, postal_code: str) -> str | None:
    """FIPS of the county a US ZIP code is listed under, when that county is in ``state`` (or any state
    when ``state`` is None)."""
    m = _ZIP.match(postal_code.strip())
    found = _zip_index().get(m.group(1)) if m else None
    if found is None or (state is not None and found[0] != state):
        return None
    return found[1]


def load_tables() -> None:
    """Load the county names and the ZIP table now (about 0.5 s, once per process), so the first
    request with a US address does not pay for it; normalizing contexts call it when built."""
    _zip_index()


def address_county(region: str | None, district: str | None, postal_code: str | None) -> str | None:
    """County of a US address (``region`` its ISO 3166-2 state, e.g. ``US-MA``): by its county name,
    else by its ZIP code."""
    if region is None or not region.startswith("US-"):
        return None
    state = region[3:]
    county = county_fips(state, district) if district else None
    if county is None and postal_code:
        county = zip_county(state, postal_code)
    return county or only_county(state)


def address_place(region: str | None, district: str | None, postal_code: str | None
                  ) -> tuple[str | None, str | None]:
    """(region, county) of a US address. With ``region`` (ISO 3166-2): it and :func:`address_county`.
    Without: a county FIPS code (``district``) gives its state and itself; else a ZIP code gives the
    state the ZIP table lists it in and its county (a county name needs the ZIP's state); else
    (None, None). The caller says whether the address is in the US at all (no state, no country: US)."""
    if region is not None:
        return region, address_county(region, district, postal_code)
    text = district.strip() if district else ""
    state = _fips_states().get(text) if FIPS.match(text) else None
    if state is None and postal_code:
        m = _ZIP.match(postal_code.strip())
        found = _zip_index().get(m.group(1)) if m else None
        state = found[0] if found else None
    region = region_code(state) if state is not None else None  # a military ZIP (AE, AP) is no state
    return (region, address_county(region, district, postal_code)) if region else (None, None)
