"""What a stored condition lacks, from the rest of the store: its patient's region, its encounter's date.

Normalization takes a condition's region from the Patient in the same payload. A FHIR bulk export
(one NDJSON file per resource type) or a feed that sends a Condition on its own stores conditions
whose Patient and Encounter came in other payloads: such a row has no region, and an encounter
diagnosis with neither onset nor recorded date (MIMIC-IV on FHIR writes them so) has no date. The
keyed pseudonyms are the same in every payload, so the stored patient and encounter rows supply
both, whatever order the payloads came in:

- patient: a record whose subject was a conditional reference ``Patient?identifier=system|value``
  that its payload could not resolve carries the keyed pseudonym of that identifier
  (:meth:`healthai.normalize.fhir_resources.Rec.linked_id`), the value every stored Patient keeps in
  ``identifier_pseudonyms``: it is replaced by the pseudonym of the stored Patient carrying that
  identifier (the latest stored, when several do), so it is counted as that patient;
- place (region, or US county): the condition's own, else its patient's stored one, else its
  encounter's;
- day: onset, else recorded, else its encounter's start (the local date: :func:`event_days`).

Each patient and encounter part file is read once, and only when some condition needs it.
When a patient was stored more than once, the latest row with a region wins.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from healthai.normalize.records import OFFSET_SUFFIX, SCHEMAS
from healthai.store import ParquetStore

PATIENT_KIND, ENCOUNTER_KIND = "patient", "encounter"
LEVELS = ("region", "county")  # where a case is counted: ISO 3166-2 region, or US county (FIPS)
START_OFFSET = "start" + OFFSET_SUFFIX


def event_days(times: pa.ChunkedArray | pa.Array | list,
               offsets: pa.ChunkedArray | pa.Array | None = None) -> pd.Series:
    """UTC timestamps → the local dates they were written on (UTC time plus ``offsets``, the UTC offsets
    in minutes, where known; the UTC date elsewhere), as naive midnights (NaT where missing)."""
    days = pd.to_datetime(pd.Series(times.to_pylist() if hasattr(times, "to_pylist") else times,
                                    dtype="object"), utc=True).dt.tz_localize(None)
    if offsets is not None:
        minutes = pd.Series(offsets.to_pylist(), dtype="float64").fillna(0).to_numpy()
        days = days + pd.to_timedelta(minutes, unit="min")
    return days.dt.normalize()


class StoredLinks:
    """Pseudonymous patient id → place and encounter id → (place, start day), read incrementally; a
    place is a region (ISO 3166-2) or a US county (FIPS), one map per level."""

    def __init__(self, store: ParquetStore) -> None:
        self.store = store
        self._read: set[str] = set()
        self.patient_place = {level: pd.Series(dtype="object") for level in LEVELS}
        self.encounter_place = {level: pd.Series(dtype="object") for level in LEVELS}
        self.encounter_day = pd.Series(dtype="datetime64[ns]")
        self.patient_birth = pd.Series(dtype="float64")  # birth year * 12 + month - 1 (month unknown: June)
        self.patient_by_identifier = pd.Series(dtype="object")  # identifier pseudonym -> patient pseudonym

    def refresh(self) -> None:
        """Read the patient and encounter files committed since the last call."""
        for kind in (PATIENT_KIND, ENCOUNTER_KIND):
            new = [f for f in self.store.files(kind) if f not in self._read]
            if not new:
                continue
            columns = ["resource_id", *LEVELS] + (["start", START_OFFSET] if kind == ENCOUNTER_KIND else
                                                  ["birth_year", "birth_month", "identifier_pseudonyms"])
            table = self.store.read_files(new, columns=columns, schema=SCHEMAS[kind])
            ids = pd.Series(table["resource_id"].to_pylist(), dtype="object")
            places = self.patient_place if kind == PATIENT_KIND else self.encounter_place
            for level in LEVELS:
                found = pd.Series(table[level].to_pylist(), index=ids, dtype="object").dropna()
                places[level] = _updated(places[level], found)
            if kind == PATIENT_KIND:
                year = pd.Series(table["birth_year"].to_pylist(), index=ids, dtype="float64")
                month = pd.Series(table["birth_month"].to_pylist(), index=ids, dtype="float64").fillna(6)
                self.patient_birth = _updated(self.patient_birth, (year * 12 + month - 1).dropna())
                idents = pd.Series(table["identifier_pseudonyms"].to_pylist(), index=ids, dtype="object")
                idents = idents.explode().dropna()
                self.patient_by_identifier = _updated(
                    self.patient_by_identifier, pd.Series(idents.index.to_numpy(), index=idents.to_numpy()))
            if kind == ENCOUNTER_KIND:
                days = event_days(table["start"], table[START_OFFSET])
                days = pd.Series(days.to_numpy(), index=ids).dropna()
                self.encounter_day = _updated(self.encounter_day, days)
            self._read.update(new)

    def fill(self, cases: pd.DataFrame, level: str = "region") -> pd.DataFrame:
        """``cases`` (patient_id, encounter_id, place, day) with patients linked by identifier, and
        missing places (of ``level``) and days filled."""
        patient = lookup(self.patient_by_identifier, cases["patient_id"]).fillna(cases["patient_id"])
        cases = cases.assign(patient_id=patient)
        place = cases["place"].fillna(lookup(self.patient_place[level], cases["patient_id"]))
        place = place.fillna(lookup(self.encounter_place[level], cases["encounter_id"]))
        day = pd.to_datetime(cases["day"]).fillna(lookup(self.encounter_day, cases["encounter_id"]))
        return cases.assign(place=place, day=day)


def lookup(known: pd.Series, keys: pd.Series) -> pd.Series:
    """``known[key]`` for each key (missing where unknown), aligned with ``keys``."""
    return pd.Series(known.reindex(keys.to_numpy()).to_numpy(), index=keys.index)


def _updated(known: pd.Series, new: pd.Series) -> pd.Series:
    """``known`` with ``new``'s entries added or replacing (the later row of an id wins)."""
    merged = pd.concat([known, new]) if len(known) else new
    return merged[~merged.index.duplicated(keep="last")]
