"""An agency's own case definitions, from a TOML file (``--syndromes FILE``, ``serve --syndromes-file``),
beside the built-in ones (``syndromes.SYNDROMES``)::

    [syndromes.measles]
    description = "measles: ICD-10-CM B05 or SNOMED CT 14189004"
    icd10 = ["B05"]            # ICD-10-CM codes or categories: a code and every code under it
    snomed = ["14189004"]      # SNOMED CT concept ids, exactly
    lab_loinc = []             # LOINC tests whose positive coded result is a case (as flu_lab)

A definition needs at least one code. A built-in name cannot be redefined: a series must not change
meaning with the file a server was started with. A LOINC code or SNOMED CT id failing its check digit
(LOINC's mod 10, SNOMED CT's Verhoeff and partition) is refused, as ingest refuses it: no stored record
could ever match it. Errors name the file, the syndrome, the key and the codes.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from pathlib import Path

from healthai.errors import InvalidInput
from healthai.normalize.codes import loinc_valid, snomed_valid
from healthai.surveillance.syndromes import SYNDROMES, Syndrome

NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
ICD10 = re.compile(r"^[A-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?$")  # a category (B05) or a code (J12.82)
DOTLESS_ICD10 = re.compile(r"^[A-Z][0-9][0-9A-Z][0-9A-Z]{1,4}$")
SNOMED_ID = re.compile(r"^[1-9][0-9]{5,17}$")
LOINC_CODE = re.compile(r"^[0-9]{1,7}-[0-9]$")
KEYS = {"description", "icd10", "snomed", "lab_loinc"}


def load_syndromes(path: Path | str | None) -> dict[str, Syndrome]:
    """The built-in syndromes plus the file's (None: the built-in ones only)."""
    if path is None:
        return dict(SYNDROMES)
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise InvalidInput(f"syndromes file {str(path)!r}: {e.strerror}", field="syndromes") from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise InvalidInput(f"syndromes file {str(path)!r}: not TOML ({e})", field="syndromes") from e
    table = data.get("syndromes")
    if not isinstance(table, dict) or not table or set(data) != {"syndromes"}:
        raise InvalidInput(f"syndromes file {str(path)!r}: needs [syndromes.NAME] tables and nothing else",
                           field="syndromes")
    out = dict(SYNDROMES)
    for name, spec in table.items():
        out[name] = _syndrome(path, name, spec)
    return out


def _syndrome(path: Path, name: str, spec: object) -> Syndrome:
    where = f"syndromes file {str(path)!r}: [syndromes.{name}]"
    if name in SYNDROMES:
        raise InvalidInput(f"{where}: {name!r} is built in and cannot be redefined; give it another name",
                           field="syndromes")
    if not NAME.match(name):
        raise InvalidInput(f"{where}: a name is lower-case letters, digits and _, starting with a letter",
                           field="syndromes")
    if not isinstance(spec, dict):
        raise InvalidInput(f"{where}: must be a table", field="syndromes")
    unknown = sorted(set(spec) - KEYS)
    if unknown:
        raise InvalidInput(f"{where}: unknown keys {unknown} (allowed: {', '.join(sorted(KEYS))})",
                           field="syndromes")
    icd10 = _codes(spec, "icd10", ICD10, where, upper=True)
    snomed = _checked(_codes(spec, "snomed", SNOMED_ID, where), "snomed", snomed_valid,
                      "fail the SNOMED CT check digit (Verhoeff) or partition", where)
    loinc = _checked(_codes(spec, "lab_loinc", LOINC_CODE, where), "lab_loinc", loinc_valid,
                     "fail the LOINC check digit", where)
    if not (icd10 or snomed or loinc):
        raise InvalidInput(f"{where}: needs at least one code (icd10, snomed or lab_loinc)",
                           field="syndromes")
    description = spec.get("description", name)
    if not isinstance(description, str):
        raise InvalidInput(f"{where}: description must be a string", field="syndromes")
    return Syndrome(name=name, description=description, icd10_prefixes=tuple(icd10),
                    snomed_codes=frozenset(snomed), lab_loincs=frozenset(loinc))


def _codes(spec: dict, key: str, pattern: re.Pattern[str], where: str, upper: bool = False) -> list[str]:
    values = spec.get(key, [])
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise InvalidInput(f"{where}: {key} must be a list of strings", field="syndromes")
    codes = [v.strip().upper() if upper else v.strip() for v in values]
    if pattern is ICD10:  # J101 as ingest reads it too: J10.1 (the store holds dotted codes)
        codes = [f"{c[:3]}.{c[3:]}" if DOTLESS_ICD10.match(c) else c for c in codes]
    bad = [c for c in codes if not pattern.match(c)]
    if bad:
        raise InvalidInput(f"{where}: {key} {bad[:3]} are not valid codes", field="syndromes")
    return codes


def _checked(codes: list[str], key: str, valid: Callable[[str], bool], problem: str, where: str) -> list[str]:
    """``codes`` when each passes ``valid`` (its check digit); else InvalidInput naming them."""
    bad = [c for c in codes if not valid(c)]
    if bad:
        raise InvalidInput(f"{where}: {key} {bad[:3]} {problem}: no record could match them (a typo?)",
                           field="syndromes")
    return codes
