"""Missing cells of a count series: refused by default, or filled in time when the user asks.

Real surveillance files have holes: a region that began reporting late, a week a state did not send,
cells marked ``X`` or ``NA``. ``missing="interpolate"`` fills each region's holes from its own
observed counts (never from other regions, never zeros):

- between two observed periods: linearly in time;
- before a region's first observed period: that first count; after its last: that last count (the
  forecast then starts from the last count the region sent, which the report names).

A region with no observed count at all is refused (nothing to fill from). Every filled cell is
counted in the report and kept as a mask (``imputed``), so scores (backtests, a trained model's test
metrics) leave them out: a filled cell is a guess, not a truth to be scored against.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from healthai.errors import InputFileError

MISSING = ("refuse", "interpolate")
# Cell texts read as "no value" when --missing interpolate (case-insensitive); ILINet writes X.
MISSING_MARKS = frozenset({"", "na", "n/a", "nan", "null", "none", "x", "-", "."})


def check_missing(missing: str) -> str:
    if missing not in MISSING:
        raise InputFileError(f"missing must be one of {MISSING}, got {missing!r}", field="missing")
    return missing


def fill_missing(
    values: np.ndarray, periods: pd.DatetimeIndex, ids: tuple[str, ...], where: str
) -> tuple[np.ndarray, np.ndarray, dict]:
    """NaN cells of ``values`` [T, N] → (filled copy, imputed mask, report)."""
    imputed = np.isnan(values)
    report: dict = {"missing": "interpolate", "missing_cells": int(imputed.sum())}
    if not imputed.any():
        return values, imputed, report
    empty = imputed.all(axis=0)
    if empty.any():
        names = [ids[j] for j in np.flatnonzero(empty)]
        raise InputFileError(
            f"{where}: region {names[0]!r} has no count in any period ({len(names)} such regions): nothing "
            "to fill its missing cells from; drop it from the series and the graph",
            field="series",
        )
    filled = values.copy()
    t = np.arange(len(values), dtype=np.float64)
    for j in np.flatnonzero(imputed.any(axis=0)):
        seen = ~imputed[:, j]
        # np.interp holds the end values flat outside the observed range: first / last count carried
        filled[imputed[:, j], j] = np.interp(t[imputed[:, j]], t[seen], values[seen, j])
    per_region = imputed.sum(axis=0)
    worst = np.argsort(-per_region, kind="stable")[:5]
    t0, j0 = np.argwhere(imputed)[0]
    report.update(
        missing_share=round(float(imputed.mean()), 6),
        missing_by_region={ids[j]: int(per_region[j]) for j in worst if per_region[j]},
        first_missing={"region": ids[j0], "period": str(periods[t0].date())},
        missing_in_last_period=[ids[j] for j in np.flatnonzero(imputed[-1])],
    )
    return filled, imputed, report


def is_missing_text(text: pd.Series) -> pd.Series:
    return text.str.strip().str.lower().isin(MISSING_MARKS)
