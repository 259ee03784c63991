"""Code systems: ICD-10-CM validation, ICD-9-CM recognition, LOINC check digits, system URIs.

- ICD-10-CM: validated against the official code set shipped by ``simple-icd-10-cm`` (CMS/NCHS
  April 2026 release, read from the package's code list file once per process — the package's own
  import parses the 20 MB XML and is not needed). Input may be dotted or undotted, any case;
  :func:`canonical_icd10` returns the dotted form (``E11.9``); a dot anywhere but after the 3rd
  character (``E1.19``, ``J10.1.``) makes it no code (never moved). Categories that have children
  (``E11``, ``M54.5``) and codes lacking their required 7th character (``S52.521``) are valid but
  not reportable; :func:`check_icd10` gives the issue of a code (ICD10_INVALID / ICD10_NOT_BILLABLE),
  the same for FHIR, flat and mapped codes.
- WHO ICD-10: a code sent under a WHO ICD-10 URI (``WHO_ICD10_SYSTEMS``: many senders put ICD-10-CM
  codes there too) is valid when it is in ICD-10-CM or in the WHO 2019 classification shipped by
  ``simple-icd-10`` (E14.9, I25.0, ...); both are stored as ICD-10 codes (``icd10_code``). Under a
  WHO URI a code complete in WHO ICD-10 (M54.5) is not flagged as not billable.
- ICD-9-CM: recognised by format (``250.01``, ``V45.81``, ``E880.9``); no code set ships with the
  package, so format is all that is checked.
- LOINC: ``NNNNN-C`` with the LOINC mod-10 check digit.
- SNOMED CT ↔ ICD-10-CM: :class:`healthai.normalize.maps.SnomedIcd10Map` (re-exported here).
"""

from __future__ import annotations

import importlib.util
import re
from functools import lru_cache
from pathlib import Path

from healthai.normalize.maps import SnomedIcd10Map

__all__ = [
    "ICD9_SYSTEMS",
    "ICD10_SYSTEMS",
    "LOINC_SYSTEM",
    "SNOMED_SYSTEM",
    "SYSTEM_NAMES",
    "WHO_ICD10_SYSTEMS",
    "Icd10Codes",
    "SnomedIcd10Map",
    "canonical_icd9",
    "canonical_icd10",
    "canonical_uri",
    "canonical_who_icd10",
    "check_icd10",
    "icd10_codes",
    "is_icd9_format",
    "local_code_shaped",
    "loinc_check_digit",
    "loinc_valid",
    "shaped",
    "snomed_valid",
    "system_name",
    "system_text_ok",
]

ICD10CM_SYSTEM = "http://hl7.org/fhir/sid/icd-10-cm"
WHO_ICD10_SYSTEMS = frozenset({"http://hl7.org/fhir/sid/icd-10", "urn:oid:2.16.840.1.113883.6.3"})
ICD10_SYSTEMS = frozenset({ICD10CM_SYSTEM, "urn:oid:2.16.840.1.113883.6.90", *WHO_ICD10_SYSTEMS})
ICD9_SYSTEMS = frozenset(
    {"http://hl7.org/fhir/sid/icd-9-cm", "http://hl7.org/fhir/sid/icd-9", "urn:oid:2.16.840.1.113883.6.103"}
)
SNOMED_SYSTEM = "http://snomed.info/sct"
LOINC_SYSTEM = "http://loinc.org"
UCUM_SYSTEM = "http://unitsofmeasure.org"

# Short names used in rows and in flat records' ``code_system`` column.
ICD10CM, ICD9CM, SNOMED, LOINC, OTHER = "ICD10CM", "ICD9CM", "SNOMED", "LOINC", "OTHER"
SYSTEM_NAMES: dict[str, str] = {
    **dict.fromkeys(ICD10_SYSTEMS, ICD10CM),
    **dict.fromkeys(ICD9_SYSTEMS, ICD9CM),
    SNOMED_SYSTEM: SNOMED,
    "urn:oid:2.16.840.1.113883.6.96": SNOMED,
    LOINC_SYSTEM: LOINC,
    "urn:oid:2.16.840.1.113883.6.1": LOINC,
    # MIMIC-IV on FHIR (PhysioNet, MIT-LCP; both URL generations): its own URIs for the hospital's
    # ICD-10-CM / ICD-9-CM diagnoses, codes without the dot (J101 = J10.1)
    "http://mimic.mit.edu/fhir/mimic/CodeSystem/mimic-diagnosis-icd10": ICD10CM,
    "http://mimic.mit.edu/fhir/mimic/CodeSystem/mimic-diagnosis-icd9": ICD9CM,
    "http://fhir.mimic.mit.edu/CodeSystem/diagnosis-icd10": ICD10CM,
    "http://fhir.mimic.mit.edu/CodeSystem/diagnosis-icd9": ICD9CM,
}
# What an operator may declare a sender's own system URI to be (``NormalizeContext.code_systems``).
ALIAS_TARGETS = (ICD10CM, ICD9CM, SNOMED, LOINC)


