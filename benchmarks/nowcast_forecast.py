"""Should a forecast from a nowcast carry the nowcast's uncertainty in its interval? Measured: no.

``Forecast --stored --nowcast`` runs the model on the nowcast's point window. The alternative tried
here (thirty-fourth session, pre-registered) runs it also on ``DRAWS`` windows of draws of the latest
periods' final counts and answers with the quantiles of the mixture of the draws' forecasts. Side by
side on the same origins:

- ``complete``: the window as it will be once every case has arrived (what no one has on the day);
- ``stored``: the counts as stored by the origin (no nowcast);
- ``point``: the nowcast's point window, the model's own quantiles (what the server does);
- ``mixture``: the quantiles of the mixture over draws observed + NB(count + 1, F) (a flat prior on
  the final count, the nowcast interval's model), F drawn once per place and draw from its Beta;
- ``centred``: the same with NB(count, F) (a prior ∝ 1 / N), whose mean is the point nowcast.

Data: the served ``forecast_us_states`` v1 (the stacked default, run by ONNX Runtime) on the real
weekly ILI counts of the US-states data set, at origins every ``--every`` weeks in its fixed split's
test portion (weeks the model was not fitted on). The cases of the 16 weeks before each origin are
given an onset day and a report delay (``fast``: geometric, mean 3 days; ``slow``: mean 9 days), and
nowcast as of the origin's Monday by the server's own code (``nowcast_cases``, defaults). Older weeks
are complete. Scored against the complete counts: WIS, 50 % and 95 % interval coverage per horizon.

    .venv/bin/python benchmarks/nowcast_forecast.py
    .venv/bin/python benchmarks/nowcast_forecast.py --model runs/.../models/NAME/1 --series counts.csv

``--model`` / ``--series``: another exported forecaster and the wide series (``period`` + one column
per region) it was trained on with the default 50/20/30 split (RESULTS.md: a 3 % thinning of the
US-states counts, where the mixture did worse).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
from nowcast_mixture import final_count_draws, mixture_quantiles

from healthai.surveillance.nowcast import nowcast_cases
from healthai_training.forecast.backtest import wis

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "server/healthai/data/models/forecast_us_states/1"
SERIES = ROOT.parent / "shared/data/epi/us_states/state360.txt"
RECENT_WEEKS = 16  # the nowcast's estimation window (84 days) and maximum delay (28 days), in weeks
FIRST_MONDAY = pd.Timestamp("2010-01-04")  # week 0 of the series (any Monday: only weekdays matter)
DELAY_MEANS = {"fast": 3.0, "slow": 9.0}
VARIANTS = ("complete", "stored", "point", "mixture", "centred")
DRAWS, SEED = 32, 0
HORIZONS = (1, 2, 3, 5)


def recent_cases(series: np.ndarray, origin: int, mean_delay: float, rng: np.random.Generator
                 ) -> pd.DataFrame:
    """Every case of the RECENT_WEEKS weeks before ``origin``: region, onset day, report day."""
    weeks = series[origin - RECENT_WEEKS:origin].round().astype(np.int64)  # [weeks, regions]
    week = np.repeat(np.repeat(np.arange(RECENT_WEEKS), weeks.shape[1]), weeks.ravel())
    region = np.repeat(np.tile(np.arange(weeks.shape[1]), RECENT_WEEKS), weeks.ravel())
    start = FIRST_MONDAY + pd.Timedelta(weeks=origin - RECENT_WEEKS)
    day = start + pd.to_timedelta(7 * week + rng.integers(0, 7, len(week)), unit="D")
    delay = rng.geometric(1 / (mean_delay + 1), len(week)) - 1
    return pd.DataFrame({"patient_id": np.arange(len(week)), "place": region, "day": day,
                         "reported": day + pd.to_timedelta(delay, unit="D")})


def windows(series: np.ndarray, origin: int, window: int, cases: pd.DataFrame
            ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The window of each plain variant ([W, N]) and each mixture's draws' windows ([K, W, N]) as of
    the origin."""
    today = FIRST_MONDAY + pd.Timedelta(weeks=origin)
    got = nowcast_cases(cases, today=today, freq="W")
    n = series.shape[1]

    def wide(values: np.ndarray) -> np.ndarray:
        frame = pd.DataFrame({"period": got.table["period"], "region": got.table["region"], "v": values})
        table = frame.pivot(index="period", columns="region", values="v")
        # a small state whose every recent case is still to come has no row: nothing stored, 0
        return table.reindex(columns=range(n)).fillna(0.0).to_numpy(np.float64)[-RECENT_WEEKS:]
    complete = series[origin - window:origin].astype(np.float64)
    stored, point = complete.copy(), complete.copy()
    stored[-RECENT_WEEKS:] = wide(got.table["count"].to_numpy(np.float64))
    nowcast = wide(got.table["nowcast"].to_numpy(np.float64))
    point[-RECENT_WEEKS:] = np.maximum(nowcast, stored[-RECENT_WEEKS:])
    draws = {}
    for name in ("mixture", "centred"):
        drawn = final_count_draws(got, DRAWS, np.random.default_rng(SEED), centred=name == "centred")
        draws[name] = np.repeat(complete[None], DRAWS, axis=0)
        recent = np.stack([wide(d) for d in drawn])
        draws[name][:, -RECENT_WEEKS:] = np.maximum(recent, stored[-RECENT_WEEKS:])
    return {"complete": complete, "stored": stored, "point": point}, draws


