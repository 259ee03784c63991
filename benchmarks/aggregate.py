"""Benchmark of the CSR aggregation: healthai (pybind11 and ONNX Runtime) vs scipy, torch.sparse.mm
(CSR) and a torch index_add_ gather-scatter, side by side in one run, median after warm-up.

Cases (issue 2, item 6):
  (a) county graph: the Census 2024 county adjacency restricted to the 50 states + DC (self-pairs
      included, as in the file), F = 512;
  (b) power-law graph: 1,000,000 nodes, 10,000,000 edges, F = 64 (``--quick``: 100,000 / 1,000,000);
at 1 and 2 threads. Also: the machine's memory bandwidth (large array copy), the bytes each case must
move at least and the time that floor implies, the backward product (cached transpose) vs forward,
and the Python call time on the 51-node state graph. ``--quick`` finishes in well under a minute.

    python benchmarks/aggregate.py [--quick] [--threads 1,2] [--repeats N]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import scipy.sparse as sp
import torch
from onnx import TensorProto, helper

from healthai.ops import CsrGraph, aggregate, ort_library_path, set_num_threads
from healthai.ops.reorder import locality_order, permute_rows, relabel_sources

COUNTY_FILE = Path(__file__).resolve().parents[2] / "shared/data/graphs/us_counties/county_adjacency2024.txt"
STATE_FIPS_MAX = 56  # 01..56 are the 50 states + DC; 60+ are territories, 72 Puerto Rico


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def paired_ratio(first: Callable[[], object], second: Callable[[], object], repeats: int) -> float:
    """Median of time(second) / time(first) over back-to-back pairs (robust to load drifting)."""
    first()
    second()
    ratios = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        first()
        t1 = time.perf_counter()
        second()
        ratios.append((time.perf_counter() - t1) / (t1 - t0))
    return statistics.median(ratios)


def memory_bandwidth(n_bytes: int, repeats: int) -> float:
    """Bytes per second of a large array copy (read + write counted)."""
    src = np.ones(n_bytes // 8)
    dst = np.empty_like(src)
    t = median_time(lambda: np.copyto(dst, src), repeats)
    return 2 * src.nbytes / t


def county_graph(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR of the county adjacency (50 states + DC) and the FIPS codes of its nodes."""
    pairs = []
    with path.open(encoding="utf-8") as f:
        next(f)
        for line in f:
            parts = line.rstrip("\n").split("|")
            a, b = parts[1], parts[3]
            if int(a[:2]) <= STATE_FIPS_MAX and int(b[:2]) <= STATE_FIPS_MAX:
                pairs.append((a, b))
    fips = np.array(sorted({a for a, _ in pairs} | {b for _, b in pairs}))
    ids = {f: i for i, f in enumerate(fips)}
    rows = np.array([ids[a] for a, _ in pairs])
    cols = np.array([ids[b] for _, b in pairs])
    a = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(fips), len(fips)))
    a.sum_duplicates()
    return a.indptr.astype(np.int64), a.indices.astype(np.int64), fips


