"""Rolling-origin (expanding window) evaluation: ``healthai train backtest``.

Origins are the starts of every season after the first two (periods ``k × season``, k = 2, 3, ...).
At each origin ``o`` everything is chosen on data before ``o``: the ST-GNN trains on
``[0, 0.8 o)`` and picks its epoch on ``[0.8 o, o)``; the stack (``stacking.fit_stack``: weights,
shrinkage, bands) and the baselines' bands (``stacking.calibrate``) are fitted on those validation periods
plus the (out-of-sample) forecasts of every earlier origin's season, which all lie before ``o``.
Each period of the season after ``o`` is then forecast h steps ahead from the data up to ``t - h``
(the model is not retrained inside the season).

Models: ``healthai`` (the ST-GNN with its own quantiles), ``healthai_stacked`` (the default forecaster
of issue 12: ``stacking.fit_stack`` per horizon over the ST-GNN median and the baselines a fixed
window can compute — ``origins.MEMBERS`` —, recent fit sets weighted more, shrunk toward the best
of them on the fit sets, with bands from past residuals; ``seeds``: the ST-GNN is a seed ensemble),
and the baselines ``last_value``, ``lag52`` (lag one season),
``seasonal_mean_2x5`` (same periods ±2 in the two prior seasons) and ``seasonal_naive_drift``, each
calibrated from its own residuals on the same sets. Scores pooled over origins × periods × regions:
RMSE and MAE of the point forecast (the ST-GNN's median, the stack, the baseline itself), WIS and
50 % / 95 % coverage of the quantiles; relative WIS against every baseline. Cells filled by
``--missing interpolate`` (``EpiData.imputed``) are forecast but never scored, and no stack weight or
band is fitted to them.

WIS uses ``scoringrules.interval_score`` for the interval terms (scoringrules 0.10.0's
``weighted_interval_score`` adds ``0.5 × median`` instead of ``0.5 × |y − median|``; the median term is
added here).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from healthai_training.epi import data as epi_data
from healthai_training.epi import metrics
from healthai_training.errors import TrainingInputError
from healthai_training.forecast.origins import MEMBERS, forecasts_at, no_fold_anchor
from healthai_training.forecast.results_json import json_number
from healthai_training.forecast.stacking import FitSet, calibrate, fit_stack
from healthai_training.forecast.train import ForecastConfig

logger = logging.getLogger(__name__)
VAL_FRACTION = 0.2  # of the data before each origin: epoch selection, stack weights, calibration
BASELINES = ("last_value", "lag52", "seasonal_mean_2x5", "seasonal_naive_drift")


@dataclass
class _Pooled:
    y: list[np.ndarray]
    q: dict[str, list[np.ndarray]]  # quantiles (WIS, coverage)
    p: dict[str, list[np.ndarray]]  # point forecasts (RMSE, MAE): the baseline itself, not a shifted median
    observed: list[np.ndarray]  # bool, like y: False where the truth was filled in (not scored)


def backtest_origins(n: int, season: int, *, first_seasons: int = 2) -> list[int]:
    """Origins at the start of every season after ``first_seasons``, each with >= 1 test period."""
    return [k * season for k in range(first_seasons, n) if k * season < n]


def wis(y: np.ndarray, q: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Per-point WIS (Bracher et al. 2021) with scoringrules' interval scores; levels symmetric."""
    import scoringrules as sr

    m = int(np.argmin(np.abs(levels - 0.5)))
    alpha = 2 * levels[:m]
    lower, upper = q[..., :m], q[..., ::-1][..., :m]
    interval = np.asarray(sr.interval_score(y, lower, upper, alpha, backend="numpy"))
    return (0.5 * np.abs(y - q[..., m]) + (interval * alpha / 2).sum(axis=-1)) / (m + 0.5)


def _coverage(y: np.ndarray, q: np.ndarray, levels: np.ndarray, nominal: float) -> float:
    lo = int(np.argmin(np.abs(levels - (1 - nominal) / 2)))
    hi = int(np.argmin(np.abs(levels - (1 + nominal) / 2)))
    return float(np.mean((y >= q[..., lo]) & (y <= q[..., hi])))


def score(y: np.ndarray, q: np.ndarray, levels: np.ndarray, point: np.ndarray,
          observed: np.ndarray | None = None) -> dict[str, float]:
    """Metrics pooled over the cells of ``y``; ``observed`` (bool, like ``y``) keeps only those cells."""
    if observed is not None:
        y, q, point = y[observed], q[observed], point[observed]
    err = y - point
    return {
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
        "pcc": metrics.pcc(y, point),  # the published benchmarks' PCC: pooled over periods x regions
        "wis": float(np.mean(wis(y, q, levels))),
        "coverage50": _coverage(y, q, levels, 0.5),
        "coverage95": _coverage(y, q, levels, 0.95),
    }


