"""The store-wide birth-date guard: no stored event date equals a patient's full birth date.

Patients are stored with their birth date cut to year-month. The full date is kept only as a keyed
token, column ``birth_date_token`` of the patient row: ``HMAC-SHA-256(pseudonym key,
"healthai-birth-date|<patient pseudonym>|<YYYY-MM-DD>")`` (first 128 bits, hex). Without the key the
token reveals nothing (it cannot even be checked against a guessed day); with the key, a day can be
confirmed by trying the ≤ 31 days of the stored month, which is no more than the key already allows
(it recomputes pseudonyms from known identifiers). Only patients whose day was sent get a token.

The store calls the guard inside its commit (after catching up on every other writer's commits, before
claiming the sequence), so an event is checked against every Patient committed before it — in the
same payload or an earlier one, by this process or another replica on the same store, from FHIR, flat
records, Arrow or Kafka alike. An event date (UTC day) equal to the birth date is cut to the first day
of the birth month (the second when the birth date is the first); ``CommitResult.generalized`` names
the records, which get a DATE_GENERALIZED warning.

A Patient committed *after* its events cannot un-write them: the event files are immutable. For that
case the guard also runs when rows are read through the store (``ParquetStore.read``: surveillance,
features, exports), so no date equal to a birth date leaves the service; the Parquet files themselves
keep such a date until re-ingested, which the README states.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from healthai.normalize.dates import EVENT_COLUMNS
from healthai.normalize.identity import Pseudonymizer
from healthai.normalize.records import PATIENT

TOKEN_COLUMN = "birth_date_token"
WATCH = {PATIENT: ("patient_id", "birth_year", "birth_month", TOKEN_COLUMN)}


def birth_token(ps: Pseudonymizer, patient_id: str, birth: dt.date) -> str:
    """The keyed token of a patient's full birth date (see the module docstring)."""
    return ps.keyed_digest(f"healthai-birth-date|{patient_id}|{birth.isoformat()}")[:16].hex()


def tokens(ps: Pseudonymizer, patient_ids: pa.Array, births: pa.Array,
           has_day: pa.Array | None = None) -> pa.Array:
    """Tokens of a column of birth timestamps (UTC); null where the birth date or its day is unknown."""
    pids = patient_ids.to_pylist()
    days = pc.cast(births, pa.date32()).to_pylist()
    full = [True] * len(pids) if has_day is None else pc.fill_null(has_day, False).to_pylist()
    return pa.array([birth_token(ps, p, d) if p and d and f else None
                     for p, d, f in zip(pids, days, full, strict=True)], pa.string())


class BirthDateGuard:
    """Per-patient (birth year, month, token) of every stored patient; generalizes event dates."""

    watch = WATCH
    read_needs = ("patient_id",)

    def __init__(self, ps: Pseudonymizer) -> None:
        self._ps = ps
        self._births: dict[str, tuple[int, int, str]] = {}

    def __len__(self) -> int:
        return len(self._births)

    def observe(self, kind: str, table: pa.Table) -> None:
        """Learn from committed patient rows (first row of a patient wins, as in the store)."""
        if kind != PATIENT or TOKEN_COLUMN not in table.column_names:
            return
        self._learn(self._births, table)

    def apply(self, tables: Mapping[str, pa.Table]) -> tuple[dict[str, pa.Table], dict[str, list[str]]]:
        """Tables to commit with event dates generalized, and the resource ids changed per kind.

        Patients of the same commit count too (without being learnt: the store calls ``observe`` with
        the rows it really stored)."""
        known = self._births
        patients = tables.get(PATIENT)
        if patients is not None and TOKEN_COLUMN in patients.column_names and patients.num_rows:
            known = dict(self._births)
            self._learn(known, patients)
        out = dict(tables)
        changed: dict[str, list[str]] = {}
        for kind in EVENT_COLUMNS:
            table = tables.get(kind)
            if table is not None and table.num_rows and known:
                out[kind], ids = self._generalize(table, kind, known)
                if ids:
                    changed[kind] = ids
        return out, changed

    def apply_read(self, kind: str, table: pa.Table) -> pa.Table:
        """Rows read from the store with the guard applied (events stored before their Patient)."""
        if (kind not in EVENT_COLUMNS or not table.num_rows or not self._births
                or "patient_id" not in table.column_names):
            return table
        return self._generalize(table, kind, self._births)[0]

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _learn(into: dict[str, tuple[int, int, str]], table: pa.Table) -> None:
        cols = [table[c].to_pylist() for c in WATCH[PATIENT]]
        for pid, year, month, token in zip(*cols, strict=True):
            if pid and token and year and month and pid not in into:
                into[pid] = (int(year), int(month), token)

    def _generalize(self, table: pa.Table, kind: str, known: dict[str, tuple[int, int, str]]
                    ) -> tuple[pa.Table, list[str]]:
        pids = table["patient_id"]
        uniq = [p for p in pc.unique(pids).to_pylist() if p in known]
        if not uniq:  # the common case: none of these patients has a stored full birth date
            return table, []
        idx = pc.index_in(pids, value_set=pa.array(uniq, pa.string()))
        year = pc.take(pa.array([known[p][0] for p in uniq], pa.int32()), idx)
        month = pc.take(pa.array([known[p][1] for p in uniq], pa.int32()), idx)
        changed: set[int] = set()
        for name in EVENT_COLUMNS[kind]:
            if name not in table.column_names:
                continue
            col = table[name]
            same = pc.and_(pc.equal(pc.year(col), year), pc.equal(pc.month(col), month))
            rows = np.flatnonzero(pc.fill_null(same, False).to_numpy(zero_copy_only=False))
            if not len(rows):
                continue
            values = col.to_pylist()
            hit = False
            for i in rows.tolist():
                day = values[i].date()
                if birth_token(self._ps, pids[i].as_py(), day) == known[pids[i].as_py()][2]:
                    values[i] = dt.datetime(day.year, day.month, 2 if day.day == 1 else 1, tzinfo=dt.UTC)
                    changed.add(i)
                    hit = True
            if hit:
                table = table.set_column(table.schema.get_field_index(name), name,
                                         pa.array(values, table.schema.field(name).type))
        if not changed or "resource_id" not in table.column_names:
            return table, []
        rids = table["resource_id"]
        return table, sorted({rids[i].as_py() for i in changed})
