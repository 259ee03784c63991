"""Markdown tables (mean ± sd over seeds) from several ``train backtest --json`` files of one data set:
``python -m healthai_training.forecast.seed_tables runs/rolling-us_states-seed*.json``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

# "healthai_stacked"/"healthai" in older files; "healthai" (the stack) and "stgnn" in today's
ORDER = ("healthai_stacked", "healthai", "stgnn", "last_value", "lag52", "seasonal_mean_2x5",
         "seasonal_naive_drift")


def _cell(values: list[float], digits: int = 1) -> str:
    v = np.asarray(values, float)
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}" if len(v) > 1 else f"{v[0]:.{digits}f}"


def tables(paths: list[Path], published: list[float] | None = None) -> str:
    runs = [json.loads(Path(p).read_text()) for p in paths]
    hs = runs[0]["horizons"]
    names = [n for n in ORDER if all(n in r["models"] for r in runs)]
    head = "| h | metric | " + " | ".join(names) + (" | published |" if published else " |")
    # a file holds no seed: n files are n runs (two runs of one seed are not two seeds)
    lines = [f"{len(runs)} runs (one per file); origins {runs[0]['origins']}", "", head,
             "|---|---|" + "---|" * (len(names) + bool(published))]
    for i, h in enumerate(hs):
        for metric in ("rmse", "wis"):
            cells = [_cell([r["models"][n][metric][i] for r in runs]) for n in names]
            stacked = names[0] == "healthai_stacked" or names[:2] == ["healthai", "stgnn"]
            best = min(names[1:] if stacked else names,
                       key=lambda n: np.mean([r["models"][n][metric][i] for r in runs]))
            bold = [f"**{c}**" if n == best else c for n, c in zip(names, cells, strict=True)]
            extra = ""
            if published:
                extra = f" | {published[i]:g}" if metric == "rmse" else " | –"
            lines.append(f"| {h} | {metric.upper()} | " + " | ".join(bold) + extra + " |")
    lines += ["", "| h | " + " | ".join(f"{n} cov50 / cov95" for n in names[:2]) + " |",
              "|---|" + "---|" * 2]
    for i, h in enumerate(hs):
        cells = [f"{_cell([r['models'][n]['coverage_50'][i] for r in runs], 2)} / "
                 f"{_cell([r['models'][n]['coverage_95'][i] for r in runs], 2)}" for n in names[:2]]
        lines.append(f"| {h} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(tables([Path(p) for p in sys.argv[1:]]))