def stack_members(test: FitSet, val: FitSet | None) -> list[str]:
    """The members every set of this origin can hold (a short history lacks some baselines)."""
    return [n for n in MEMBERS if n in test.points and (val is None or n in val.points)]


def _one_origin(
    data: epi_data.EpiData,
    origin: int,
    cfg: ForecastConfig,
    pooled: dict[int, _Pooled] | None,
    weights: dict,
    past: dict[int, list[FitSet]],
    *,
    val_start: int | None = None,
    end: int | None = None,
    cache_dir: Path | None = None,
    seeds: tuple[int, ...] = (),
) -> None:
    """Train at ``origin``, fit the stack per horizon on its validation periods + every earlier
    origin's (out-of-sample) season, score the season after it into ``pooled`` (None: fit only)."""
    f = forecasts_at(data, cfg, origin, steps=cfg.horizons, val_start=val_start, end=end,
                     val_fraction=VAL_FRACTION, cache_dir=cache_dir, seeds=seeds)
    levels = np.asarray(f.model.quantiles)
    for h in cfg.horizons:
        key, test, val = str(h), f.test[h], f.val.get(h)
        sets = [observed_only(data, s) for s in ([val] if val is not None else []) + past.get(h, [])]
        names = stack_members(test, val)
        usable = [x for x in sets if all(n in x.points for n in names)]
        fit = fit_stack(usable, names, levels, season=data.season, anchor=no_fold_anchor(cfg))
        weights.setdefault(key, []).append({"origin": origin, "fit_sets": len(usable), **fit.record()})
        past.setdefault(h, []).append(test)
        if pooled is None:
            continue
        row = pooled.setdefault(h, _Pooled([], {}, {}, []))
        row.y.append(test.y)
        row.observed.append(data.observed(np.arange(test.start, test.end)))
        row.q.setdefault("healthai", []).append(f.test_q[h])
        row.p.setdefault("healthai", []).append(test.points["healthai"])
        stacked = fit.combine(test.points)
        row.p.setdefault("healthai_stacked", []).append(stacked)
        row.q.setdefault("healthai_stacked", []).append(fit.bands(stacked))
        for n in BASELINES:
            own = [(x.points[n], x.y) for x in sets if n in x.points]
            if n in test.points and own:
                row.q.setdefault(n, []).append(calibrate(test.points[n], own, levels))
                row.p.setdefault(n, []).append(test.points[n])


def observed_only(data: epi_data.EpiData, s: FitSet) -> FitSet:
    """A fit set's observed cells only (flattened): a cell filled by --missing is no truth to fit to."""
    keep = data.observed(np.arange(s.start, s.end))
    if keep.all():
        return s
    return FitSet({n: p[keep] for n, p in s.points.items()}, s.y[keep], s.start, s.end, s.selected)


def inner_origins(before: int, cfg: ForecastConfig, season: int, first_seasons: int = 2) -> list[int]:
    """Rolling origins inside ``[0, before)`` whose training part holds a window + steps."""
    return [o for o in backtest_origins(before, season, first_seasons=first_seasons)
            if int((1 - VAL_FRACTION) * o) >= cfg.effective_window + cfg.steps]