def canonical_uri(uri: str) -> str:
    """A system URI as the standard spells it: spaces around, a trailing ``/`` and ``https://`` are
    near misses senders write (``https://loinc.org``, ``http://snomed.info/sct/``)."""
    near = uri.strip().rstrip("/")
    return "http://" + near.removeprefix("https://") if near.startswith("https://") else near


def system_name(uri: object) -> str:
    """Short name (ICD10CM, ICD9CM, SNOMED, LOINC) of a FHIR system URI; OTHER when unknown or not text.
    Near misses of a known URI are read as it (:func:`canonical_uri`)."""
    if not isinstance(uri, str):
        return OTHER
    return SYSTEM_NAMES.get(uri) or SYSTEM_NAMES.get(canonical_uri(uri), OTHER)


# ---------------------------------------------------------------- ICD-10-CM
_ICD10_SHAPE = re.compile(r"^[A-Z][0-9][0-9A-Z](?:[0-9A-Z]{1,4})?$")


class Icd10Codes:
    """The ICD-10-CM code set (categories and subcategories, undotted upper case)."""

    def __init__(self, codes: set[str], billable: set[str], release: str) -> None:
        self.codes = frozenset(codes)
        self.billable = frozenset(billable)
        self.release = release

    @classmethod
    def load(cls, path: str | Path | None = None) -> Icd10Codes:
        """Read a code list (one code per line, as in ``simple_icd_10_cm/data/code-list-*.txt``)."""
        if path is None:
            spec = importlib.util.find_spec("simple_icd_10_cm")
            if spec is None or not spec.submodule_search_locations:
                raise RuntimeError("simple-icd-10-cm is not installed")
            data_dir = Path(next(iter(spec.submodule_search_locations))) / "data"
            lists = sorted(data_dir.glob("code-list-*.txt"))
            if not lists:
                raise RuntimeError(f"no ICD-10-CM code list in {data_dir}")
            path = lists[-1]
        path = Path(path)
        lines = [ln.strip().upper() for ln in path.read_text(encoding="utf-8").splitlines()]
        codes = [c for c in lines if c and c[0].isalpha() and "-" not in c]
        ordered = sorted(codes)
        billable = {c for c, nxt in zip(ordered, [*ordered[1:], ""], strict=True) if not nxt.startswith(c)}
        release = path.stem.removeprefix("code-list-")
        return cls(set(codes), billable, release)

    def __contains__(self, code: str) -> bool:
        return code in self.codes

    def is_valid(self, code: str) -> bool:
        """True when ``code`` (dotted or not, any case) is in the code set."""
        return _undot10(code) in self.codes

    def is_billable(self, code: str) -> bool:
        return _undot10(code) in self.billable

    def not_billable_reason(self, code: str) -> str | None:
        """Why a code of the set is not reportable (None when it is, or is not in the set)."""
        c = _undot10(code)
        if c not in self.codes or c in self.billable:
            return None
        if len(c) == 6:  # its children add the 7th character (S52.521A, T36.0X1A)
            return "lacks its 7th character"
        return "is a category with subcodes"


def _undot10(code: str) -> str:
    return code.strip().replace(".", "").upper()


def _dot_misplaced(code: str) -> bool:
    """More than one dot, or a dot anywhere but after the 3rd character (``E1.19``): never moved."""
    c = code.strip()
    return "." in c and (c.count(".") > 1 or c.index(".") != 3)


def canonical_icd10(code: str, codes: Icd10Codes | None = None) -> str | None:
    """Dotted upper-case ICD-10-CM (``e119`` → ``E11.9``), or None when malformed (a misplaced dot
    included) / not in the set."""
    c = _undot10(code)
    if _dot_misplaced(code) or not _ICD10_SHAPE.match(c):
        return None
    if codes is not None and c not in codes.codes:
        return None
    return c if len(c) <= 3 else f"{c[:3]}.{c[3:]}"


@lru_cache(maxsize=1)
def icd10_codes() -> Icd10Codes:
    """The process-wide ICD-10-CM code set (loaded on first use, ~0.2 s)."""
    return Icd10Codes.load()


@lru_cache(maxsize=1)
def who_icd10_codes() -> frozenset[str]:
    """WHO ICD-10 (2019) categories and subcategories, undotted upper case (``simple-icd-10``'s data,
    read on first use: ~0.1 s)."""
    spec = importlib.util.find_spec("simple_icd_10")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("simple-icd-10 is not installed")
    xml = Path(next(iter(spec.submodule_search_locations))) / "data" / "icd_10_v2019.xml"
    names = re.findall(r'<item type="(?:sub)?category">\s*<name>([^<]+)</name>', xml.read_text("utf-8-sig"))
    return frozenset(_undot10(n) for n in names)


