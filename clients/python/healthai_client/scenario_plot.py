"""PNG of a scenario against its no-intervention baseline (matplotlib, imported on use)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from healthai_client.plotting import pyplot
from healthai_client.scenario import ScenarioResult


def _band(ax: object, r: ScenarioResult, series: np.ndarray, color: str, label: str) -> None:
    """series [P, L]: 5-95 % and 25-75 % bands and the median over period start days."""
    x = r.period_start_day
    lv = list(np.round(r.levels, 3))

    def at(level: float) -> np.ndarray | None:
        return series[:, lv.index(level)] if level in lv else None

    for lo, hi, alpha in ((0.05, 0.95, 0.15), (0.25, 0.75, 0.3)):
        a, b = at(lo), at(hi)
        if a is not None and b is not None:
            ax.fill_between(x, a, b, color=color, alpha=alpha, linewidth=0)  # type: ignore[attr-defined]
    mid = at(0.5)
    ax.plot(x, mid if mid is not None else series.mean(axis=1), color=color, label=label)  # type: ignore[attr-defined]


def period_days(r: ScenarioResult) -> np.ndarray:
    """Days in each period (the last one may be short)."""
    starts = r.period_start_day
    end = r.horizon_days or (2 * starts[-1] - starts[-2] if len(starts) > 1 else starts[-1] + 1)
    return np.diff(np.append(r.period_start_day, end)).astype(np.float64)


def plot_scenario(
    result: ScenarioResult, baseline: ScenarioResult | None, regions: Sequence[str], path: Path
) -> Path:
    plt = pyplot("--plot")
    unknown = [r for r in regions if r not in result.region_ids]
    if unknown:
        raise ValueError(f"plot regions {unknown} are not in the result")
    panels = ["all regions", *regions]
    fig, axes = plt.subplots(len(panels) + 1, 1, figsize=(9, 2.6 * (len(panels) + 1)), squeeze=False)
    for ax, name in zip(axes[:-1, 0], panels, strict=True):
        for r, color, label in ((baseline, "tab:gray", "baseline"), (result, "tab:blue", "scenario")):
            if r is None:
                continue
            series = r.total_quantiles if name == "all regions" else r.quantiles[:, r.region_ids.index(name)]
            _band(ax, r, series / period_days(r)[:, None], color, label)
        ax.set_title(f"onsets per day (period means): {name}", fontsize=10)
        ax.set_xlabel("day")
        ax.legend(loc="upper right", fontsize=8)
    ax = axes[-1, 0]
    mid = int(np.argmin(np.abs(result.levels - 0.5)))
    idx = [result.region_ids.index(r) for r in regions]
    if baseline is not None:
        bidx = [baseline.region_ids.index(r) for r in regions]
        ax.scatter(
            baseline.peak_day[bidx, mid], baseline.peak_size[bidx, mid], color="tab:gray", label="baseline"
        )
        for k, r in enumerate(regions):
            ax.annotate(r, (baseline.peak_day[bidx[k], mid], baseline.peak_size[bidx[k], mid]), fontsize=8)
    ax.scatter(result.peak_day[idx, mid], result.peak_size[idx, mid], color="tab:blue", label="scenario")
    for k, r in enumerate(regions):
        ax.annotate(r, (result.peak_day[idx[k], mid], result.peak_size[idx[k], mid]), fontsize=8)
    ax.set_title("median prevalence peak per region: day vs size", fontsize=10)
    ax.set_xlabel("peak day")
    ax.set_ylabel("peak infectious")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
