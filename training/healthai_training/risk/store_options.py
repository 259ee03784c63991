"""Options of a store cohort (``risk.store_cohort``), importable without pandas or torch (the CLI)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

OUTCOMES = ("readmission30",)
INDEX_ENCOUNTERS = ("inpatient", "any")
PER_PATIENT = ("all", "first", "last", "random")


@dataclass(frozen=True)
class StoreCohortOptions:
    outcome: str = "readmission30"
    index_encounter: str = "inpatient"
    per_patient: str = "all"
    window_days: int = 30
    min_age: float = 18.0
    data_end: dt.datetime | None = None  # default: per source, its latest stored admission/discharge
    seed: int = 0
    name: str | None = None  # cohort name; default store_<outcome>_<index_encounter>
    # measurements / Charlson stored for fewer patients than this are left out of the spec (listed
    # in the report); 0 keeps every feature (federated sites must agree on one feature set)
    min_measured: int = 10
