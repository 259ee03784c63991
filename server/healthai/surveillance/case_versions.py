"""The surveillance cases of stored records as the store now holds them: latest versions, latest links.

:class:`healthai.surveillance.counts.SurveillanceCounts` reads each committed part file once and keeps
the matching cases. Three things can change a case read before (:mod:`healthai.store.versions`):

- its record is stored again with other content (a Condition re-sent as ``entered-in-error``): the
  cases read from every earlier version are withdrawn, and the latest version's case, if it still is
  one, counts. A case that comes back unchanged (same patient, place and day: say only its
  ``clinicalStatus`` changed) keeps the day it was first reported, so the nowcast does not take an
  update for a late report;
- the Patient or Encounter that supplied its place or day (a case stored without them: bulk exports)
  is stored in a new version: such cases are filled again from the latest links, so a reader that has
  run for weeks and one started now count the same;
- files are read in commit order (runs of files of one ingest day), so the latest version is the one
  committed last, also when replicas' clocks straddle midnight.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from healthai.normalize.records import SCHEMAS
from healthai.store import ParquetStore
from healthai.store.versions import latest_rows, record_keys

KEYS = ["source", "record_key"]  # a stored record's key: a later version replaces its cases
OWN = ["own_place", "own_day"]  # the record's own place and day (null: taken from the links)
INTERNAL = ["encounter_id", "key", *OWN]  # columns of the kept cases that callers never see
LINKED_KINDS = ("patient", "encounter")
_INGEST_DATE = re.compile(r"ingest_date=(\d{4}-\d{2}-\d{2})")  # a part file's folder: the day it was stored


def read_cases(store: ParquetStore, paths: list[str], kind: str, columns: list[str],
               extract: Callable[[pa.Table], pd.DataFrame], replaced: set[str]) -> pd.DataFrame | None:
    """The cases of the part files ``paths`` (in commit order), each with its file's ingest day
    (``reported``), its record's ``key`` and its own place and day. When the store holds later versions
    of some records of ``kind``, only each record's latest version in these files counts, and every key
    they hold is added to ``replaced`` (its cases read before are withdrawn)."""
    if not paths:
        return None
    runs: list[tuple[str, list[str]]] = []  # consecutive files of one ingest day, in commit order
    for path in paths:
        match = _INGEST_DATE.search(path)
        day = match[1] if match else ""
        if runs and runs[-1][0] == day:
            runs[-1][1].append(path)
        else:
            runs.append((day, [path]))
    tables = []
    for day, group in runs:
        table = store.read_files(group, columns + KEYS, SCHEMAS[kind])
        stamp = pa.scalar(pd.Timestamp(day) if day else None, pa.timestamp("ns"))
        tables.append(table.append_column("reported", pa.repeat(stamp, table.num_rows)))
    table = pa.concat_tables(tables, promote_options="permissive")
    table = table.append_column("key", pc.binary_join_element_wise(kind, record_keys(table), "\x1f"))
    earlier = None
    if store.superseded(kind):
        replaced.update(table["key"].to_pylist())
        latest = latest_rows(table)
        if latest.num_rows < table.num_rows:  # versions among these files: their first reports count
            earlier, table = extract(table), latest
    found = extract(table)
    if earlier is not None:
        found = keep_first_report(found, earlier)
    return found.assign(own_place=found["place"], own_day=found["day"]) if len(found) else None


def links_changed(store: ParquetStore) -> int:
    """A number that grows whenever a Patient or Encounter is stored in a new version."""
    return sum(store.superseded(kind) for kind in LINKED_KINDS)


def withdraw(cases: pd.DataFrame, pending: pd.DataFrame, replaced: set[str]
             ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``cases`` and ``pending`` without the rows of ``replaced`` records, and the counted ones taken out."""
    out = cases["key"].isin(replaced)
    return cases[~out], pending[~pending["key"].isin(replaced)], cases[out]


def unlink(cases: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(cases that stay, cases to fill again): those whose place or day came from the links go back to
    their own place and day."""
    linked = cases["own_place"].isna() | cases["own_day"].isna()
    again = cases[linked]
    again = again.assign(place=again["own_place"], day=again["own_day"])
    return cases[~linked], again


def keep_first_report(new: pd.DataFrame, withdrawn: pd.DataFrame,
                      same: Sequence[str] = ("key", "patient_id", "place", "day")) -> pd.DataFrame:
    """``new`` cases with the earlier ``reported`` day of a withdrawn case of the same record, patient,
    place and day: an update that leaves the case as it was is not a new report."""
    if not len(withdrawn) or not len(new):
        return new
    def keyed(frame: pd.DataFrame) -> pd.DataFrame:  # one text column per key part (a missing one: "")
        parts = [frame[c].astype("datetime64[ns]").astype(str) if c == "day" else frame[c] for c in same]
        text = [p.astype(object).where(p.notna(), "").astype(str) for p in parts]
        return pd.DataFrame({"match": pd.Series(["\x1f".join(t) for t in zip(*text, strict=True)],
                                                index=frame.index, dtype=object),
                             "reported": frame["reported"]})

    first = keyed(withdrawn).groupby("match")["reported"].min().rename("first_reported")
    merged = keyed(new).join(first, on="match")
    earlier = merged["first_reported"].notna() & (merged["first_reported"] < merged["reported"])
    return new.assign(reported=merged["first_reported"].where(earlier, merged["reported"]))