@lru_cache(maxsize=1)
def _who_parents() -> frozenset[str]:
    """WHO ICD-10 codes that have subcodes (E11: E11.0 ... E11.9)."""
    return frozenset(c[:n] for c in who_icd10_codes() for n in range(3, len(c)))


def canonical_who_icd10(code: str) -> str | None:
    """Dotted upper-case WHO ICD-10 code, or None when malformed / not in the classification."""
    c = _undot10(code)
    if _dot_misplaced(code) or not _ICD10_SHAPE.match(c) or c not in who_icd10_codes():
        return None
    return c if len(c) <= 3 else f"{c[:3]}.{c[3:]}"


ICD10_INVALID, ICD10_NOT_BILLABLE = "ICD10_INVALID", "ICD10_NOT_BILLABLE"


def check_icd10(
    code: str, icd10: Icd10Codes, *, who: bool = False
) -> tuple[str | None, tuple[str, str] | None]:
    """(dotted code or None, (issue code, problem) or None) of an ICD-10 code sent under an ICD-10-CM URI,
    or under a WHO ICD-10 URI (``who``: WHO-only codes are valid too). Shared by the FHIR and flat paths
    and applied to mapped targets, so a code gets the same checks however it arrives.

    Not in the set (or a misplaced dot): ICD10_INVALID, not stored as ``icd10_code``. A category with
    subcodes or a code lacking its 7th character: stored (counts by category still see it) and flagged
    ICD10_NOT_BILLABLE; under a WHO URI a code complete in WHO ICD-10 (M54.5) is not flagged.
    """
    canon = canonical_icd10(code, icd10)
    in_cm = canon is not None
    if canon is None and who:
        canon = canonical_who_icd10(code)
    if canon is None:
        problem = (
            "has a dot that is not after its 3rd character (E11.9): not read as a code"
            if _dot_misplaced(code) and _ICD10_SHAPE.match(_undot10(code))
            else f"is not in ICD-10-CM ({icd10.release})" + (" or WHO ICD-10 (2019)" if who else "")
        )
        return None, (ICD10_INVALID, problem)
    bare = _undot10(canon)
    if who and bare in who_icd10_codes():
        if bare not in _who_parents():
            return canon, None  # complete in WHO ICD-10
        if not in_cm:
            return canon, (ICD10_NOT_BILLABLE, "is a WHO ICD-10 category with subcodes: not a complete code")
    why = icd10.not_billable_reason(bare) if in_cm else None
    if why is None:
        return canon, None
    return canon, (ICD10_NOT_BILLABLE, f"{why}: not a reportable ICD-10-CM ({icd10.release}) code")


# ---------------------------------------------------------------- ICD-9-CM
_ICD9 = re.compile(r"^(?:(\d{3})(?:\.(\d{1,2}))?|(V\d{2})(?:\.(\d{1,2}))?|(E\d{3})(?:\.(\d))?)$")
_ICD9_UNDOTTED = re.compile(r"^(?:\d{3,5}|V\d{2,4}|E\d{3,4})$")


def is_icd9_format(code: str) -> bool:
    """ICD-9-CM diagnosis code shape: ``ddd[.d[d]]``, ``Vdd[.d[d]]`` or ``Eddd[.d]`` (dotted or undotted)."""
    return canonical_icd9(code) is not None


def canonical_icd9(code: str) -> str | None:
    """Dotted upper-case ICD-9-CM (``25001`` → ``250.01``, ``v4581`` → ``V45.81``) or None.

    Numeric codes with fewer than 3 digits before the dot are zero-padded (``38`` → ``038``), as
    exported spreadsheets (e.g. the Diabetes 130 data) drop the leading zeros.
    """
    c = code.strip().upper()
    head, dot, tail = c.partition(".")
    if head.isdigit() and 1 <= len(head) < 3:  # spreadsheets drop leading zeros: "38" is 038
        c = head.zfill(3) + dot + tail
    if _ICD9.match(c):
        return c
    if _ICD9_UNDOTTED.match(c):
        head = 4 if c[0] == "E" else 3
        return c if len(c) == head else f"{c[:head]}.{c[head:]}"
    return None


# ---------------------------------------------------------------- LOINC
_LOINC = re.compile(r"^(\d{1,7})-(\d)$")


def loinc_check_digit(body: str) -> int:
    """LOINC mod-10 check digit of the part before the hyphen (LOINC Users' Guide, appendix).

    Starting from the rightmost digit, every other digit (1st, 3rd, ...) is doubled and the doubled
    numbers are written out; all resulting digits plus the non-doubled digits are summed; the check
    digit brings the sum up to the next multiple of 10.
    """
    if not body.isdigit():
        raise ValueError("LOINC code body must be digits")
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            total += d // 10 + d % 10
        else:
            total += d
    return (10 - total % 10) % 10


