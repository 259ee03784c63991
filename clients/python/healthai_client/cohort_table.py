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

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from healthai_client.errors import HealthAIClientError
from healthai_client.results import ScoreResult


@dataclass(frozen=True)
class CohortRows:
    """A cohort table's rows as the model's features: pass ``x`` with ``feature_names`` to
    ``Client.score``."""

    feature_names: tuple[str, ...]
    x: np.ndarray  # float32 [patients x features], NaN = missing (filled by the server)
    patient_ids: tuple[str, ...] | None = None  # the spec's patient_id column, when the table has it


def read_cohort_rows(table: Path | str, spec: Path | str) -> CohortRows:
    """The rows of ``table`` (CSV or Parquet) turned into features by the TOML ``spec`` the model was
    trained with: ``c.score(model, rows.x, feature_names=rows.feature_names)``. ValueError for an
    empty table or rows the spec's ``drop_row`` policies would drop (named, never left out)."""
    from healthai.cohort.features import cohort_features, describe_rows, read_table
    from healthai.cohort.spec import load_spec

    parsed = load_spec(spec)
    frame = read_table(table)
    built = cohort_features(frame, parsed)
    if len(built.x) == 0:
        raise ValueError(f"{table}: no rows to score")
    if built.drop.any():
        raise ValueError(f"{table}: {describe_rows(built.drop)} hold values the spec's drop_row policies "
                         "drop in training; fix them or the spec: a patient is not left out of scoring")
    ids = None
    if parsed.patient_id and parsed.patient_id in frame.columns:
        ids = tuple("" if v is None or v != v else str(v) for v in frame[parsed.patient_id].tolist())
    return CohortRows(tuple(built.names), built.x.astype(np.float32), ids)


def score_rows(client: Any, model: str, rows: CohortRows, *, batch: int, top_features: int | None,
               model_version: int = 0) -> ScoreResult:
    """Every row scored, ``batch`` rows per Score call, all by the version that answered the first."""
    if batch < 1:
        raise ValueError(f"--batch must be >= 1, got {batch}")
    parts: list[ScoreResult] = []
    for start in range(0, len(rows.x), batch):
        try:
            parts.append(client.score(model, rows.x[start:start + batch], feature_names=rows.feature_names,
                                      top_features=top_features, model_version=model_version))
        except HealthAIClientError as exc:
            raise in_table(exc, start) from None
        model_version = parts[0].model_version  # a reload mid-table does not mix versions
    patients = tuple(p for part in parts for p in part.patients)
    return ScoreResult(parts[0].model_name, parts[0].model_version, patients)


_PATIENT = re.compile(r"features\[(\d+)\]")


def in_table(exc: HealthAIClientError, start: int) -> HealthAIClientError:
    """The server's error for a batch starting at table row ``start`` (0-based), naming the row of the
    whole table: ``features[i]`` becomes ``table row R (features[start + i])``, R 1-based as a data row
    of a spreadsheet (the numbering of training's errors); the patient id is not shown."""
    def whole(m: re.Match[str]) -> str:
        row = start + int(m.group(1))
        return f"table row {row + 1} (features[{row}])"

    message = _PATIENT.sub(whole, exc.message)
    return HealthAIClientError(exc.code, message, address=exc.address, attempts=exc.attempts)


def write_scores(path: Path, result: ScoreResult, patient_ids: tuple[str, ...] | None = None) -> int:
    """CSV, one line per scored row in input order: row (1-based data row), the patient id when known,
    probability, risk band, Charlson index, top features ("name:+0.123;...")."""
    with Path(path).open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["row", *(["patient_id"] if patient_ids else []), "probability", "risk_band",
                      "charlson_index", "top_features"])
        for i, p in enumerate(result.patients):
            top = ";".join(f"{name}:{value:+.4f}" for name, value in p.top_features)
            charlson = "" if p.charlson_index is None else p.charlson_index
            out.writerow([i + 1, *([patient_ids[i]] if patient_ids else []), f"{p.probability:.6f}",
                          p.risk_band, charlson, top])
    return len(result.patients)