def _series(path: Path, model: Path) -> np.ndarray:
    """[T, N] counts in the model's region order (graph.json)."""
    if path.suffix == ".txt":
        return np.loadtxt(path, delimiter=",")
    ids = pd.read_json(model / "graph.json", typ="series")["region_ids"]
    return pd.read_csv(path, dtype={"period": str})[[str(r) for r in ids]].to_numpy(np.float64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--every", type=int, default=2, help="weeks between origins")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", type=Path, default=MODEL, help="an exported forecaster's version folder")
    ap.add_argument("--series", type=Path, default=SERIES, help="its series: state360.txt or a wide CSV")
    args = ap.parse_args()
    series = _series(args.series, args.model)
    levels = np.array(pd.read_json(args.model / "model_card.json", typ="series")["quantile_levels"])
    onnx_file = args.model / "model.standard.onnx"
    onnx_file = onnx_file if onnx_file.is_file() else args.model / "model.onnx"
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    window = session.get_inputs()[0].shape[1]
    test_start = int(0.7 * len(series))  # the fixed 50/20/30 split the served model was fitted by
    origins = list(range(test_start, len(series) - max(HORIZONS) + 1, args.every))
    lo95, hi95 = int(np.argmin(abs(levels - 0.025))), int(np.argmin(abs(levels - 0.975)))
    lo50, hi50 = int(np.argmin(abs(levels - 0.25))), int(np.argmin(abs(levels - 0.75)))
    print(f"{args.model}, {len(origins)} origins (weeks {origins[0]}-{origins[-1]}), "
          f"{DRAWS} draws; horizons {HORIZONS}")
    gaps: dict[str, list[float]] = {"point": [], "mixture": [], "centred": []}
    ratios: dict[str, list[float]] = {"mixture": [], "centred": []}
    for scenario, mean_delay in DELAY_MEANS.items():
        rng = np.random.default_rng(args.seed)
        scores = {v: {h: {"wis": [], "c50": [], "c95": []} for h in HORIZONS} for v in VARIANTS}
        added = []
        began = time.perf_counter()
        for origin in origins:
            plain, draws = windows(series, origin, window, recent_cases(series, origin, mean_delay, rng))
            recent = max(plain["complete"][-4:].sum(), 1)
            added.append((plain["point"] - plain["stored"]).sum() / recent)
            batch = np.concatenate([np.stack([plain[v] for v in ("complete", "stored", "point")]),
                                    draws["mixture"], draws["centred"]])
            quantiles = np.sort(session.run(["forecast"], {"history": batch.astype(np.float32)})[0], axis=-1)
            by_variant = {"complete": quantiles[0], "stored": quantiles[1], "point": quantiles[2],
                          "mixture": mixture_quantiles(quantiles[3:3 + DRAWS], levels, levels),
                          "centred": mixture_quantiles(quantiles[3 + DRAWS:], levels, levels)}
            for v, q in by_variant.items():
                for h in HORIZONS:
                    y, qh = series[origin + h - 1], q[h - 1]
                    scores[v][h]["wis"].append(wis(y, qh, levels).mean())
                    scores[v][h]["c50"].append(np.mean((y >= qh[:, lo50]) & (y <= qh[:, hi50])))
                    scores[v][h]["c95"].append(np.mean((y >= qh[:, lo95]) & (y <= qh[:, hi95])))
        print(f"\n{scenario} delays (mean {mean_delay:g} days; the nowcast added {np.mean(added):.0%} of the "
              f"last 4 weeks' final count on average; {time.perf_counter() - began:.0f} s)")
        print("| horizon | WIS complete / stored / point / mixture / centred | ÷ point (mixture, centred) | "
              "50 % coverage (same order) | 95 % coverage (same order) |")
        print("|---|---|---|---|---|")
        for h in HORIZONS:
            w, c50, c95 = ({v: float(np.mean(scores[v][h][k])) for v in VARIANTS}
                           for k in ("wis", "c50", "c95"))
            print(f"| {h} | {' / '.join(f'{w[v]:.1f}' for v in VARIANTS)} | "
                  f"{w['mixture'] / w['point']:.3f}, {w['centred'] / w['point']:.3f} | "
                  f"{' / '.join(f'{c50[v]:.2f}' for v in VARIANTS)} | "
                  f"{' / '.join(f'{c95[v]:.2f}' for v in VARIANTS)} |")
            for v in ratios:
                ratios[v].append(w[v] / w["point"])
            for v in gaps:
                gaps[v].append(abs(c95[v] - 0.95) + abs(c50[v] - 0.5))
    print("\nover every scenario and horizon: mean |coverage95 - 0.95| + |coverage50 - 0.50|: "
          + ", ".join(f"{v} {np.mean(g):.4f}" for v, g in gaps.items()) + "; WIS ÷ point, geometric mean: "
          + ", ".join(f"{v} {np.exp(np.mean(np.log(r))):.4f}" for v, r in ratios.items()))

if __name__ == "__main__":
    main()
