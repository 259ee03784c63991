"""What a stored condition lacks, from the rest of the store: its patient's region, its encounter's date.

Normalization takes a condition's region from the Patient in the same payload. A FHIR bulk export
(one NDJSON file per resource type) or a feed that sends a Condition on its own stores conditions
whose Patient and Encounter came in other payloads: such a row has no region, and an encounter
diagnosis with neither onset nor recorded date (MIMIC-IV on FHIR writes them so) has no date. The
keyed pseudonyms are the same in every payload, so the stored patient and encounter rows supply
both, whatever order the payloads came in:

- region: the condition's own, else its patient's stored region, else its encounter's;
- day: onset, else recorded, else its encounter's start (UTC date).

Each patient and encounter part file is read once, and only when some condition needs it.
When a patient was stored more than once, the latest row with a region wins.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from healthai.store import ParquetStore

PATIENT_KIND, ENCOUNTER_KIND = "patient", "encounter"


def utc_days(values: pa.ChunkedArray | pa.Array | list) -> pd.Series:
    """Timestamps → naive midnight-UTC days (NaT where missing)."""
    days = pd.to_datetime(pd.Series(values.to_pylist() if hasattr(values, "to_pylist") else values,
                                    dtype="object"), utc=True)
    return days.dt.tz_localize(None).dt.normalize()


class StoredLinks:
    """Pseudonymous patient id → region and encounter id → (region, start day), read incrementally."""

    def __init__(self, store: ParquetStore) -> None:
        self.store = store
        self._read: set[str] = set()
        self.patient_region = pd.Series(dtype="object")
        self.encounter_region = pd.Series(dtype="object")
        self.encounter_day = pd.Series(dtype="datetime64[ns]")

    def refresh(self) -> None:
        """Read the patient and encounter files committed since the last call."""
        for kind in (PATIENT_KIND, ENCOUNTER_KIND):
            new = [f for f in self.store.files(kind) if f not in self._read]
            if not new:
                continue
            columns = ["resource_id", "region"] + (["start"] if kind == ENCOUNTER_KIND else [])
            table = self.store.read_files(new, columns=columns)
            ids = pd.Series(table["resource_id"].to_pylist(), dtype="object")
            regions = pd.Series(table["region"].to_pylist(), index=ids, dtype="object").dropna()
            if kind == PATIENT_KIND:
                self.patient_region = _updated(self.patient_region, regions)
            else:
                self.encounter_region = _updated(self.encounter_region, regions)
                days = pd.Series(utc_days(table["start"]).to_numpy(), index=ids).dropna()
                self.encounter_day = _updated(self.encounter_day, days)
            self._read.update(new)

    def fill(self, cases: pd.DataFrame) -> pd.DataFrame:
        """``cases`` (patient_id, encounter_id, region, day) with missing regions and days filled."""
        region = cases["region"].fillna(_lookup(self.patient_region, cases["patient_id"]))
        region = region.fillna(_lookup(self.encounter_region, cases["encounter_id"]))
        day = pd.to_datetime(cases["day"]).fillna(_lookup(self.encounter_day, cases["encounter_id"]))
        return cases.assign(region=region, day=day)


def _lookup(known: pd.Series, keys: pd.Series) -> pd.Series:
    """``known[key]`` for each key (missing where unknown), aligned with ``keys``."""
    return pd.Series(known.reindex(keys.to_numpy()).to_numpy(), index=keys.index)


def _updated(known: pd.Series, new: pd.Series) -> pd.Series:
    """``known`` with ``new``'s entries added or replacing (the later row of an id wins)."""
    merged = pd.concat([known, new]) if len(known) else new
    return merged[~merged.index.duplicated(keep="last")]
