"""Load weekly counts + region adjacency and cut them per the Cola-GNN / EpiGNN benchmark protocol.

Protocol: chronological split at ``int(0.5 n)`` and ``int(0.7 n)``; a sample whose target is week
``i`` uses the ``window`` weeks ending at ``i - h`` (inclusive); the target week decides the split;
per-region min-max scaling is fitted on the training rows only.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from healthai_training.errors import TrainingInputError

DATASETS = {
    "japan": ("epi/japan_prefectures/japan.txt", "epi/japan_prefectures/japan-adj.txt"),
    "us_states": ("epi/us_states/state360.txt", "epi/us_states/state-adj.txt"),
}
US_STATES = [
    "Alabama",
    "Alaska",
    "Arizona",
    "Arkansas",
    "California",
    "Colorado",
    "Connecticut",
    "Delaware",
    "Georgia",
    "Hawaii",
    "Idaho",
    "Illinois",
    "Indiana",
    "Iowa",
    "Kansas",
    "Kentucky",
    "Louisiana",
    "Maine",
    "Maryland",
    "Massachusetts",
    "Michigan",
    "Minnesota",
    "Mississippi",
    "Missouri",
    "Montana",
    "Nebraska",
    "Nevada",
    "New_Hampshire",
    "New_Jersey",
    "New_Mexico",
    "New_York",
    "North_Carolina",
    "North_Dakota",
    "Ohio",
    "Oklahoma",
    "Oregon",
    "Pennsylvania",
    "Rhode_Island",
    "South_Carolina",
    "South_Dakota",
    "Tennessee",
    "Texas",
    "Utah",
    "Vermont",
    "Virginia",
    "Washington",
    "West_Virginia",
    "Wisconsin",
    "Wyoming",
]


DEFAULT_SPLIT = (0.5, 0.2, 0.3)  # the papers' protocol


def split_points(n: int, split: tuple[float, float, float] = DEFAULT_SPLIT) -> tuple[int, int]:
    """Row indices where validation and test start (chronological)."""
    return int(split[0] * n), int((split[0] + split[1]) * n)


def check_split(split: tuple[float, ...]) -> tuple[float, float, float]:
    """TRAIN,VAL,TEST fractions: three numbers in (0, 1) summing to 1."""
    if len(split) != 3 or any(not 0 < f < 1 for f in split) or abs(sum(split) - 1) > 1e-6:
        raise TrainingInputError(
            f"split must be three fractions TRAIN,VAL,TEST in (0, 1) summing to 1, got {list(split)}",
            field="split",
        )
    return (float(split[0]), float(split[1]), float(split[2]))


@dataclass(frozen=True)
class EpiData:
    name: str
    series: np.ndarray  # [T, N] float64 weekly counts
    adjacency: np.ndarray  # [N, N] float64, symmetric
    region_ids: tuple[str, ...]
    split: tuple[float, float, float] = DEFAULT_SPLIT  # chronological train / val / test fractions
    step: str = "W"  # "W" (weeks) or "D" (days)
    season: int = 52  # periods per season
    periods: tuple[str, ...] = ()  # ISO date of each row's period start, when known
    region_names: tuple[str, ...] = ()  # display names in column order, when known
    report: dict = field(default_factory=dict)  # what loading did (negatives, isolated nodes, sources)
    cuts: tuple[int, int] | None = None  # explicit (val start, test start), e.g. a backtest origin
    imputed: np.ndarray | None = None  # bool [T, N]: cells filled by --missing interpolate (never scored)


    def observed(self, rows: np.ndarray) -> np.ndarray:
        """bool [len(rows), N]: the cells of those periods that were observed, not filled by --missing."""
        return observed_cells(self.imputed, rows, self.n_regions)

    @property
    def n_weeks(self) -> int:
        return int(self.series.shape[0])

    @property
    def n_regions(self) -> int:
        return int(self.series.shape[1])

    @property
    def split_points(self) -> tuple[int, int]:
        return self.cuts if self.cuts is not None else split_points(self.n_weeks, self.split)


def observed_cells(imputed: np.ndarray | None, rows: np.ndarray, n_regions: int) -> np.ndarray:
    """bool [len(rows), n_regions]: False where ``imputed`` (cells filled by --missing) says so."""
    return np.ones((len(rows), n_regions), bool) if imputed is None else ~imputed[rows]


def validate_adjacency(
    adjacency: np.ndarray, *, n_regions: int | None = None, require_symmetric: bool = True
) -> np.ndarray:
    """Return the adjacency as float64 or raise: not 2-D square, NaN/negative, wrong size, asymmetric."""
    adj = np.asarray(adjacency, dtype=np.float64)
    if adj.ndim != 2 or adj.shape[0] != adj.shape[1]:
        raise TrainingInputError(
            f"adjacency must be a square matrix, got shape {adj.shape}", field="adjacency"
        )
    if not np.all(np.isfinite(adj)) or np.any(adj < 0):
        raise TrainingInputError("adjacency must hold finite weights >= 0", field="adjacency")
    if n_regions is not None and adj.shape[0] != n_regions:
        raise TrainingInputError(
            f"adjacency is {adj.shape[0]}x{adj.shape[0]} but the series has {n_regions} regions",
            field="adjacency",
        )
    if require_symmetric and not np.allclose(adj, adj.T):
        i, j = np.argwhere(~np.isclose(adj, adj.T))[0]
        raise TrainingInputError(
            f"adjacency must be symmetric for symmetric normalisation: a[{i},{j}]={adj[i, j]} "
            f"but a[{j},{i}]={adj[j, i]}",
            field="adjacency",
        )
    return adj


def validate_series(
    series: np.ndarray,
    *,
    window: int,
    horizon: int,
    split: tuple[float, float, float] = DEFAULT_SPLIT,
    allow_negative: bool = False,
) -> np.ndarray:
    """Return the series as float64 [T, N] or raise: wrong rank, NaN/inf, negative, too short."""
    x = np.asarray(series, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 1:
        raise TrainingInputError(f"series must be [weeks, regions], got shape {x.shape}", field="series")
    if not np.all(np.isfinite(x)):
        week, region = np.argwhere(~np.isfinite(x))[0]
        raise TrainingInputError(
            f"series has a non-finite value at week {week}, region {region}", field="series"
        )
    if not allow_negative and np.any(x < 0):
        week, region = np.argwhere(x < 0)[0]
        raise TrainingInputError(
            f"series has a negative count at week {week}, region {region}", field="series"
        )
    # The training split alone must hold at least one full window + horizon.
    n_train = split_points(x.shape[0], split)[0]
    if n_train < window + horizon:
        seasonal = " (a seasonal window spans one season + 2 periods)" if window > 20 else ""
        raise TrainingInputError(
            f"series of {x.shape[0]} periods is too short: the training split ({n_train} periods) must "
            f"hold window + horizon = {window} + {horizon} periods{seasonal}",
            field="series",
        )
    return x


def make_epi_data(
    name: str,
    series: np.ndarray,
    adjacency: np.ndarray,
    region_ids: list[str] | None = None,
    *,
    window: int,
    horizon: int,
) -> EpiData:
    x = validate_series(series, window=window, horizon=horizon)
    adj = validate_adjacency(adjacency, n_regions=x.shape[1])
    ids = tuple(region_ids) if region_ids is not None else tuple(f"{name}-{i}" for i in range(x.shape[1]))
    if len(ids) != x.shape[1] or len(set(ids)) != len(ids):
        raise TrainingInputError(f"need {x.shape[1]} distinct region ids, got {len(ids)}", field="region_ids")
    return EpiData(name=name, series=x, adjacency=adj, region_ids=ids)


def load_epi(name: str, *, data_root: Path | str, window: int = 20, horizon: int = 15) -> EpiData:
    """Load ``japan`` or ``us_states`` from the shared data folder."""
    if name not in DATASETS:
        raise TrainingInputError(
            f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}", field="dataset"
        )
    series_path, adj_path = (Path(data_root) / p for p in DATASETS[name])
    series = np.loadtxt(series_path, delimiter=",", ndmin=2)
    adjacency = np.loadtxt(adj_path, delimiter=",", ndmin=2)
    # Japan's column order is undocumented by the source; healthai_training.epi.japan recovers it from
    # the adjacency (matched to the real prefecture borders).
    if name == "us_states":
        ids, names = list(US_STATES), tuple(s.replace("_", " ") for s in US_STATES)
    else:
        from healthai_training.epi.japan import JAPAN_COLUMN_ISO, JAPAN_COLUMN_NAMES

        ids, names = list(JAPAN_COLUMN_ISO), JAPAN_COLUMN_NAMES
    data = make_epi_data(name, series, adjacency, ids, window=window, horizon=horizon)
    return replace(data, region_names=names)


SCALINGS = ("per-region", "global")


def minmax_fit(
    series: np.ndarray, n_train: int, scaling: str = "per-region"
) -> tuple[np.ndarray, np.ndarray]:
    """Min and max over the training rows, per region or one pair for all regions (broadcast to [N]).

    A region flat over the training rows (a place that reported zeros before it reported at all) gets
    the span of all regions' training rows (1 when every region is flat): with a span of 1, its first
    hundreds of cases would reach the network as inputs in the hundreds and wreck its forecasts and its
    neighbours' (:func:`flat_regions` names them for a warning)."""
    if scaling not in SCALINGS:
        raise TrainingInputError(f"scaling must be one of {SCALINGS}, got {scaling!r}", field="scaling")
    lo = series[:n_train].min(axis=0)
    hi = series[:n_train].max(axis=0)
    if scaling == "global":
        lo, hi = np.full_like(lo, lo.min()), np.full_like(hi, hi.max())
    pooled = float(hi.max() - lo.min()) if hi.size else 0.0
    hi = np.where(hi > lo, hi, lo + (pooled if pooled > 0 else 1.0))
    return lo, hi


