"""Typed results: plain dataclasses built from the generated response messages."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from healthai.v1 import common_pb2, forecast_pb2, ingest_pb2, risk_pb2


def _enum_label(enum: Any, value: int, prefix: str) -> str:
    return enum.Name(value).removeprefix(prefix).lower()


@dataclass(frozen=True)
class RecordIssue:
    """One finding about a record: a code (e.g. ``MISSING_FIELD``), a message, the field's path in the
    request (``flat.patients[3].birth_date``) and its severity."""

    code: str
    message: str
    field_path: str
    severity: str  # info | warning | error


@dataclass(frozen=True)
class RecordOutcome:
    """What became of one record: its ``index`` in its request (a table's row), its kind, status and
    issues; ``request_index``: its item in an ``ingest_stream`` call (0 otherwise)."""

    index: int
    kind: str  # patient | encounter | condition | observation | other
    resource_type: str
    source_id: str
    status: str  # accepted | accepted_with_warnings | rejected
    issues: tuple[RecordIssue, ...]
    request_index: int = 0


_REPR_OUTCOMES = 5


@dataclass(frozen=True)
class IngestResult:
    """The server's answer to one ingest call (one batch): counts, every record's status, the outcomes
    asked for, and the store's receipt (batch id, sequence, rows stored per kind, duplicates, files).
    Its repr summarizes (counts and the first outcomes): a bundle has thousands of them."""

    accepted: int
    rejected: int
    outcomes: tuple[RecordOutcome, ...]  # every record, or only those with issues (outcome_detail)
    statuses: tuple[str, ...]  # every record's status, always complete
    batch_id: str
    sequence: int
    stored: dict[str, int]
    duplicates: int
    files: tuple[str, ...]
    revised: int = 0  # rows stored as a new version of a record already stored (they replace it)

    def __repr__(self) -> str:
        shown = ", ".join(f"{o.index}:{o.status}" + (f"({o.issues[0].code})" if o.issues else "")
                          for o in self.outcomes[:_REPR_OUTCOMES])
        left = len(self.outcomes) - _REPR_OUTCOMES
        more = f", ... {left} more" if left > 0 else ""
        return (f"IngestResult(accepted={self.accepted}, rejected={self.rejected}, revised={self.revised}, "
                f"duplicates={self.duplicates}, stored={self.stored}, batch_id={self.batch_id!r}, "
                f"sequence={self.sequence}, files={len(self.files)}, outcomes=[{shown}{more}])")

    @property
    def partial(self) -> bool:
        """Some records were rejected (the rest were stored)."""
        return self.rejected > 0

    def rejected_outcomes(self) -> list[RecordOutcome]:
        """The outcomes of the records that were refused (not stored), with their issues."""
        return [o for o in self.outcomes if o.status == "rejected"]

    def renumbered(self, origin: Sequence[int | tuple[int, int]]) -> IngestResult:
        """The result of tables sent in parts (stream messages): message k came from item
        ``origin[k][0]`` from its row ``origin[k][1]`` (a plain int: item 0, from that row). Each outcome's
        ``request_index`` becomes its item's, its index and its issues' ``[i]`` field paths the row of
        the whole table."""
        where = [(0, o) if isinstance(o, int | np.integer) else o for o in origin]

        def row(o: RecordOutcome) -> RecordOutcome:
            item, shift = where[o.request_index]
            issues = tuple(replace(i, field_path=_shift_path(i.field_path, shift)) for i in o.issues)
            return replace(o, index=o.index + shift, issues=issues, request_index=int(item))

        return replace(self, outcomes=tuple(row(o) for o in self.outcomes))

    @classmethod
    def from_proto(cls, r: ingest_pb2.IngestResponse) -> IngestResult:
        outcomes = tuple(
            RecordOutcome(
                index=o.index,
                kind=_enum_label(common_pb2.RecordKind, o.kind, "RECORD_KIND_"),
                resource_type=o.resource_type,
                source_id=o.source_id,
                status=_enum_label(common_pb2.RecordStatus, o.status, "RECORD_STATUS_"),
                issues=tuple(RecordIssue(i.code, i.message, i.field_path,
                                         _enum_label(common_pb2.Severity, i.severity, "SEVERITY_"))
                             for i in o.issues),
                request_index=o.request_index,
            )
            for o in r.outcomes)
        rc = r.receipt
        statuses = tuple(_enum_label(common_pb2.RecordStatus, s, "RECORD_STATUS_") for s in r.statuses)
        return cls(accepted=r.accepted, rejected=r.rejected, outcomes=outcomes, statuses=statuses,
                   batch_id=rc.batch_id, sequence=rc.sequence, stored=dict(rc.stored),
                   duplicates=rc.duplicates, files=tuple(rc.files), revised=rc.revised)


@dataclass(frozen=True)
class PatientScore:
    """One patient's risk: probability, the card's risk band, Charlson index, top feature contributions."""

    probability: float
    risk_band: str
    charlson_index: int | None  # None when unavailable (no codes, or codes that could not be mapped)
    top_features: tuple[tuple[str, float], ...]  # (feature name, contribution), largest first


@dataclass(frozen=True)
class ScoreResult:
    """The scores of one batch, one ``PatientScore`` per patient in the order sent."""

    model_name: str
    model_version: int
    patients: tuple[PatientScore, ...]

    @property
    def probabilities(self) -> np.ndarray:
        """Every patient's probability, in the order sent (float32 array)."""
        return np.array([p.probability for p in self.patients], dtype=np.float32)

    @classmethod
    def from_proto(cls, r: risk_pb2.ScoreResponse) -> ScoreResult:
        n, k = len(r.probability), r.top_k
        names, contrib = list(r.top_feature_name), list(r.top_feature_contribution)
        patients = []
        for i in range(n):
            top = tuple((names[i * k + j], float(contrib[i * k + j])) for j in range(k))
            available = r.charlson_available[i] if i < len(r.charlson_available) else False
            charlson = int(r.charlson_index[i]) if available and i < len(r.charlson_index) else None
            band = r.risk_band[i] if i < len(r.risk_band) else ""
            patients.append(PatientScore(float(r.probability[i]), band, charlson, top))
        return cls(r.model_name, r.model_version, tuple(patients))


@dataclass(frozen=True)
class ForecastResult:
    """A forecast: point and quantile values per horizon and region (``at`` picks one), dated by
    ``first_forecast_period`` when the history had periods, with the history used (for plots)."""

    model_name: str
    model_version: int
    region_ids: tuple[str, ...]
    horizons: tuple[int, ...]
    quantile_levels: tuple[float, ...]
    point: np.ndarray  # [horizons, regions]
    quantiles: np.ndarray  # [horizons, regions, quantile_levels]
    first_forecast_period: str = ""
    step: str = ""
    _region_index: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    # stored history: per region {region_id, first_stored_period, covered_periods, window_periods,
    # cases_in_window}; a region with no first_stored_period had no data (its input was zeros)
    coverage: tuple[dict[str, Any], ...] = ()
    history: np.ndarray | None = None  # [steps, regions] the model read (stored), or what was sent
    week_start: str = ""  # weekly models: the weekday their weeks start on ("sunday": MMWR weeks)

    def with_history(self, region_ids: list[str], counts: np.ndarray) -> ForecastResult:
        """This result with the explicit history that was sent, reordered to ``region_ids`` here."""
        counts = counts.reshape(-1, len(region_ids))
        cols = [region_ids.index(r) for r in self.region_ids]
        return replace(self, history=counts[:, cols])

    def missing_regions(self) -> list[str]:
        """Regions whose stored input had no data at all (only with allow_missing_regions)."""
        return [c["region_id"] for c in self.coverage if not c["first_stored_period"]]

    def at(self, region: str, horizon: int) -> tuple[float, dict[float, float]]:
        """(point, {level: value}) for one region and horizon."""
        try:
            r = self._region_index[region]
        except KeyError:
            raise KeyError(f"region {region!r} is not in this forecast") from None
        if horizon not in self.horizons:
            raise KeyError(f"horizon {horizon} is not in this forecast {list(self.horizons)}")
        h = self.horizons.index(horizon)
        q = {lvl: float(v) for lvl, v in zip(self.quantile_levels, self.quantiles[h, r], strict=True)}
        return float(self.point[h, r]), q

    @classmethod
    def from_proto(cls, r: forecast_pb2.ForecastResponse) -> ForecastResult:
        h, n, q = len(r.horizons), len(r.region_ids), len(r.quantile_levels)
        point = np.asarray(r.point, dtype=np.float32).reshape(h, n)
        quantiles = np.asarray(r.quantiles, dtype=np.float32).reshape(h, n, q)
        regions = tuple(r.region_ids)
        coverage = tuple({"region_id": c.region_id, "first_stored_period": c.first_stored_period,
                          "covered_periods": c.covered_periods, "window_periods": c.window_periods,
                          "cases_in_window": c.cases_in_window, "nowcast_added": c.nowcast_added}
                         for c in r.coverage)
        history = (np.asarray(r.stored_history, dtype=np.float32).reshape(-1, n)
                   if len(r.stored_history) and n else None)
        return cls(r.model_name, r.model_version, regions, tuple(r.horizons),
                   tuple(round(float(x), 6) for x in r.quantile_levels), point, quantiles,
                   r.first_forecast_period, r.step, {rid: i for i, rid in enumerate(regions)},
                   coverage, history, r.week_start)


def _shift_path(path: str, shift: int) -> str:
    """``arrow.rows[3].value`` -> ``arrow.rows[3 + shift].value`` (the first row index; other paths kept)."""
    match = _ROW_PATH.match(path)
    return f"{match[1]}[{int(match[2]) + shift}{path[match.end(2):]}" if match else path


_ROW_PATH = re.compile(r"^([A-Za-z_.]*)\[(\d+)")
