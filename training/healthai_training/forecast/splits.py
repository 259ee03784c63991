"""Export the exact splits of ``healthai train backtest`` and score other models' point forecasts on them.

Peer models (Cola-GNN, EpiGNN from ``epilearn``) run in a separate environment (benchmarks/peers/):
``export_splits`` writes everything they need (the series, the adjacency, and per origin the
validation start, test start, end, the min-max scaling and the target periods of every split and
horizon) from the same functions the backtest uses, and ``score_points`` scores their forecasts
here, with the truth taken from our own loader, so the splits and the scoring are provably those of
our backtest. Peers give point forecasts: their WIS is that of a point mass, i.e. the absolute error,
and coverage is ``None``.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from healthai_training.epi import baselines, metrics
from healthai_training.epi import data as epi_data
from healthai_training.errors import TrainingInputError
from healthai_training.forecast.backtest import VAL_FRACTION, backtest_origins
from healthai_training.forecast.results_json import json_number

FORMAT = "healthai.backtest-splits/1"


def series_digest(series: np.ndarray) -> str:
    """SHA-256 of the series as float64, C order (the peers check it before training)."""
    return hashlib.sha256(np.ascontiguousarray(series, dtype=np.float64).tobytes()).hexdigest()


def origin_cuts(
    data: epi_data.EpiData, *, fixed_split: bool, first_seasons: int = 2
) -> list[tuple[int, int, int]]:
    """(validation start, test start, end) per origin, as ``backtest.run_backtest`` cuts them."""
    if fixed_split:
        val_start, test_start = epi_data.split_points(data.n_weeks, data.split)
        return [(val_start, test_start, data.n_weeks)]
    origins = backtest_origins(data.n_weeks, data.season, first_seasons=first_seasons)
    if not origins:
        raise TrainingInputError(
            f"series of {data.n_weeks} periods has no season after the first {first_seasons}", field="series"
        )
    return [(int((1 - VAL_FRACTION) * o), o, min(o + data.season, data.n_weeks)) for o in origins]


def _targets(
    data: epi_data.EpiData, cuts: tuple[int, int, int], split: str, h: int, window: int
) -> list[int]:
    """Target periods of ``split`` at lead ``h`` that have a full input window (``series[t-h-window+1 :
    t-h+1]``); the test split keeps every period, as the backtest scores them all."""
    val_start, origin, end = cuts
    sub = epi_data.EpiData(
        name=data.name, series=data.series[:end], adjacency=data.adjacency, region_ids=data.region_ids,
        season=data.season, cuts=(val_start, origin),
    )  # fmt: skip
    t = epi_data.target_weeks(sub, split)
    if split == "test":
        if t[0] - h - window + 1 < 0:
            raise TrainingInputError(
                f"origin {origin} lacks a {window}-period window at h={h}", field="window"
            )
        return t.tolist()
    return (epi_data.anchors_for(t, h, window) + h - 1).tolist()


def export_splits(
    data: epi_data.EpiData,
    *,
    horizons: tuple[int, ...],
    window: int = 20,
    fixed_split: bool = False,
    first_seasons: int = 2,
) -> dict[str, Any]:
    """Everything a peer needs to train and forecast on our splits (JSON-serialisable)."""
    origins = []
    for cuts in origin_cuts(data, fixed_split=fixed_split, first_seasons=first_seasons):
        val_start, origin, end = cuts
        lo, hi = epi_data.minmax_fit(data.series[:end], val_start)
        origins.append(
            {
                "val_start": val_start,
                "origin": origin,
                "end": end,
                "scale_min": lo.tolist(),
                "scale_max": hi.tolist(),
                "targets": {
                    split: {str(h): _targets(data, cuts, split, h, window) for h in horizons}
                    for split in ("train", "val", "test")
                },
            }
        )
    return {
        "format": FORMAT,
        "dataset": data.name,
        "protocol": "fixed" if fixed_split else "rolling",
        "split": list(data.split) if fixed_split else None,
        "season": data.season,
        "window": window,
        "horizons": list(horizons),
        "region_ids": list(data.region_ids),
        "series_sha256": series_digest(data.series),
        "series": data.series.tolist(),
        "adjacency": data.adjacency.tolist(),
        "origins": origins,
    }


def score_points(
    data: epi_data.EpiData, splits: dict[str, Any], predictions: dict[str, Any]
) -> dict[str, Any]:
    """Pool each model's point forecasts over origins × test periods × regions, per horizon.

    ``predictions``: ``{"models": {name: {str(h): [one [len(test targets), N] list per origin]}}}`` as
    benchmarks/peers/run_peers.py writes it. Truth comes from ``data``, which must be the exported
    series. Returns the ``--json`` layout of ``train backtest`` (WIS = MAE for point forecasts)."""
    if splits.get("format") != FORMAT:
        raise TrainingInputError(f"splits format must be {FORMAT!r}", field="splits")
    if series_digest(data.series) != splits["series_sha256"]:
        raise TrainingInputError(
            "the series differs from the one the splits were exported from", field="series"
        )
    models: dict[str, dict[str, list]] = {}
    hs = [str(h) for h in splits["horizons"]]
    for name, per_h in predictions["models"].items():
        rows = []
        for h in hs:
            if h not in per_h or len(per_h[h]) != len(splits["origins"]):
                raise TrainingInputError(
                    f"{name}: need one forecast per origin at h={h}", field="predictions"
                )
            ys, ps = [], []
            for o, pred in zip(splits["origins"], per_h[h], strict=True):
                t = np.asarray(o["targets"]["test"][h], dtype=int)
                p = np.asarray(pred, dtype=np.float64)
                if p.shape != (len(t), data.n_regions) or not np.all(np.isfinite(p)):
                    raise TrainingInputError(
                        f"{name}: origin {o['origin']} h={h}: need finite [{len(t)}, {data.n_regions}] "
                        f"forecasts, got shape {p.shape}",
                        field="predictions",
                    )
                seen = data.observed(t)
                ys.append(data.series[t][seen])  # cells filled by --missing interpolate are not scored
                ps.append(p[seen])
            y, p = np.concatenate(ys), np.concatenate(ps)
            rows.append({"rmse": metrics.rmse(y, p), "mae": metrics.mae(y, p), "pcc": metrics.pcc(y, p)})
        models[name] = {
            "rmse": [r["rmse"] for r in rows],
            "mae": [r["mae"] for r in rows],
            "pcc": [json_number(r["pcc"]) for r in rows],
            "wis": [r["mae"] for r in rows],  # a point forecast's WIS is its absolute error
            "coverage_50": [None] * len(rows),
            "coverage_95": [None] * len(rows),
        }
    return {
        "horizons": [int(h) for h in hs],
        "origins": [o["origin"] for o in splits["origins"]],
        "point_forecasts": sorted(models),
        "models": models,
    }


def baseline_points(data: epi_data.EpiData, splits: dict[str, Any]) -> dict[str, Any]:
    """The backtest's baselines on the exported test targets, in the peers' predictions layout: scored
    by ``score_points`` they must reproduce the baseline RMSE / MAE of ``train backtest --json`` (a
    check that the exported splits and the pooling are the backtest's)."""
    models: dict[str, dict[str, list]] = {}
    for h in map(str, splits["horizons"]):
        for o in splits["origins"]:
            t = np.asarray(o["targets"]["test"][h], dtype=int)
            points = baselines.all_baselines(data.series[: o["end"]], t, int(h), season=data.season)
            for name, p in points.items():
                models.setdefault(name, {}).setdefault(h, []).append(p.tolist())
    n = len(splits["origins"])
    complete = {
        name: per_h
        for name, per_h in models.items()
        if all(len(per_h.get(str(h), [])) == n for h in splits["horizons"])
    }
    return {"models": complete}