def flat_regions(series: np.ndarray, n_train: int, region_ids: tuple[str, ...]) -> list[str]:
    """The regions whose counts never change over the first ``n_train`` rows."""
    rows = series[:n_train]
    flat = np.flatnonzero(rows.max(axis=0) <= rows.min(axis=0)) if len(rows) else np.array([], int)
    return [region_ids[j] for j in flat]


def target_weeks(data: EpiData, split: str) -> np.ndarray:
    """Week indices whose targets belong to ``split`` (train / val / test)."""
    a, b = data.split_points
    ranges = {"train": (0, a), "val": (a, b), "test": (b, data.n_weeks)}
    if split not in ranges:
        raise TrainingInputError(f"unknown split {split!r}", field="split")
    return np.arange(*ranges[split])


def anchors_for(targets: np.ndarray, horizon: int, window: int) -> np.ndarray:
    """Window end (exclusive) for each target week at lead ``horizon``; drops targets lacking history."""
    ends = targets - horizon + 1
    return ends[ends - window >= 0]


def windows(series: np.ndarray, ends: np.ndarray, window: int) -> np.ndarray:
    """Stack ``series[e - window : e]`` for each end ``e`` → [len(ends), window, N]."""
    idx = ends[:, None] + np.arange(-window, 0)[None, :]
    return series[idx]
