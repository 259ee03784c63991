"""Normalize the flat-record messages of one consumer batch together.

Arrow, Parquet and protobuf messages are decoded to tables, grouped by (kind, source, schema) and,
when no record id repeats across the group's messages, concatenated and normalized in one call:
per-call costs (keyed pseudonyms of repeated patient ids, unit tables, outcome building) are paid
once per group instead of once per message. The outcomes are identical to normalizing each message
alone (a record's checks only look at its own row, and duplicates are only looked for within a
message); they are handed back per message with indices and field paths local to the message.
A group whose ids repeat across messages (a re-sent message) is normalized message by message, so
the store, not the duplicate check, drops the repeats, as it would for separate requests.

Grouping must not change which version of a record is the latest (the store takes row order within a
commit): the rows handed back (:class:`Rows`) know their messages' positions in the batch, and the
consumer orders each kind's rows by them before the commit (only when they come from more than one
group or message), so a correction sent later on a partition is stored later, whatever the groups.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from healthai.errors import HealthAIError
from healthai.ingest.convert import FLAT_KINDS
from healthai.normalize.context import NormalizeContext
from healthai.normalize.flat import _ID_COLUMN, normalize_table
from healthai.normalize.records import RecordOutcome, Status

log = logging.getLogger(__name__)


@dataclass
class Pending:
    """One decoded message: where its outcomes and error go."""

    fmt: str
    pos: int = 0  # the message's position in the batch (offset order within a partition)
    headers: dict[str, str] = field(default_factory=dict)
    source: str = ""
    tables: dict[str, pa.Table] = field(default_factory=dict)
    counts: Counter[Status] = field(default_factory=Counter)  # outcomes by status
    rejected: list[RecordOutcome] = field(default_factory=list)  # index and paths local to the message
    error: HealthAIError | None = None

    def add(self, outcomes: list[RecordOutcome], start: int = 0, prefix: str = "") -> None:
        self.counts.update(o.status for o in outcomes)
        self.rejected += [_localize(o, start, prefix) if prefix else o
                          for o in outcomes if o.status is Status.REJECTED]


@dataclass(slots=True)
class Rows:
    """Normalized rows of one kind from ``members`` (one message, or a group normalized together)."""

    table: pa.Table
    members: list[Pending]
    kind: str = ""
    outcomes: list[RecordOutcome] = field(default_factory=list)  # a group's, for :meth:`positions`

    def positions(self) -> np.ndarray:
        """Per row: the batch position of its message. In a group no id repeats across messages, so a
        row's resource id (each input row's outcome names its pseudonym) tells its message."""
        if len(self.members) == 1 or self.table.num_rows == 0:
            return np.full(self.table.num_rows, self.members[0].pos, np.int64)
        who, kind = self.members, self.kind
        of_input = np.repeat(np.array([m.pos for m in who], np.int64), [m.tables[kind].num_rows for m in who])
        ids = pa.array([o.source_id for o in self.outcomes], pa.string())
        found = pc.index_in(self.table["resource_id"], value_set=ids)
        if found.null_count:  # not expected; the group's last message is the safe side for its new rows
            log.warning("%d normalized %s rows not traced to their message", found.null_count, kind)
            found = pc.fill_null(found, len(ids) - 1)
        return of_input[found.to_numpy(zero_copy_only=False)]


def in_batch_order(parts: list[Rows]) -> pa.Table:
    """The rows of one kind in the order of their messages in the batch (stable within a message). A
    single part needs no order: its messages share no record id."""
    if len(parts) == 1:
        return parts[0].table
    table = pa.concat_tables([p.table for p in parts])
    pos = np.concatenate([p.positions() for p in parts])
    if bool((pos[1:] < pos[:-1]).any()):
        table = table.take(pa.array(np.argsort(pos, kind="stable")))
    return table


def _overlap(kind: str, tables: list[pa.Table]) -> bool:
    """True when a record id occurs in more than one of the tables (checked on the id column alone:
    stricter than the duplicate key, which adds the LOINC code for observations)."""
    name = _ID_COLUMN[kind]
    if any(name not in t.column_names for t in tables):
        return True  # a missing id column: let each message fail on its own
    each = sum(pc.count_distinct(t[name]).as_py() for t in tables)
    every = pa.chunked_array([c for t in tables for c in t[name].cast(pa.string()).chunks], pa.string())
    return pc.count_distinct(every).as_py() != each


def _prefix(fmt: str, kind: str) -> str:
    return FLAT_KINDS[kind][0] if fmt == "protobuf" else "rows"


def _localize(o: RecordOutcome, start: int, prefix: str) -> RecordOutcome:
    local = o.index - start
    head = f"[{o.index}]"
    issues = [dataclasses.replace(i, field_path=f"{prefix}[{local}]{i.field_path[len(head):]}")
              if i.field_path.startswith(head) else i for i in o.issues]
    return dataclasses.replace(o, index=local, issues=issues)


def normalize_flat(ctx: NormalizeContext, pending: list[Pending]) -> list[Rows]:
    """Fill each Pending's outcomes (or error); return the normalized rows of those without error."""
    groups: dict[tuple[str, str, pa.Schema], list[Pending]] = {}
    for p in pending:
        for kind, t in p.tables.items():
            groups.setdefault((kind, p.source, t.schema), []).append(p)
    work: list[tuple[str, str, list[Pending]]] = []
    for (kind, source, _), members in groups.items():
        together = len(members) > 1 and not _overlap(kind, [m.tables[kind] for m in members])
        work += [(kind, source, members)] if together else [(kind, source, [m]) for m in members]
    done: list[tuple[str, list[Pending], list[RecordOutcome], Rows]] = []
    while work:
        kind, source, who = work.pop(0)
        ts = [m.tables[kind] for m in who]
        try:
            batch = normalize_table(kind, pa.concat_tables(ts) if len(ts) > 1 else ts[0], ctx=ctx,
                                    source=source)
        except HealthAIError as e:
            if len(who) > 1:  # find the message at fault: one by one
                work += [(kind, source, [m]) for m in who]
            else:
                who[0].error = who[0].error or e
            continue
        done.append((kind, who, batch.outcomes, Rows(batch.tables[kind], who, kind, batch.outcomes)))
    out: list[Rows] = []
    for kind, who, outcomes, rows in done:
        if any(m.error for m in who):
            if len(who) > 1:  # another kind of one member failed: redo the others alone
                redo = [m for m in who if m.error is None]
                out += normalize_flat(ctx, [dataclasses.replace(m, tables={kind: m.tables[kind]},
                                                                counts=m.counts, rejected=m.rejected)
                                            for m in redo])
            continue
        start = 0  # flat outcomes: one per input row, in row order
        for m in who:
            n = m.tables[kind].num_rows
            m.add(outcomes[start:start + n], start, _prefix(m.fmt, kind))
            start += n
        out.append(rows)
    return out
