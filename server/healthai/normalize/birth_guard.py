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
records, Arrow or Kafka alike. An event date equal to the birth date (its UTC day, or its day as
written when its ``<name>_utc_offset_min`` is known) is cut to the first day of the birth month (the
second when the birth date is the first); ``CommitResult.generalized`` names the records, which get a
DATE_GENERALIZED warning.

A Patient committed *after* its events: the guard remembers, per patient without a known birth date,
the part files holding their events ("orphans", learnt from every commit, this process's or caught
up, and at ``open``). The commit that first stores the Patient's token also rewrites those files with
the dates generalized (same rows and keys; the commit log promotes the rewrite over the file, so
replicas and a crash roll it forward like any commit). ``ParquetStore.read`` applies the guard as
well, which also covers files written before this guard existed.

A Patient stored again with another birth date (a correction: a new version, see
:mod:`healthai.store.versions`) guards the events stored from then on, and ``ParquetStore.read``; events
stored earlier on the corrected date are not rewritten in their files (the guard keeps files only for
patients whose birth date it has not seen).
"""

from __future__ import annotations

import datetime as dt
from collections import ChainMap
from collections.abc import Callable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from healthai.normalize.dates import EVENT_COLUMNS, local_dates
from healthai.normalize.identity import Pseudonymizer
from healthai.normalize.records import OFFSET_SUFFIX, PATIENT

TOKEN_COLUMN = "birth_date_token"
WATCH = {PATIENT: ("patient_id", "birth_year", "birth_month", TOKEN_COLUMN),
         **{kind: ("patient_id",) for kind in EVENT_COLUMNS}}


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
        # patient -> id(s) of files with events stored before: an int for one file (most patients; no
        # GC-tracked set per patient), a set from the second
        self._orphans: dict[str, int | set[int]] = {}
        self._files: list[str] = []  # file id -> path relative to the store root
        self._file_ids: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._births)

    def observe(self, kind: str, table: pa.Table, path: str) -> None:
        """Committed rows (in commit order): learn patients' tokens (the latest version wins, as in the
        store's reads), note event files of patients whose birth date is not known yet."""
        if kind == PATIENT and TOKEN_COLUMN in table.column_names:
            for pid in self._learn(self._births, table):
                self._orphans.pop(pid, None)  # whoever stored the token rewrote those files
        elif kind in EVENT_COLUMNS and "patient_id" in table.column_names and table.num_rows:
            births = self._births
            unknown = [p for p in pc.unique(table["patient_id"]).to_pylist() if p and p not in births]
            if unknown:
                fid = self._file_ids.setdefault(path, len(self._files))
                if fid == len(self._files):
                    self._files.append(path)
                orphans = self._orphans
                if orphans.keys().isdisjoint(unknown):  # the common case, in C
                    orphans.update(dict.fromkeys(unknown, fid))
                    return
                for p in unknown:
                    had = orphans.setdefault(p, fid)
                    if isinstance(had, set):
                        had.add(fid)
                    elif had != fid:
                        orphans[p] = {had, fid}

    def apply(self, tables: Mapping[str, pa.Table], read: Callable[[str], pa.Table]
              ) -> tuple[dict[str, pa.Table], dict[str, list[str]], dict[str, pa.Table]]:
        """Tables to commit with event dates generalized, the resource ids changed per kind, and the
        rewrites (path -> table) of files holding events of the patients this commit introduces.

        Patients of the same commit count too (without being learnt: the store calls ``observe`` with
        the rows it really stored)."""
        known: Mapping[str, tuple[int, int, str]] = self._births
        overlay: dict[str, tuple[int, int, str]] = {}
        patients = tables.get(PATIENT)
        if patients is not None and TOKEN_COLUMN in patients.column_names and patients.num_rows:
            self._learn(overlay, patients, skip=self._births)
            known = ChainMap(overlay, self._births)
        out = dict(tables)
        changed: dict[str, list[str]] = {}
        for kind in EVENT_COLUMNS:
            table = tables.get(kind)
            if table is not None and table.num_rows and known:
                out[kind], ids = self._generalize(table, kind, known)
                if ids:
                    changed[kind] = ids
        rewrites: dict[str, pa.Table] = {}
        fids = [self._orphans.get(p) for p in overlay]
        for path in sorted({self._files[f] for x in fids if x is not None
                            for f in ((x,) if isinstance(x, int) else x)}):
            kind = path.split("/", 1)[0].removeprefix("kind=")
            table, ids = self._generalize(read(path), kind, overlay)
            if ids:
                rewrites[path] = table
        return out, changed, rewrites

    def apply_read(self, kind: str, table: pa.Table) -> pa.Table:
        """Rows read from the store with the guard applied (events stored before their Patient)."""
        if (kind not in EVENT_COLUMNS or not table.num_rows or not self._births
                or "patient_id" not in table.column_names):
            return table
        return self._generalize(table, kind, self._births)[0]

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _learn(into: dict[str, tuple[int, int, str]], table: pa.Table,
               skip: Mapping[str, tuple[int, int, str]] | None = None) -> list[str]:
        cols = [table[c].to_pylist() for c in WATCH[PATIENT]]
        new = []
        for pid, year, month, token in zip(*cols, strict=True):
            if not (pid and token and year and month):
                continue
            known = into.get(pid) or (skip.get(pid) if skip is not None else None)
            if known is None or known[2] != token:  # new, or a corrected birth date
                into[pid] = (int(year), int(month), token)
                new.append(pid)
        return new

    def _generalize(self, table: pa.Table, kind: str, known: Mapping[str, tuple[int, int, str]]
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
            col, offset_name = table[name], name + OFFSET_SUFFIX
            offsets = table[offset_name] if offset_name in table.column_names else None
            same = _in_month(col, year, month)
            if offsets is not None:  # the date as written may be the birth date while the UTC one is not
                same = pc.or_(same, _in_month(pc.add(col, _minutes(offsets)), year, month))
            rows = np.flatnonzero(pc.fill_null(same, False).to_numpy(zero_copy_only=False))
            if not len(rows):
                continue
            values = col.to_pylist()
            offset_values = offsets.to_pylist() if offsets is not None else [None] * len(values)
            hit = False
            for i in rows.tolist():
                pid = pids[i].as_py()
                for day in sorted(local_dates(values[i], offset_values[i])):
                    if birth_token(self._ps, pid, day) == known[pid][2]:
                        values[i] = dt.datetime(day.year, day.month, 2 if day.day == 1 else 1, tzinfo=dt.UTC)
                        offset_values[i] = None  # the cut value is a date
                        changed.add(i)
                        hit = True
                        break
            if hit:
                table = table.set_column(table.schema.get_field_index(name), name,
                                         pa.array(values, table.schema.field(name).type))
                if offsets is not None:
                    table = table.set_column(table.schema.get_field_index(offset_name), offset_name,
                                             pa.array(offset_values, table.schema.field(offset_name).type))
        if not changed or "resource_id" not in table.column_names:
            return table, []
        rids = table["resource_id"]
        return table, sorted({rids[i].as_py() for i in changed})


def _in_month(times: pa.ChunkedArray | pa.Array, year: pa.Array, month: pa.Array) -> pa.Array:
    return pc.and_(pc.equal(pc.year(times), year), pc.equal(pc.month(times), month))


def _minutes(offsets: pa.ChunkedArray | pa.Array) -> pa.Array:
    """UTC offsets in minutes (null: none known) → durations to add to UTC times."""
    return pc.multiply(pc.fill_null(pc.cast(offsets, pa.int64()), 0), 60_000_000).cast(pa.duration("us"))