def loinc_shaped(code: str) -> bool:
    """LOINC's form, NNNNN-N, whatever its check digit."""
    return _LOINC.match(code.strip()) is not None


@lru_cache(maxsize=8192)
def loinc_valid(code: str) -> bool:
    m = _LOINC.match(code.strip())
    return bool(m) and loinc_check_digit(m.group(1)) == int(m.group(2))


# ---------------------------------------------------------------- SNOMED CT
_SCTID = re.compile(r"^[1-9]\d{5,17}$")
_SCT_PARTITIONS = frozenset({"00", "01", "02", "03", "04", "05", "10", "11", "12", "13", "14", "15"})


@lru_cache(maxsize=8192)
def snomed_valid(code: str) -> bool:
    """An SCTID: 6-18 digits, no leading zero, a known partition identifier, the Verhoeff check digit."""
    from healthai.normalize.redact import verhoeff_valid  # redact imports this module

    c = code.strip()
    return bool(_SCTID.match(c)) and c[-3:-1] in _SCT_PARTITIONS and verhoeff_valid(c)


# ---------------------------------------------------------------- is the text a code at all?
# Text that has not even the syntax of a code of its system (an SSN under ICD-10-CM, a name typed into
# the code) is never stored; a well-shaped code that is not valid (check digit, not in the code set) is
# stored and flagged.
_ICD10_LOOSE = re.compile(r"[A-Z][0-9A-Z]{2,6}")
_ICD9_SHAPE = re.compile(r"[0-9VE]\d{0,4}(?:\.\d{0,3})?")
_SNOMED_SHAPE = re.compile(r"\d{1,18}")
_LOINC_OTHER = re.compile(r"L[A-Z]\d{1,8}-\d")  # LOINC answer (LA11882-0), part (LP...) and group codes
_LOCAL_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/\-]{0,39}")  # one token: no space, @, parentheses
_PERSONAL = re.compile(
    r"\d{3}-\d{2}-\d{4}"  # a US SSN
    r"|\+?\d{0,3}[-.]?\d{3}[-.]\d{3}[-.]\d{4}"  # a phone number
    r"|[A-Z][a-z]+(?:[-_.][A-Z][a-z]+)+"  # capitalised words: a (double) name
)
_HTTP_SYSTEM = re.compile(
    r"https?://[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?(?::\d{1,5})?(?:/[A-Za-z0-9._~%!$&'()*+,;=:/\-]*)?",
    re.IGNORECASE,
)  # no user info (name@host), query or fragment
_URN_SYSTEM = re.compile(r"urn:[a-z0-9][a-z0-9\-]{0,31}:[A-Za-z0-9()+,\-.:=;$_!*'%/]+", re.IGNORECASE)
_SYSTEM_NAME = re.compile(r"[A-Z][A-Z0-9_.\-]{0,15}")  # LOCAL, CPT, ICD10PCS


def shaped(name: str, code: str) -> bool:
    """Whether ``code`` has the syntax of a code of system ``name`` (ICD10CM, ICD9CM, SNOMED, LOINC; any
    other: :func:`local_code_shaped`), valid or not."""
    c = code.strip().upper()
    if name == ICD10CM:  # loose: XX9 is kept (not in the set, flagged); never without a digit (a name)
        bare = c.replace(".", "")  # a misplaced dot (J10.1.) is a code, flagged, not free text
        return _ICD10_LOOSE.fullmatch(bare) is not None and any(ch.isdigit() for ch in bare)
    if name == ICD9CM:
        return _ICD9_SHAPE.fullmatch(c) is not None
    if name == SNOMED:
        return _SNOMED_SHAPE.fullmatch(c) is not None
    if name == LOINC:
        return loinc_shaped(c) or _LOINC_OTHER.fullmatch(c) is not None
    return local_code_shaped(code)


def local_code_shaped(code: str) -> bool:
    """A code of a system we do not know: one token of at most 40 letters, digits and ``. _ : / -``, not
    shaped like an SSN, a phone number or a hyphenated name (a single word cannot be told from a code)."""
    c = code.strip()
    return _LOCAL_CODE.fullmatch(c) is not None and _PERSONAL.fullmatch(c) is None


def system_text_ok(system: str) -> bool:
    """A code system's text that may be stored: an http(s) URL without user info, query or fragment, a
    URN (``urn:oid:1.2.3``), or an upper-case system name (``LOCAL``); other text may be an e-mail or a
    name."""
    s = system.strip()
    return len(s) <= 255 and any(p.fullmatch(s) for p in (_HTTP_SYSTEM, _URN_SYSTEM, _SYSTEM_NAME))
