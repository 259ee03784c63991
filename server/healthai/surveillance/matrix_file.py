"""Headerless numeric matrices: the layout of the published graph-forecasting benchmarks (Cola-GNN,
EpiGNN: ``japan.txt`` is periods × regions, ``japan-adj.txt`` regions × regions, comma-separated, no
header, no dates).

Such a file names no region, so its columns are named by position (``r01``, ``r02``, ...: the same
names for the series and the adjacency, so two headerless files line up) unless a region-ids file
names them: one region per line, ``id`` or ``id,name``, in column order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from healthai.errors import InputFileError


def positional_ids(n: int) -> tuple[str, ...]:
    """``r01`` ... ``rNN``: the names of a headerless file's columns, zero-padded to sort in order."""
    width = max(2, len(str(n)))
    return tuple(f"r{i + 1:0{width}d}" for i in range(n))


def read_region_ids(path: Path | str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(ids, names) of a region-ids file; names are "" where a line has none."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such file", field="region_ids")
    ids, names = [], []
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        rid, _, name = (part.strip() for part in line.partition(","))
        if line_no == 1 and rid.lower() == "id" and name.lower() in ("", "name"):
            continue  # an optional header
        if not rid:
            raise InputFileError(f"{path}: line {line_no}: empty region id", field="region_ids")
        if rid in ids:
            raise InputFileError(f"{path}: line {line_no}: region {rid!r} appears twice", field="region_ids")
        ids.append(rid)
        names.append(name)
    if not ids:
        raise InputFileError(f"{path}: no region ids (one per line: id or id,name)", field="region_ids")
    return tuple(ids), tuple(names)


def column_ids(n: int, region_ids: tuple[str, ...] | None, path: Path, field: str) -> tuple[str, ...]:
    """The names of a headerless file's ``n`` columns: ``region_ids`` when given (one per column)."""
    if region_ids is None:
        return positional_ids(n)
    if len(region_ids) != n:
        raise InputFileError(
            f"{path}: {n} columns but the region-ids file names {len(region_ids)} regions", field=field
        )
    return tuple(region_ids)


def is_number(text: str) -> bool:
    try:
        return np.isfinite(float(text))
    except ValueError:
        return False


def read_headerless(path: Path, field: str) -> pd.DataFrame | None:
    """The cells of ``path`` as text (no header) when its first row is all numbers, else None (the
    file is then read by its header; only its first line was read here)."""
    try:
        with path.open(encoding="utf-8-sig", errors="replace") as f:
            first = f.readline()
        if not first.strip() or not all(is_number(v.strip()) for v in first.split(",")):
            return None
        return pd.read_csv(path, header=None, dtype=str, keep_default_na=False)
    except (ValueError, OSError) as exc:
        raise InputFileError(f"{path}: cannot read as CSV ({exc})", field=field) from exc