def run_backtest(
    *,
    data: epi_data.EpiData,
    config: ForecastConfig,
    first_seasons: int = 2,
    fixed_split: bool = False,
    cache_dir: Path | None = None,
    seeds: tuple[int, ...] = (),
) -> dict:
    """Every origin, then scores per model and horizon (pooled); a model missing at some origin
    (a baseline without enough history) is scored only where every origin has it. ``fixed_split``:
    one scored origin at the test start of ``data.split`` (the papers' 50/20/30), validation = its
    validation part, test = everything after; the stack there also learns from the rolling origins
    inside the data before the test start (exactly what ``healthai train forecast`` exports).
    ``seeds`` (>= 2): the ST-GNN member is a seed ensemble (``ensemble.ForecastEnsemble``)."""
    pooled: dict[int, _Pooled] = {}
    weights: dict[str, list] = {}
    past: dict[int, list[FitSet]] = {}
    if fixed_split:
        val_start, test_start = epi_data.split_points(data.n_weeks, data.split)
        inner = inner_origins(test_start, config, data.season, first_seasons)
        for o in inner:
            _one_origin(data, o, config, None, {}, past, end=min(o + data.season, test_start),
                        cache_dir=cache_dir, seeds=seeds)
        _one_origin(data, test_start, config, pooled, weights, past, val_start=val_start, end=data.n_weeks,
                    cache_dir=cache_dir, seeds=seeds)
        return {**_summary(data, config, [test_start], pooled, weights), "stack_origins": inner}
    origins = backtest_origins(data.n_weeks, data.season, first_seasons=first_seasons)
    if not origins:
        raise TrainingInputError(
            f"series of {data.n_weeks} periods has no season after the first {first_seasons} "
            f"({data.season} periods each) to backtest on: --fixed-split evaluates at the --split test "
            "start instead, --season-length sets a shorter season",
            field="series",
        )
    n_train = int((1 - VAL_FRACTION) * origins[0])
    if n_train < config.effective_window + config.steps:
        raise TrainingInputError(
            f"the first origin ({origins[0]}) leaves {n_train} training periods; "
            f"need window + steps = {config.effective_window + config.steps}",
            field="series",
        )
    for origin in origins:
        _one_origin(data, origin, config, pooled, weights, past, cache_dir=cache_dir, seeds=seeds)
    return _summary(data, config, origins, pooled, weights)


def _summary(
    data: epi_data.EpiData, config: ForecastConfig, origins: list[int], pooled: dict, weights: dict
) -> dict:
    levels = np.asarray(config.quantiles)
    out: dict[str, dict] = {}
    for h, row in sorted(pooled.items()):
        y, observed = np.concatenate(row.y), np.concatenate(row.observed)
        for name, parts in row.q.items():
            if len(parts) == len(row.y):
                point = np.concatenate(row.p[name])
                out.setdefault(name, {})[str(h)] = score(y, np.concatenate(parts), levels, point, observed)
    for name in list(out):
        for h, s in out[name].items():
            s["relative_wis"] = {
                b: s["wis"] / out[b][h]["wis"] for b in BASELINES if b in out and h in out[b]
            }
    return {
        "origins": origins,
        "season": data.season,
        "horizons": list(config.horizons),
        "models": out,
        "stack_weights": weights,
        "n_regions": data.n_regions,
    }


def results_json(result: dict) -> dict:
    """Issue 12's machine-readable layout (plus relative WIS and the origins). ``healthai`` is the default
    forecaster (the stack, ``healthai_stacked`` in the tables) and ``stgnn`` the ST-GNN alone, so the
    key means the same model as in ``train forecast --json``."""
    hs = [str(h) for h in result["horizons"]]
    keys = (
        ("rmse", "rmse"),
        ("mae", "mae"),
        ("pcc", "pcc"),
        ("wis", "wis"),
        ("coverage_50", "coverage50"),
        ("coverage_95", "coverage95"),
    )
    models = {}
    for name, rows in result["models"].items():
        if all(h in rows for h in hs):
            models[name] = {out: [json_number(rows[h][k]) for h in hs] for out, k in keys}
            models[name]["relative_wis"] = {
                b: [rows[h]["relative_wis"].get(b) for h in hs] for b in rows[hs[0]]["relative_wis"]
            }
    if "healthai_stacked" in models:  # as in `train forecast --json`: "healthai" is the default forecaster
        models = {"healthai": models.pop("healthai_stacked"), "stgnn": models.pop("healthai"), **models}
    return {"horizons": result["horizons"], "origins": result["origins"], "models": models}


def markdown_table(result: dict, *, metric: str = "rmse") -> str:
    names = [n for n in ("healthai_stacked", "healthai", *BASELINES) if n in result["models"]]
    lines = ["| h | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    digits = 3 if metric == "pcc" else 1
    for h in result["horizons"]:
        values = [json_number(result["models"][n].get(str(h), {}).get(metric)) for n in names]
        cells = [f"{v:.{digits}f}" if v is not None else "–" for v in values]
        lines.append(f"| {h} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(result: dict, path, *, title: str) -> None:
    """RMSE and WIS per horizon, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    hs = result["horizons"]
    for name, rows in result["models"].items():
        if all(str(h) in rows for h in hs):
            style = {"lw": 2.2} if name.startswith("healthai") else {"lw": 1.0, "ls": "--"}
            for ax, metric in zip(axes, ("rmse", "wis"), strict=True):
                ax.plot(hs, [rows[str(h)][metric] for h in hs], marker="o", ms=3, label=name, **style)
    for ax, metric in zip(axes, ("RMSE", "WIS"), strict=True):
        ax.set_xlabel("horizon")
        ax.set_title(metric, fontsize=10)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
