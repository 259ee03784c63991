"""Rolling-origin (expanding window) evaluation: ``healthai train backtest``.

Origins are the starts of every season after the first two (periods ``k × season``, k = 2, 3, ...).
At each origin ``o`` everything is chosen on data before ``o``: the ST-GNN trains on
``[0, 0.8 o)`` and picks its epoch on ``[0.8 o, o)``; the stack weights (``stacking.fit_weights``)
and every calibrated quantile band (``stacking.calibrate``) are fitted on those validation periods
plus the (out-of-sample) forecasts of every earlier origin's season, which all lie before ``o``.
Each period of the season after ``o`` is then forecast h steps ahead from the data up to ``t - h``
(the model is not retrained inside the season).

Models: ``healthai`` (the ST-GNN with its own quantiles), ``healthai_stacked`` (the default forecaster
of issue 12: per-horizon convex stack of the ST-GNN median and the seasonal baselines, calibrated),
and the baselines ``last_value``, ``lag52`` (lag one season), ``seasonal_mean_2x5`` (same periods ±2 in
the two prior seasons) and ``seasonal_naive_drift``, each calibrated from its own validation
residuals. Scores pooled over origins × periods × regions: RMSE and MAE of the point forecast (the
ST-GNN's median, the stack, the baseline itself), WIS and 50 % / 95 % coverage of the quantiles;
relative WIS against every baseline.

WIS uses ``scoringrules.interval_score`` for the interval terms (scoringrules 0.10.0's
``weighted_interval_score`` adds ``0.5 × median`` instead of ``0.5 × |y − median|``; the median term is
added here).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

from healthai_training.epi import baselines
from healthai_training.epi import data as epi_data
from healthai_training.errors import TrainingInputError
from healthai_training.forecast.stacking import calibrate, fit_weights
from healthai_training.forecast.train import ForecastConfig, evaluate, train_forecaster

logger = logging.getLogger(__name__)
VAL_FRACTION = 0.2  # of the data before each origin: epoch selection, stack weights, calibration
BASELINES = ("last_value", "lag52", "seasonal_mean_2x5", "seasonal_naive_drift")


@dataclass
class _Set:
    """Point forecasts of every model on some periods before an origin, the truth, region scales."""

    points: dict[str, np.ndarray]
    y: np.ndarray
    scale: np.ndarray


@dataclass
class _Pooled:
    y: list[np.ndarray]
    q: dict[str, list[np.ndarray]]  # quantiles (WIS, coverage)
    p: dict[str, list[np.ndarray]]  # point forecasts (RMSE, MAE): the baseline itself, not a shifted median


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


def score(y: np.ndarray, q: np.ndarray, levels: np.ndarray, point: np.ndarray) -> dict[str, float]:
    err = y - point
    return {
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
        "wis": float(np.mean(wis(y, q, levels))),
        "coverage50": _coverage(y, q, levels, 0.5),
        "coverage95": _coverage(y, q, levels, 0.95),
    }


def _points(series: np.ndarray, targets: np.ndarray, h: int, season: int) -> dict[str, np.ndarray]:
    return baselines.all_baselines(series, targets, h, season=season)


def _combine(points: dict[str, np.ndarray], w: np.ndarray, names: list[str]) -> np.ndarray:
    return sum(wi * points[n] for wi, n in zip(w, names, strict=True))


def _one_origin(
    data: epi_data.EpiData,
    origin: int,
    cfg: ForecastConfig,
    pooled: dict[int, _Pooled],
    weights: dict,
    past: dict[int, list[_Set]],
    *,
    val_start: int | None = None,
    end: int | None = None,
) -> None:
    end = min(origin + data.season, data.n_weeks) if end is None else end
    val_start = int((1 - VAL_FRACTION) * origin) if val_start is None else val_start
    sub = replace(data, series=data.series[:end], cuts=(val_start, origin))
    result = train_forecaster(data=sub, config=cfg)
    model = result.model
    levels = np.asarray(model.quantiles)
    _, val_q = evaluate(model, sub, cfg.horizons, split="val")
    _, test_q = evaluate(model, sub, cfg.horizons, split="test")
    lo, hi = epi_data.minmax_fit(sub.series, val_start)
    scale = hi - lo
    val_t, test_t = epi_data.target_weeks(sub, "val"), epi_data.target_weeks(sub, "test")
    m = model.median_index
    for h in cfg.horizons:
        key = str(h)
        val_pts = {"healthai": val_q[key][..., m], **_points(sub.series, val_t, h, data.season)}
        test_pts = {"healthai": test_q[key][..., m], **_points(sub.series, test_t, h, data.season)}
        y_test = sub.series[test_t]
        # Fit on this origin's validation periods and on the test seasons of every earlier origin (all
        # before this origin, forecast out of sample): per-horizon weights learned on rolling origins.
        sets = [_Set(val_pts, sub.series[val_t], scale), *past.get(h, [])]
        names = [n for n in ("healthai", *BASELINES) if n in test_pts]
        usable = [x for x in sets if all(n in x.points for n in names)]
        if not usable:  # e.g. the first origin's validation lacks two prior seasons
            names = [n for n in names if n in val_pts]
            usable = sets[:1]
        w = fit_weights(
            np.concatenate([np.stack([x.points[n].ravel() for n in names], 1) for x in usable]),
            np.concatenate([x.y.ravel() for x in usable]),
        )
        weights.setdefault(key, []).append(
            {"origin": origin, "fit_sets": len(usable), **dict(zip(names, w.round(4).tolist(), strict=True))}
        )
        row = pooled.setdefault(h, _Pooled([], {}, {}))
        row.y.append(y_test)
        row.q.setdefault("healthai", []).append(test_q[key])
        row.p.setdefault("healthai", []).append(test_pts["healthai"])
        stacked = _combine(test_pts, w, names)
        row.p.setdefault("healthai_stacked", []).append(stacked)
        row.q.setdefault("healthai_stacked", []).append(
            calibrate(
                stacked,
                [(_combine(x.points, w, names), x.y, x.scale) for x in usable],
                scale,
                levels,
            )
        )
        for n in BASELINES:
            fit = [(x.points[n], x.y, x.scale) for x in sets if n in x.points]
            if n in test_pts and fit:
                row.q.setdefault(n, []).append(calibrate(test_pts[n], fit, scale, levels))
                row.p.setdefault(n, []).append(test_pts[n])
        past.setdefault(h, []).append(_Set(test_pts, y_test, scale))
    logger.info("origin %d: trained to epoch %d", origin, result.metrics["best_epoch"])


def run_backtest(
    *, data: epi_data.EpiData, config: ForecastConfig, first_seasons: int = 2, fixed_split: bool = False
) -> dict:
    """Every origin, then scores per model and horizon (pooled); a model missing at some origin
    (a baseline without enough history) is scored only where every origin has it. ``fixed_split``:
    one origin at the test start of ``data.split`` (the papers' 50/20/30), validation = its
    validation part, test = everything after."""
    if fixed_split:
        val_start, test_start = epi_data.split_points(data.n_weeks, data.split)
        pooled: dict[int, _Pooled] = {}
        weights: dict[str, list] = {}
        _one_origin(data, test_start, config, pooled, weights, {}, val_start=val_start, end=data.n_weeks)
        return _summary(data, config, [test_start], pooled, weights)
    origins = backtest_origins(data.n_weeks, data.season, first_seasons=first_seasons)
    if not origins:
        raise TrainingInputError(
            f"series of {data.n_weeks} periods has no season after the first {first_seasons} "
            f"({data.season} periods each) to backtest on",
            field="series",
        )
    n_train = int((1 - VAL_FRACTION) * origins[0])
    if n_train < config.effective_window + config.steps:
        raise TrainingInputError(
            f"the first origin ({origins[0]}) leaves {n_train} training periods; "
            f"need window + steps = {config.effective_window + config.steps}",
            field="series",
        )
    pooled, weights, past = {}, {}, {}
    for origin in origins:
        _one_origin(data, origin, config, pooled, weights, past)
    return _summary(data, config, origins, pooled, weights)


def _summary(
    data: epi_data.EpiData, config: ForecastConfig, origins: list[int], pooled: dict, weights: dict
) -> dict:
    levels = np.asarray(config.quantiles)
    out: dict[str, dict] = {}
    for h, row in sorted(pooled.items()):
        y = np.concatenate(row.y)
        for name, parts in row.q.items():
            if len(parts) == len(row.y):
                point = np.concatenate(row.p[name])
                out.setdefault(name, {})[str(h)] = score(y, np.concatenate(parts), levels, point)
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
    """Issue 12's machine-readable layout (plus relative WIS and the origins)."""
    hs = [str(h) for h in result["horizons"]]
    keys = (
        ("rmse", "rmse"),
        ("mae", "mae"),
        ("wis", "wis"),
        ("coverage_50", "coverage50"),
        ("coverage_95", "coverage95"),
    )
    models = {}
    for name, rows in result["models"].items():
        if all(h in rows for h in hs):
            models[name] = {out: [rows[h][k] for h in hs] for out, k in keys}
            models[name]["relative_wis"] = {
                b: [rows[h]["relative_wis"].get(b) for h in hs] for b in rows[hs[0]]["relative_wis"]
            }
    return {"horizons": result["horizons"], "origins": result["origins"], "models": models}


def markdown_table(result: dict, *, metric: str = "rmse") -> str:
    names = [n for n in ("healthai_stacked", "healthai", *BASELINES) if n in result["models"]]
    lines = ["| h | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for h in result["horizons"]:
        cells = [
            f"{result['models'][n][str(h)][metric]:.1f}" if str(h) in result["models"][n] else "–"
            for n in names
        ]
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
