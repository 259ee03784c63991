"""Patients to score from a cohort table: the CSV or Parquet file and TOML spec a model was trained on
with ``healthai train risk --table --spec`` (new rows of the same table; the target and patient id
columns are not needed).

The spec turns the table into the model's features exactly as training did
(:mod:`healthai.cohort.features`: categories to one-hot flags, missing-value indicators, sentinel
values, domain policies). A missing value the spec allows travels as NaN and the server fills it from
the card (``imputation``), as training filled it. Rows that training would have dropped
(``drop_row`` policies) are refused, naming them: a patient is never silently left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class CohortRows:
    feature_names: tuple[str, ...]
    x: np.ndarray  # float32 [patients x features], NaN = missing (filled by the server)


def read_cohort_rows(table: Path | str, spec: Path | str) -> CohortRows:
    from healthai.cohort.features import cohort_features, describe_rows, read_table
    from healthai.cohort.spec import load_spec

    built = cohort_features(read_table(table), load_spec(spec))
    if len(built.x) == 0:
        raise ValueError(f"{table}: no rows to score")
    if built.drop.any():
        raise ValueError(f"{table}: {describe_rows(built.drop)} hold values the spec's drop_row policies "
                         "drop in training; fix them or the spec: a patient is not left out of scoring")
    return CohortRows(tuple(built.names), built.x.astype(np.float32))
