"""Benchmark of the digital-twin engine (issue 15): the native metapopulation step vs a vectorized
NumPy/SciPy implementation of the same model, and the deterministic mode vs MEmilio's ODE, side by
side in one run on the US county graph (3,144 counties of the 50 states + DC).

    python benchmarks/scenario.py [--quick] [--runs 1000] [--numpy-runs N] [--days 365] [--threads 1,2]

Rows: the full stochastic job (runs x counties x days, one step a day) at each thread count, and at the
sub-steps a day the service takes for this disease, wall and CPU seconds
and county-days per second; the same model and job in NumPy (about two minutes; ``--numpy-runs``
shortens it); on a 50-run slice, the scalar transitions and the SEIHR model; the ODE over 365 days.
The ratio to NumPy is per CPU-second: this machine is shared, and CPU seconds show the work itself.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from pathlib import Path

import numpy as np

from healthai import _native
from healthai.ops.metapop import MobilityGraph, SeirState, advance, simd_available
from healthai.scenario.graphs import county_graph
from healthai.scenario.model import Disease, substeps_for
from healthai.scenario.reference import NumpyEngine

# the packaged copy of ../shared/data/graphs/us_counties (the same files), so the benchmark also runs
# where only the repo travels (a lent GPU machine: benchmarks/gpu_check.sh)
COUNTIES = Path(__file__).resolve().parents[1] / "server/healthai/data/graphs/us_counties"
SEEDS = ("06037", "17031", "36061", "48201", "04013")  # Los Angeles, Cook, New York, Harris, Maricopa
DISEASE = Disease(r0=2.0, latent_days=3.0, infectious_days=5.0)


def start(g: MobilityGraph) -> tuple[np.ndarray, ...]:
    i = np.zeros(g.n_regions, np.int64)
    for fips in SEEDS:
        i[g.ids.index(fips)] = 100
    z = np.zeros_like(i)
    return g.population - i, z, i, z.copy()


def native(
    g: MobilityGraph,
    runs: int,
    days: int,
    threads: int,
    hospital: bool = False,
    simd: bool = True,
    device: str = "cpu",
    substeps: int = 1,
) -> tuple[float, float, str]:
    h0 = np.zeros(g.n_regions) if hospital else None
    st = SeirState.start(*start(g), runs=runs, mode="stochastic", H=h0)
    ones = np.ones((days, g.n_regions))
    wall, cpu = time.perf_counter(), time.process_time()
    advance(
        g,
        st,
        beta=np.full(runs, DISEASE.beta),
        sigma=DISEASE.sigma,
        gamma=DISEASE.gamma,
        contact=ones,
        travel=ones,
        vacc=np.zeros_like(ones),
        seed=2026,
        substeps=substeps,
        num_threads=threads,
        hosp_frac=0.02 if hospital else 0.0,  # an illustrative value (the benchmark's, not a default)
        hosp_rate=1 / 5.0,
        simd=simd,
        device=device,
    )
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    digest = hashlib.sha256(st.S.tobytes() + st.I.tobytes() + st.peak_step.tobytes()).hexdigest()[:12]
    return wall, cpu, digest


def numpy_engine(g: MobilityGraph, runs: int, days: int) -> tuple[float, float]:
    s0 = start(g)
    S, E, I, R = (np.repeat(a[:, None], runs, axis=1).astype(np.int64) for a in s0)  # noqa: E741
    eng = NumpyEngine(g, beta=np.full(runs, DISEASE.beta), sigma=DISEASE.sigma, gamma=DISEASE.gamma, seed=1)
    ones, zeros = np.ones(g.n_regions), np.zeros(g.n_regions)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(days):
        eng.leap(S, E, I, R, ones, ones, zeros)
    return time.perf_counter() - wall, time.process_time() - cpu


def gpu_missing(g: MobilityGraph) -> str | None:
    """None when this build has CUDA and a GPU runs it (the context is created here, untimed)."""
    if not _native.build_info()["cuda"]:
        return "a CPU-only build (HEALTHAI_WITH_CUDA=OFF, or no CUDA toolkit at build time)"
    try:
        native(g, 16, 2, 1, device="cuda")
    except RuntimeError as e:
        return f"a CUDA build, but no usable GPU ({e})"
    return None


def ode_native(g: MobilityGraph, days: int, substeps: int) -> float:
    st = SeirState.start(*start(g), runs=1, mode="deterministic")
    ones = np.ones((days, g.n_regions))
    wall = time.perf_counter()
    advance(
        g,
        st,
        beta=[DISEASE.beta],
        sigma=DISEASE.sigma,
        gamma=DISEASE.gamma,
        contact=ones,
        travel=ones,
        vacc=np.zeros_like(ones),
        substeps=substeps,
    )
    return time.perf_counter() - wall


def ode_memilio(g: MobilityGraph, days: int) -> float | None:
    try:
        from healthai.scenario.reference import memilio_ode

        wall = time.perf_counter()
        memilio_ode(
            g.population,
            start(g),
            beta=DISEASE.beta,
            latent_days=DISEASE.latent_days,
            infectious_days=DISEASE.infectious_days,
            days=days,
        )
        return time.perf_counter() - wall
    except ImportError:
        return None


Row = tuple[str, str, float, float | None, float]  # engine, size, wall s, CPU s, county-days per wall s


def print_table(rows: list[Row]) -> None:
    print("\n| engine | runs x regions x days | wall s | CPU s | county-days/s (wall) | per CPU-s |")
    print("|---|---|---:|---:|---:|---:|")
    for name, size, wall, cpu, rate in rows:
        per_cpu = rate * wall / cpu if rate and cpu else 0.0
        print(
            f"| {name} | {size} | {wall:.2f} | {'' if cpu is None else f'{cpu:.2f}'} | "
            f"{f'{rate / 1e6:.1f} M' if rate else ''} | {f'{per_cpu / 1e6:.1f} M' if per_cpu else ''} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="100 runs instead of 1,000 (NumPy too)")
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument(
        "--numpy-runs", type=int, default=None, help="NumPy on fewer runs (default: the same job)"
    )
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--no-memilio", action="store_true", help="skip MEmilio (minutes on 3,144 regions)")
    args = ap.parse_args()
    runs = args.runs or (100 if args.quick else 1000)
    np_runs = args.numpy_runs or runs
    g = county_graph(COUNTIES)
    coupled_free = county_graph(COUNTIES, mobility=0.0)
    info = _native.build_info()
    print(
        f"county graph: {g.n_regions} counties, {len(g.indices)} directed edges, population "
        f"{g.population.sum():,}; native build {info['compiler']}, CUDA {info['cuda_version'] or 'no'}"
    )
    size = f"{runs} x {g.n_regions} x {args.days}"
    cells = runs * g.n_regions * args.days
    threads = [int(x) for x in args.threads.split(",")]
    rows: list[Row] = []
    digests = set()
    full = {}  # threads -> (wall s, CPU s) of the full job
    for t in threads:
        wall, cpu, digest = native(g, runs, args.days, t)
        digests.add(digest)
        full[t] = wall, cpu
        rows.append((f"native CPU, {t} thread(s)", size, wall, cpu, cells / wall))
    # the rows above take one step a day (the NumPy reference's unit of work); a served stochastic job of
    # this disease takes substeps_for() steps a day (exits at rate x dt <= 0.1)
    served = substeps_for(DISEASE, "stochastic")
    if served > 1:
        wall, cpu, _ = native(g, runs, args.days, threads[-1], substeps=served)
        name = f"native CPU, {threads[-1]} thread(s), {served} sub-steps a day (as served)"
        rows.append((name, size, wall, cpu, cells / wall))
    np_cells = np_runs * g.n_regions * args.days
    np_wall, np_cpu = numpy_engine(g, np_runs, args.days)
    rows.append(
        (
            "NumPy/SciPy reference",
            f"{np_runs} x {g.n_regions} x {args.days}",
            np_wall,
            np_cpu,
            np_cells / np_wall,
        )
    )
    # the engine's internal comparisons on a 50-run slice (per county-day it costs more than the full job)
    part = min(50, runs)

    def on_slice(name: str, **kw: bool) -> str:
        wall, cpu, digest = native(g, part, args.days, 1, **kw)
        rows.append(
            (name, f"{part} x {g.n_regions} x {args.days}", wall, cpu, part * g.n_regions * args.days / wall)
        )
        return digest

    simd_digest = on_slice("native CPU, 1 thread")
    scalar_digest = None
    if simd_available():
        scalar_digest = on_slice("native CPU, 1 thread, scalar transitions (simd=False)", simd=False)
    on_slice("native CPU SEIHR (hospital), 1 thread", hospital=True)
    ode_ours = ode_native(g, 365, 4)
    ode_ours_free = ode_native(coupled_free, 365, 4)
    ode_mem = None if args.no_memilio else ode_memilio(coupled_free, 365)
    rows.append(("ODE native RK4 (4/day), mobility 0.1", f"1 x {g.n_regions} x 365", ode_ours, None, 0.0))
    rows.append(("ODE native RK4 (4/day), uncoupled", f"1 x {g.n_regions} x 365", ode_ours_free, None, 0.0))
    if ode_mem is not None:
        rows.append(("ODE MEmilio oseir_metapop, uncoupled", f"1 x {g.n_regions} x 365", ode_mem, None, 0.0))
    print_table(rows)
    load = os.getloadavg()[0]
    print(f"\nload average during the run: {load:.1f} on {os.cpu_count()} cores (wall times include waiting)")
    print(
        f"\nsame seed, every thread count: identical final state: {len(digests) == 1} ({', '.join(digests)})"
    )
    if scalar_digest is not None:
        print(f"AVX-512 transitions: on; same final state as the scalar code: {simd_digest == scalar_digest}")
    else:
        print("AVX-512 transitions: not available on this CPU (scalar code)")
    best = min(wall for wall, _ in full.values())
    print(f"full job {cells / 1e9:.2f} billion county-days: best {best:.1f} s (target <= 60 s on 2 cores)")
    np_per_cpu = np_cells / np_cpu
    same = "the same job" if np_runs == runs else f"NumPy on {np_runs} runs"
    wall_ratio = cells / full[threads[-1]][0] / (np_cells / np_wall)
    print(
        f"native vs NumPy ({same}), per CPU-second: "
        + ", ".join(f"{t} thread(s) {cells / cpu / np_per_cpu:.1f}x" for t, (_, cpu) in full.items())
        + f" (target >= 5x on the 1,000-run job); wall, {threads[-1]} thread(s): {wall_ratio:.1f}x"
    )
    if ode_mem is not None:
        print(f"deterministic mode vs MEmilio (uncoupled counties, 365 days): {ode_mem / ode_ours_free:.1f}x")
    else:
        print("MEmilio: not run (--no-memilio, or memilio-simulation not installed)")
    missing = gpu_missing(g)
    if missing is None:
        wall, _, gpu_digest = native(g, runs, args.days, 1, device="cuda")
        print(
            f"GPU ({_native.build_info()['cuda_version']}): full job {wall:.2f} s wall, transfers included "
            f"(target <= 1 s); same final state as the CPU: {gpu_digest in digests} ({gpu_digest})"
        )
    else:
        print(f"GPU: not run: {missing}")


if __name__ == "__main__":
    main()
