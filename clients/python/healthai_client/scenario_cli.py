"""``healthai-client scenario`` and ``healthai-client calibrate``.

    healthai-client scenario --graph us_counties --seed-infections 06037=50,17031=20 --horizon 180 \\
        --runs 200 --intervention "regions=06037;start=21;end=90;contact=0.7" \\
        --plot what_if.png --plot-regions 06037,17031

With ``--plot`` the no-intervention baseline runs too (same seed) and the PNG shows quantile bands over
time for the chosen regions and all regions together, and the median peak day and size per region,
baseline against scenario.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

from healthai_client.cli_commands import make_client, print_json
from healthai_client.plotting import require_plotting
from healthai_client.region_graph_file import scenario_graph_arg

_IV_KEYS = {
    "regions": "regions",
    "start": "start_day",
    "end": "end_day",
    "contact": "contact_multiplier",
    "travel": "travel_multiplier",
    "vaccination": "vaccination_rate",
}


# The graph reader's hint for a region without edges names train forecast's flags; scenario and
# calibrate read isolated regions anyway (a self-row) and have no --exclude-regions.
_TRAIN_HINT = ", with --allow-isolated; or --exclude-regions)"
_SCENARIO_HINT = "; or leave it out of the --population file)"


def _graph(args: argparse.Namespace) -> str | dict[str, Any]:
    try:
        return scenario_graph_arg(args.graph, args.population, args.region_ids)
    except ValueError as e:
        if _TRAIN_HINT not in str(e):
            raise
        raise ValueError(str(e).replace(_TRAIN_HINT, _SCENARIO_HINT)) from None


def table_level(levels: Any) -> tuple[int, str]:
    """The level the table prints (0.5, else the one nearest it) and its label (q50, q95, ...)."""
    k = min(range(len(levels)), key=lambda j: abs(float(levels[j]) - 0.5))
    return k, f"q{round(float(levels[k]) * 100, 3):g}"


def parse_intervention(text: str) -> dict[str, Any]:
    """'regions=06037,06059;start=21;end=90;contact=0.7' -> Intervention fields."""
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in _IV_KEYS:
            raise ValueError(f"--intervention part {part!r}: expected one of {sorted(_IV_KEYS)} as key=value")
        field = _IV_KEYS[key.strip()]
        if field == "regions":
            out[field] = [r for r in value.split(",") if r]
        elif field in ("start_day", "end_day"):
            out[field] = int(value)
        else:
            out[field] = float(value)
    return out


def read_counts(path: Path) -> tuple[list[str], list[list[float]]]:
    """CSV: header of region ids (an optional first 'date' column is skipped), one row per day."""
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2:
        raise ValueError(f"{path}: needs a header of region ids and at least one row of counts")
    skip = 1 if rows[0][0].strip().lower() in ("date", "day", "period") else 0
    return [h.strip() for h in rows[0][skip:]], [[float(x) for x in r[skip:]] for r in rows[1:] if r]


def _options(args: argparse.Namespace) -> dict[str, Any]:
    disease = {
        k: v
        for k, v in (
            ("r0", args.r0),
            ("latent_days", args.latent_days),
            ("infectious_days", args.infectious_days),
            ("hospital_fraction", args.hospital_fraction),
            ("hospital_days", args.hospital_days),
        )
        if v is not None
    }
    opts: dict[str, Any] = dict(
        runs=args.runs,
        seed=args.seed,
        disease=disease,
        mobility=args.mobility,
        period_days=args.period,
        sample_trajectories=args.samples,
        deterministic=args.deterministic,
        quantile_levels=[float(x) for x in args.quantiles.split(",") if x],
        report_regions=[r for r in args.regions.split(",") if r],
        interventions=[parse_intervention(t) for t in args.intervention],
    )
    if args.seed_infections:
        pairs = [p.split("=") for p in args.seed_infections.split(",") if p]
        if any(len(p) != 2 for p in pairs):
            raise ValueError("--seed-infections takes REGION=COUNT,REGION=COUNT")
        opts["seed_infections"] = {r: int(c) for r, c in pairs}
    elif args.calibrate_observed:
        opts["calibrate"] = {"observed": read_counts(args.calibrate_observed), "window_days": args.window}
    else:
        opts["calibrate"] = {"stored": args.calibrate_stored, "window_days": args.window}
    return opts


def scenario(args: argparse.Namespace) -> int:
    opts = _options(args)
    graph = _graph(args)
    if args.plot:
        require_plotting("--plot")
    if args.plot and args.regions and args.plot_regions:
        missing = set(args.plot_regions.split(",")) - set(args.regions.split(","))
        if missing:
            raise ValueError(f"--plot-regions {sorted(missing)} must be among --regions")

    def progress(done: int, total: int) -> None:
        print(f"\r{done}/{total} days", end="", file=sys.stderr, flush=True)

    with make_client(args) as client:
        result = client.scenario(
            graph,
            horizon_days=args.horizon,
            timeout=args.timeout,
            progress=progress if args.stream else None,
            **opts,
        )
        baseline = None
        if args.plot:
            base_opts = {**opts, "interventions": []}
            baseline = client.scenario(
                graph,
                horizon_days=args.horizon,
                timeout=args.timeout,
                progress=progress if args.stream else None,
                **base_opts,
            )
    if args.stream:
        print(file=sys.stderr)
    if args.plot:
        from healthai_client.scenario_plot import plot_scenario

        regions = [r for r in args.plot_regions.split(",") if r] or result.region_ids[:4]
        plot_scenario(result, baseline, regions, args.plot)
    if args.json:
        print_json(result)
        return 0
    mid, q = table_level(result.levels)
    # onsets: the sum of the per-period medians, or of the means when 0.5 was not requested
    onsets, what = (result.quantiles[..., mid], q) if q == "q50" else (result.mean, "mean")
    print(
        f"{result.runs} runs, work {result.work:,}, {result.elapsed_s:.2f} s"
        + (
            f"; calibrated r0 {result.calibration.r0:.3f}, "
            f"{result.calibration.describe_rate()}, "
            f"R^2 {result.calibration.r2:.3f}"
            if result.calibration
            else ""
        )
    )
    print(f"{'region':<10} {f'onsets ({what} sum)':>17} {f'peak day {q}':>14} {f'peak size {q}':>15}")
    for k, rid in enumerate(result.region_ids[: args.show]):
        print(
            f"{rid:<10} {onsets[:, k].sum():>17.0f} {result.peak_day[k, mid]:>14.0f} "
            f"{result.peak_size[k, mid]:>15.0f}"
        )
    if result.hospital_total_quantiles is not None:
        peak = result.hospital_total_quantiles[:, mid]
        k = int(peak.argmax())
        print(
            f"hospital occupancy, all regions ({q} at period ends): peak {peak[k]:.0f} beds "
            f"in the period from day {int(result.period_start_day[k])}"
        )
    if args.plot:
        print(f"plot: {args.plot}")
    return 0


def calibrate(args: argparse.Namespace) -> int:
    graph = _graph(args)
    with make_client(args) as client:
        fit = client.calibrate(
            graph,
            observed=read_counts(args.observed) if args.observed else None,
            stored=args.stored,
            window_days=args.window,
            mobility=args.mobility,
        )
    if args.json:
        print_json(fit)
    else:
        print(
            f"r0 {fit.r0:.3f} (95% {fit.r0_interval[0]:.2f}-{fit.r0_interval[1]:.2f})  "
            f"{fit.describe_rate()}  window {fit.window_days} days"
            f"{' to ' + fit.last_date if fit.last_date else ''}\n"
            f"RMSE {fit.rmse:.2f}  MAE {fit.mae:.2f}  R^2 {fit.r2:.3f}  "
            f"deviance explained {fit.deviance_explained:.3f}"
        )
    return 0


def add_scenario_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "scenario",
        help="what-if scenario on a region graph (quantiles, peaks, PNG plot)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--graph", "-g", default="us_counties",
                   help="named graph (default us_counties), or a graph file (edge list / adjacency CSV, "
                        "GeoJSON: what train forecast --graph takes) with --population")
    p.add_argument("--population", type=Path, metavar="FILE",
                   help="with a --graph file: CSV region,population (the regions simulated)")
    p.add_argument("--region-ids", type=Path, metavar="FILE",
                   help="a headerless adjacency --graph: its rows' region ids, one per line (id or id,name)")
    start = p.add_mutually_exclusive_group(required=True)
    start.add_argument("--seed-infections", help="REGION=COUNT,... infectious at day 0")
    start.add_argument("--calibrate-observed", type=Path, help="CSV of daily counts to calibrate to first")
    start.add_argument(
        "--calibrate-stored",
        nargs="?",
        const="ili",
        metavar="SYNDROME",
        help="calibrate to the server's stored counts first",
    )
    p.add_argument("--window", type=int, default=0, help="calibration window in days (default 28)")
    p.add_argument("--horizon", type=int, required=True, help="days to simulate")
    p.add_argument("--runs", type=int, help="stochastic runs (default 100; --deterministic: 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--r0", type=float)
    p.add_argument("--latent-days", type=float)
    p.add_argument("--infectious-days", type=float)
    p.add_argument(
        "--hospital-fraction", type=float, help="SEIHR: fraction of infectious hospitalised (default 0: off)"
    )
    p.add_argument("--hospital-days", type=float, help="mean hospital stay (default 5, a placeholder)")
    p.add_argument(
        "--mobility", type=float, help="fraction of contacts in neighbouring regions (default 0.1)"
    )
    p.add_argument(
        "--intervention",
        action="append",
        default=[],
        metavar="SPEC",
        help="'regions=A,B;start=D;end=D;contact=X;travel=X;vaccination=X' (repeat)",
    )
    p.add_argument("--period", type=int, default=0, help="days per reported period (default 7)")
    p.add_argument("--quantiles", default="", help="levels (default: the 23 FluSight levels)")
    p.add_argument("--samples", type=int, default=0, help="sample trajectories to return")
    p.add_argument("--regions", default="", help="regions to report (default all)")
    p.add_argument("--show", type=int, default=10, help="regions printed (default 10)")
    p.add_argument("--deterministic", action="store_true", help="the ODE instead of stochastic runs")
    p.add_argument("--stream", action="store_true", help="RunStream with progress (large jobs)")
    p.add_argument("--plot", type=Path, help="PNG: scenario against the no-intervention baseline")
    p.add_argument("--plot-regions", default="", help="regions to plot (default: the first 4 reported)")
    p.set_defaults(func=scenario)

    p = sub.add_parser("calibrate", help="fit r0 and a reporting rate to observed or stored counts")
    p.add_argument("--graph", "-g", default="us_counties",
                   help="named graph (default us_counties), or a graph file (edge list / adjacency CSV, "
                        "GeoJSON: what train forecast --graph takes) with --population")
    p.add_argument("--population", type=Path, metavar="FILE",
                   help="with a --graph file: CSV region,population (the regions simulated)")
    p.add_argument("--region-ids", type=Path, metavar="FILE",
                   help="a headerless adjacency --graph: its rows' region ids, one per line (id or id,name)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--observed", type=Path, help="CSV: header of region ids, one row per day")
    src.add_argument("--stored", nargs="?", const="ili", metavar="SYNDROME")
    p.add_argument("--window", type=int, default=0, help="days fitted (default 28)")
    p.add_argument("--mobility", type=float)
    p.set_defaults(func=calibrate)
