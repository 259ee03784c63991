"""Forecasts out: hubverse model-output rows and a quantile-fan plot per region.

Hubverse (https://hubverse.io, model-output format): one row per location × horizon × quantile level
with ``reference_date, target, horizon, location, target_end_date, output_type, output_type_id,
value``. Dates are period *ends*, as hubs date weeks (FluSight: the Saturday ending an MMWR week):
the reference date is the last day of the last observed period and ``target_end_date =
reference_date + horizon × step``, the last day of the target period (a model of MMWR weeks writes
Saturdays; of ISO weeks, Sundays). Horizon h is the h-th period after the last observed one (a hub
whose horizon 0 is the week of its reference date may number them one lower). With stored or dated
history the server's horizon 1 dates them; an undated history needs the reference date from the
caller, taken as given.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from healthai_client.plotting import pyplot
from healthai_client.results import ForecastResult

HUBVERSE_COLUMNS = ("reference_date", "target", "horizon", "location", "target_end_date", "output_type",
                    "output_type_id", "value")
STEP_DAYS = {"W": 7, "D": 1}


def reference_date(result: ForecastResult, given: str | None = None) -> dt.date:
    """The forecast origin: the last day before the server's horizon 1, or ``given`` (ISO date) for a
    forecast without dates; a dated forecast refuses ``given`` rather than relabel its rows."""
    if result.first_forecast_period:
        origin = dt.date.fromisoformat(result.first_forecast_period) - dt.timedelta(days=1)
        if given and given != origin.isoformat():
            raise ValueError(f"reference date {given}: this forecast is dated (horizon 1 starts on "
                             f"{result.first_forecast_period}, so its reference date is {origin}); "
                             "--reference-date is for a history without periods")
        return origin
    if not given:
        raise ValueError("this forecast has no dates (explicit history): give the reference date "
                         "(--reference-date YYYY-MM-DD, the last day of the history's last period)")
    try:
        return dt.date.fromisoformat(given)
    except ValueError:
        raise ValueError(f"reference date {given!r} is not an ISO date (YYYY-MM-DD)") from None


def fips_locations(regions: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Region id -> its US FIPS code (a state's 2 digits from its ISO 3166-2 id or alias; a county id is
    its 5-digit FIPS already), for hubs that key locations by FIPS. ValueError naming regions without one."""
    from healthai.scenario.graphs import STATE_USPS

    state_fips = {f"US-{usps}": fips for fips, usps in STATE_USPS.items()}
    state_fips["US-PR"] = "72"
    out: dict[str, str] = {}
    for region in regions:
        rid = str(region["id"])
        if rid.isdigit() and len(rid) in (2, 5):
            out[rid] = rid
            continue
        iso = next((a for a in (rid, *region.get("aliases", ())) if a in state_fips), None)
        if iso is not None:
            out[rid] = state_fips[iso]
    missing = [str(r["id"]) for r in regions if str(r["id"]) not in out]
    if missing:
        raise ValueError(f"--hubverse-location fips: no US FIPS code for {missing[:5]} (only US states and "
                         "counties have one)")
    return out


def hubverse_rows(result: ForecastResult, *, target: str = "inc ili", reference: str | None = None,
                  locations: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Rows of the hubverse model-output table; ``locations`` maps region ids to the hub's location
    codes (default: the ids)."""
    locations = locations or {}
    origin = reference_date(result, reference)
    step = STEP_DAYS.get(result.step or "W", 7)
    rows = []
    for ri, region in enumerate(result.region_ids):
        for hi, h in enumerate(result.horizons):
            end = (origin + dt.timedelta(days=step * h)).isoformat()
            for qi, level in enumerate(result.quantile_levels):
                rows.append({"reference_date": origin.isoformat(), "target": target, "horizon": int(h),
                             "location": locations.get(region, region), "target_end_date": end,
                             "output_type": "quantile", "output_type_id": float(level),
                             "value": float(result.quantiles[hi, ri, qi])})
    return rows


def write_hubverse(result: ForecastResult, path: Path | str, *, target: str = "inc ili",
                   reference: str | None = None, locations: Mapping[str, str] | None = None) -> int:
    """CSV (or Parquet by suffix) in hubverse model-output format; returns the row count."""
    path = Path(path)
    rows = hubverse_rows(result, target=target, reference=reference, locations=locations)
    if path.suffix.lower() == ".parquet":
        import pandas as pd

        pd.DataFrame(rows, columns=list(HUBVERSE_COLUMNS)).to_parquet(path, index=False)
        return len(rows)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(HUBVERSE_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def plot_regions(result: ForecastResult, chosen: Sequence[str] = (), *, max_regions: int = 12,
                 recent: int = 26) -> list[str]:
    """The regions a plot draws: ``chosen`` (ids of the result), else all of them up to ``max_regions``,
    else the ``max_regions`` busiest (most cases in the last ``recent`` periods, else the highest
    forecasts), in the result's order."""
    ids = list(result.region_ids)
    if chosen:
        unknown = [r for r in chosen if r not in ids]
        if unknown:
            raise ValueError(f"--plot-regions {unknown} are not regions of this forecast (e.g. {ids[:3]})")
        return list(chosen)
    if len(ids) <= max_regions:
        return ids
    hist = result.history
    load = (np.nansum(hist[-recent:], axis=0) if hist is not None and len(hist)
            else np.asarray(result.point).sum(axis=0))
    top = sorted(np.argsort(-load, kind="stable")[:max_regions].tolist())
    return [ids[i] for i in top]


def plot_forecast(result: ForecastResult, path: Path | str, regions: Sequence[str] | None = None, *,
                  recent: int = 26) -> None:
    """One panel per region (``regions``; default: ``plot_regions``): the last ``recent`` periods of
    history and the quantile fan (central 50%, 80%, 95% bands where the levels exist) with the median."""
    plt = pyplot("--plot")
    regions = list(regions) if regions else plot_regions(result, recent=recent)
    cols = min(3, len(regions))
    rows = (len(regions) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    levels = np.asarray(result.quantile_levels)
    hist = result.history
    for k, region in enumerate(regions):
        ax = axes[k // cols][k % cols]
        ri = result.region_ids.index(region)
        if hist is not None:
            past = hist[-recent:, ri]
            ax.plot(np.arange(-len(past) + 1, 1), past, color="black", lw=1.2, label="history")
        x = np.asarray(result.horizons)
        for width, alpha in ((0.95, 0.15), (0.8, 0.25), (0.5, 0.4)):
            lo, hi = np.isclose(levels, (1 - width) / 2), np.isclose(levels, (1 + width) / 2)
            if lo.any() and hi.any():
                ax.fill_between(x, result.quantiles[:, ri, lo.argmax()], result.quantiles[:, ri, hi.argmax()],
                                color="tab:blue", alpha=alpha, lw=0, label=f"{width:.0%}")
        ax.plot(x, result.point[:, ri], color="tab:blue", marker="o", ms=2.5, lw=1.2, label="point")
        ax.set_title(region, fontsize=9)
        ax.axvline(0, color="grey", lw=0.6, ls=":")
        ax.tick_params(labelsize=7)
    for k in range(len(regions), rows * cols):
        axes[k // cols][k % cols].axis("off")
    axes[0][0].legend(fontsize=6, loc="upper left")
    origin = result.first_forecast_period or "explicit history"
    fig.suptitle(f"{result.model_name} v{result.model_version} (step {result.step or '?'}; horizon 1 = "
                 f"{origin})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
