"""Everything normalization needs, built once at start-up and shared (read-only) by all calls."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from healthai.normalize import codes, counties
from healthai.normalize.codes import Icd10Codes, icd10_codes
from healthai.normalize.dates import DatePolicy
from healthai.normalize.identity import Pseudonymizer
from healthai.normalize.maps import SnomedIcd10Map
from healthai.normalize.subdivisions import load_tables

log = logging.getLogger(__name__)


@dataclass(slots=True)
class NormalizeContext:
    """Shared normalization state.

    - ``pseudonymizer``: keyed HMAC pseudonyms (the service loads the key from a file or env).
    - ``snomed_map``: optional SNOMED CT ↔ ICD-10-CM map; without it SNOMED-only conditions are kept
      and flagged CODE_UNMAPPED, and Charlson is reported unavailable for their patients.
    - ``icd10``: the ICD-10-CM code set (default: the April 2026 release of simple-icd-10-cm).
    - ``reference_date``: "today" for plausibility checks (no birth or event after it, plus
      ``future_tolerance``); None means the current UTC date at each call. Tests pin it.
    - ``min_birth_year``: earlier birth years are impossible.
    - ``strict_fhir``: also validate every FHIR resource against the full ``fhir.resources`` R4B
      model (about 3 MB/s instead of the selective path's speed); any error rejects the resource.
    - ``date_policy``: ``full`` (dates as sent; default) or ``shift`` (a keyed per-patient offset);
      under both, no stored event date equals a full birth date (:mod:`healthai.normalize.dates`).
    - ``code_systems``: a sender's own system URIs declared as ICD10CM, ICD9CM, SNOMED or LOINC, on
      top of the standard URIs and the generator aliases in ``codes.SYSTEM_NAMES``.
    """

    pseudonymizer: Pseudonymizer
    snomed_map: SnomedIcd10Map | None = None
    icd10: Icd10Codes = field(default_factory=icd10_codes)
    reference_date: dt.date | None = None
    future_tolerance: dt.timedelta = dt.timedelta(days=1)
    min_birth_year: int = 1880
    strict_fhir: bool = False
    date_policy: DatePolicy = DatePolicy.FULL
    code_systems: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        *,
        key: bytes | None = None,
        key_file: str | Path | None = None,
        snomed_map_nlm: str | Path | None = None,
        omop_concept: str | Path | None = None,
        omop_relationship: str | Path | None = None,
        reference_date: dt.date | None = None,
        strict_fhir: bool = False,
        date_policy: str = DatePolicy.FULL,
        code_systems: Mapping[str, str] | None = None,
    ) -> NormalizeContext:
        """Build from settings: a key (bytes or file) and optionally one map (NLM or OMOP pair)."""
        if (key is None) == (key_file is None):
            raise ValueError("give exactly one of key or key_file")
        pseudo = Pseudonymizer(key) if key is not None else Pseudonymizer.from_file(key_file)  # type: ignore[arg-type]
        smap = None
        if snomed_map_nlm is not None:
            smap = SnomedIcd10Map.load_nlm(snomed_map_nlm)
        elif omop_concept is not None or omop_relationship is not None:
            if omop_concept is None or omop_relationship is None:
                raise ValueError("OMOP map needs both CONCEPT and CONCEPT_RELATIONSHIP files")
            smap = SnomedIcd10Map.load_omop(omop_concept, omop_relationship)
        if smap is not None:
            log.info("SNOMED CT <-> ICD-10-CM map %s: %d SNOMED CT concepts (read at start-up; a changed "
                     "file is read on the next start)", smap.name, len(smap))
        aliases = dict(code_systems or {})
        for uri, name in aliases.items():
            if name not in codes.ALIAS_TARGETS:
                known = ", ".join(codes.ALIAS_TARGETS)
                raise ValueError(f"code system {uri!r}: {name!r} is not one of {known}")
        load_tables()  # ISO 3166-2 tables for non-US addresses: loaded here, not on a request
        counties.load_tables()  # and the US county names and ZIP codes
        return cls(
            pseudonymizer=pseudo,
            snomed_map=smap,
            reference_date=reference_date,
            strict_fhir=strict_fhir,
            date_policy=DatePolicy(date_policy),
            code_systems=aliases,
        )

    def system_name(self, uri: object) -> str:
        """Short name of a coding's system URI: the operator's declarations first, then the built-in table."""
        declared = self.code_systems.get(uri) if isinstance(uri, str) else None
        return declared or codes.system_name(uri)

    def today(self) -> dt.date:
        return self.reference_date or dt.datetime.now(dt.UTC).date()

    def future_hint(self) -> str:
        """Said with every 'in the future' rejection: the limit, and the setting that moves it."""
        return (f" (after {self.latest_allowed().date()}; a date-shifted extract needs the server "
                "setting latest_event_date)")

    def latest_allowed(self) -> dt.datetime:
        """Events after this instant are impossible (clock skew tolerated by ``future_tolerance``)."""
        day = self.today()
        return (
            dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
            + dt.timedelta(days=1)
            + self.future_tolerance
        )
