"""Normalize the flat-record messages of one consumer batch together.

Arrow, Parquet and protobuf messages are decoded to tables, grouped by (kind, source, schema) and,
when no record id repeats across the group's messages, concatenated and normalized in one call:
per-call costs (keyed pseudonyms of repeated patient ids, unit tables, outcome building) are paid
once per group instead of once per message. The outcomes are identical to normalizing each message
alone (a record's checks only look at its own row, and duplicates are only looked for within a
message); they are handed back per message with indices and field paths local to the message.
A group whose ids repeat across messages (a re-sent message) is normalized message by message, so
the store, not the duplicate check, drops the repeats, as it would for separate requests.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from healthai.errors import HealthAIError
from healthai.ingest.convert import FLAT_KINDS
from healthai.normalize.context import NormalizeContext
from healthai.normalize.flat import _ID_COLUMN, normalize_table
from healthai.normalize.records import RecordOutcome, Status


@dataclass
class Pending:
    """One decoded message: where its outcomes and error go."""

    fmt: str
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


def normalize_flat(ctx: NormalizeContext, pending: list[Pending]) -> list[pa.Table]:
    """Fill each Pending's outcomes (or error); return the normalized tables of those without error."""
    groups: dict[tuple[str, str, pa.Schema], list[Pending]] = {}
    for p in pending:
        for kind, t in p.tables.items():
            groups.setdefault((kind, p.source, t.schema), []).append(p)
    work: list[tuple[str, str, list[Pending]]] = []
    for (kind, source, _), members in groups.items():
        together = len(members) > 1 and not _overlap(kind, [m.tables[kind] for m in members])
        work += [(kind, source, members)] if together else [(kind, source, [m]) for m in members]
    done: list[tuple[str, list[Pending], list[RecordOutcome], pa.Table]] = []
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
        done.append((kind, who, batch.outcomes, batch.tables[kind]))
    out: list[pa.Table] = []
    for kind, who, outcomes, table in done:
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
        out.append(table)
    return out