def state_graph(indptr: np.ndarray, indices: np.ndarray, fips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 51-node graph of states + DC touching each other (from the county graph)."""
    state = np.array([int(f[:2]) for f in fips])
    codes, node = np.unique(state, return_inverse=True)
    rows = np.repeat(node, np.diff(indptr))
    a = sp.csr_matrix((np.ones(len(rows)), (rows, node[indices])), shape=(len(codes), len(codes)))
    a.sum_duplicates()
    return a.indptr.astype(np.int64), a.indices.astype(np.int64)


def power_law_graph(n: int, nnz: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns drawn with power-law popularity (ids randomly permuted: no free locality)."""
    rng = np.random.default_rng(seed)
    rows = rng.permutation(n)[(n * rng.random(nnz) ** 2.0).astype(np.int64)]
    cols = rng.permutation(n)[(n * rng.random(nnz) ** 2.0).astype(np.int64)]
    order = np.argsort(rows, kind="stable")
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    return indptr, cols[order].astype(np.int64)


def ort_session(threads: int) -> ort.InferenceSession | None:
    lib = ort_library_path()
    if lib is None:
        return None
    node = helper.make_node("CsrAggregate", ["indptr", "indices", "weights", "x"], ["out"], domain="healthai")
    inputs = [
        helper.make_tensor_value_info("indptr", TensorProto.INT64, None),
        helper.make_tensor_value_info("indices", TensorProto.INT64, None),
        helper.make_tensor_value_info("weights", TensorProto.FLOAT, None),
        helper.make_tensor_value_info("x", TensorProto.FLOAT, None),
    ]
    out = [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)]
    model = helper.make_model(
        helper.make_graph([node], "csr", inputs, out),
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("healthai", 1)],
    )
    so = ort.SessionOptions()
    so.register_custom_ops_library(str(lib))
    so.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def run_case(
    name: str,
    indptr: np.ndarray,
    indices: np.ndarray,
    feat: int,
    threads: list[int],
    repeats: int,
    bandwidth: float,
    slow_repeats: int,
) -> list[dict]:
    n = len(indptr) - 1
    nnz = len(indices)
    rng = np.random.default_rng(1)
    w = rng.random(nnz, dtype=np.float32)
    x = rng.standard_normal((n, feat), dtype=np.float32)
    graph = CsrGraph(indptr, indices, n, w)
    graph.transpose  # built once, outside the timings  # noqa: B018
    a_scipy = sp.csr_matrix((w, indices, indptr), shape=(n, n))
    a_torch = torch.sparse_csr_tensor(
        torch.from_numpy(indptr), torch.from_numpy(indices), torch.from_numpy(w), size=(n, n)
    )
    xt = torch.from_numpy(x)
    rows_t = torch.from_numpy(np.repeat(np.arange(n), np.diff(indptr)))
    cols_t, w_t = torch.from_numpy(indices), torch.from_numpy(w)
    grad = rng.standard_normal((n, feat), dtype=np.float32)
    perm = locality_order(indices, n)  # static graph: relabelled once, x permuted on every call
    indices_sorted = relabel_sources(indices, perm)
    x_sorted = np.empty_like(x)

    def reordered() -> np.ndarray:
        permute_rows(x, perm, out=x_sorted)
        return aggregate(indptr, indices_sorted, x_sorted, w)

    row_bytes = feat * 4
    floor_bytes = indptr.nbytes + indices.nbytes + w.nbytes + x.nbytes + n * row_bytes
    gather_bytes = (
        indptr.nbytes + indices.nbytes + w.nbytes + nnz * ((row_bytes + 63) // 64 * 64) + n * row_bytes
    )
    print(
        f"\n== case {name}: {n:,} nodes, {nnz:,} edges, F={feat}; bytes floor {floor_bytes / 1e6:.1f} MB "
        f"-> {floor_bytes / bandwidth * 1e3:.2f} ms; gather floor (every edge fetches its row) "
        f"{gather_bytes / 1e6:.1f} MB -> {gather_bytes / bandwidth * 1e3:.2f} ms"
    )
    results = []
    for t in threads:
        set_num_threads(t)
        torch.set_num_threads(t)
        sess = ort_session(t)
        methods: dict[str, Callable[[], object]] = {
            "torch.sparse.mm (CSR)": lambda: torch.sparse.mm(a_torch, xt),
            "healthai (pybind11)": lambda: aggregate(indptr, indices, x, w),
            "healthai degree-sorted (+perm)": reordered,
            "healthai backward (grad_x)": lambda: graph.backward(x, grad),
        }
        if sess is not None:
            feeds = {"indptr": indptr, "indices": indices, "weights": w, "x": x}
            methods["healthai (ONNX Runtime)"] = lambda s=sess, f=feeds: s.run(None, f)
        slow: dict[str, Callable[[], object]] = {
            "torch index_add_": lambda: torch.zeros(n, feat).index_add_(
                0, rows_t, xt.index_select(0, cols_t) * w_t[:, None]
            ),
        }
        if t == 1:  # scipy is single-threaded
            slow["scipy CSR @ dense"] = lambda: a_scipy @ x
        times = {m: median_time(fn, repeats) for m, fn in methods.items()}
        times.update({m: median_time(fn, min(repeats, slow_repeats)) for m, fn in slow.items()})
        bwd_ratio = paired_ratio(
            methods["healthai (pybind11)"], methods["healthai backward (grad_x)"], repeats
        )
        print(f"  {t} thread(s): backward/forward, median of {repeats} back-to-back pairs: {bwd_ratio:.2f}x")
        ref = times["torch.sparse.mm (CSR)"]
        for m, sec in times.items():
            results.append(
                dict(
                    case=name,
                    threads=t,
                    method=m,
                    ms=sec * 1e3,
                    vs_torch=ref / sec,
                    bwd_ratio=bwd_ratio,
                    vs_floor=sec / (floor_bytes / bandwidth),
                    vs_gather=sec / (gather_bytes / bandwidth),
                )
            )
    print(
        f"{'threads':>7}  {'method':<30}{'median ms':>11}{'vs torch.sparse.mm':>20}"
        f"{'x floor':>9}{'x gather':>10}"
    )
    for r in results:
        print(
            f"{r['threads']:>7}  {r['method']:<30}{r['ms']:>11.3f}{r['vs_torch']:>19.2f}x"
            f"{r['vs_floor']:>8.1f}x{r['vs_gather']:>9.2f}x"
        )
    return results


def call_overhead(indptr: np.ndarray, indices: np.ndarray, loops: int) -> tuple[float, float]:
    """Median per-call seconds on the 51-node graph (F=8): NumPy path and torch module path."""
    from healthai.ops import GraphAggregation

    x = np.ones((len(indptr) - 1, 8), np.float32)
    set_num_threads(2)

    def per_call(fn: Callable[[], object]) -> float:
        """Median over many short batches (a batch hit by a preemption is an outlier, not the median)."""
        samples = []
        for _ in range(loops):
            t0 = time.perf_counter()
            for _ in range(50):
                fn()
            samples.append((time.perf_counter() - t0) / 50)
        return statistics.median(samples)

    numpy_call = per_call(lambda: aggregate(indptr, indices, x))
    module = GraphAggregation(indptr, indices)
    xt = torch.from_numpy(x)
    with torch.no_grad():
        torch_call = per_call(lambda: module(xt))
    return numpy_call, torch_call


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def main() -> None:
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats (< 1 min)")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    repeats = args.repeats or (3 if args.quick else 7)
    bandwidth = memory_bandwidth((64 if args.quick else 512) << 20, repeats)
    print(f"memory bandwidth (array copy, read+write): {bandwidth / 1e9:.1f} GB/s")

    ip_a, ix_a, fips = county_graph(COUNTY_FILE)
    res_a = run_case("a (US counties, 50 states + DC)", ip_a, ix_a, 512, threads, repeats * 5, bandwidth, 10)
    n_b, e_b = (100_000, 1_000_000) if args.quick else (1_000_000, 10_000_000)
    ip_b, ix_b = power_law_graph(n_b, e_b)
    res_b = run_case("b (power law)", ip_b, ix_b, 64, threads, repeats, bandwidth, 3)
    ip_s, ix_s = state_graph(ip_a, ix_a, fips)
    numpy_call, torch_call = call_overhead(ip_s, ix_s, 101 if args.quick else 1001)
    print(
        f"\n== call time on the {len(ip_s) - 1}-node state graph (F=8): "
        f"NumPy path {numpy_call * 1e6:.2f} us, "
        f"torch GraphAggregation (no grad) {torch_call * 1e6:.2f} us"
    )

    def get(res: list[dict], t: int, m: str) -> dict | None:
        return next((r for r in res if r["threads"] == t and r["method"] == m), None)

    t_max = max(threads)
    b = get(res_b, t_max, "healthai (pybind11)")
    a = get(res_a, t_max, "healthai (pybind11)")
    bw = get(res_b, t_max, "healthai backward (grad_x)")
    print(f"\n== targets ({t_max} threads{', QUICK sizes' if args.quick else ''})")
    print(
        f"(b) >= 1.5x torch.sparse.mm: {b['vs_torch']:.2f}x  {verdict(b['vs_torch'] >= 1.5)}"
        f"  (gather floor ratio {b['vs_gather']:.2f}x)"
    )
    print(f"(a) >= 1.0x torch.sparse.mm: {a['vs_torch']:.2f}x  {verdict(a['vs_torch'] >= 1.0)}")
    print(f"call time on 51 nodes <= 5 us: {numpy_call * 1e6:.2f} us  {verdict(numpy_call <= 5e-6)}")
    ratio = b["bwd_ratio"]
    print(
        f"(b) backward <= 1.3x forward (paired): {ratio:.2f}x  {verdict(ratio <= 1.3)}"
        f"  (separate medians: {bw['ms'] / b['ms']:.2f}x)"
    )


if __name__ == "__main__":
    main()
