"""Load-test output: a JSON summary, a PNG (latency over time + latency CDF) and a text table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from healthai_client.loadtest.runner import LoadResult
from healthai_client.plotting import pyplot

MAX_POINTS = 50_000  # calls drawn in the latency-over-time scatter


def write_json(result: LoadResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_dict(), indent=2) + "\n")


def write_png(result: LoadResult, path: Path) -> None:
    plt = pyplot("--out's PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (ax_t, ax_c) = plt.subplots(1, 2, figsize=(12, 4.5))
    t = np.asarray(result.send_offsets_s)
    lat_ms = np.asarray(result.latencies_us) / 1000
    ok = np.asarray(result.ok, dtype=bool)
    if t.size > MAX_POINTS:  # a readable scatter: an even sample of the calls (percentiles use all)
        keep = np.random.default_rng(0).choice(t.size, MAX_POINTS, replace=False)
        t, lat_ms, ok = t[keep], lat_ms[keep], ok[keep]
    ax_t.scatter(t[ok], lat_ms[ok], s=3, alpha=0.4, label="ok")
    if (~ok).any():
        ax_t.scatter(t[~ok], lat_ms[~ok], s=6, color="red", marker="x", label="error")
    if ok.sum() >= 20:  # rolling p99 over ~50 windows
        edges = np.linspace(t[ok].min(), t[ok].max() + 1e-9, 51)
        which = np.digitize(t[ok], edges)
        mids, p99 = [], []
        for w in range(1, len(edges)):
            sel = lat_ms[ok][which == w]
            if sel.size:
                mids.append((edges[w - 1] + edges[w]) / 2)
                p99.append(np.percentile(sel, 99))
        ax_t.plot(mids, p99, color="black", lw=1, label="p99 per window")
    if result.rss_samples:
        ax_m = ax_t.twinx()
        ax_m.plot([t for t, _ in result.rss_samples], [b / 2**20 for _, b in result.rss_samples],
                  color="green", lw=1)
        ax_m.set_ylabel("server resident memory (MiB)", color="green")
    ax_t.set_xlabel("send time (s; scheduled time in open loop)")
    ax_t.set_ylabel("latency (ms)")
    ax_t.set_yscale("log")
    ax_t.set_title("latency over time")
    ax_t.legend(loc="upper right", fontsize=8)
    values, frac = result.histogram.cdf()
    if values.size:
        ax_c.plot(values / 1000, frac, drawstyle="steps-post")
        for p in (50, 90, 99, 99.9):
            v = result.histogram.percentile(p) / 1000
            ax_c.axvline(v, color="grey", lw=0.6, ls="--")
            ax_c.text(v, 0.02 + 0.2 * (p >= 99), f"p{p:g}", rotation=90, fontsize=7)
        ax_c.set_xscale("log")
    ax_c.set_xlabel("latency (ms)")
    ax_c.set_ylabel("fraction of successful calls")
    ax_c.set_title("latency CDF")
    d = result.to_dict()
    load = (f"{d['concurrency']} callers" if result.config.mode == "closed"
            else f"{d['target_rate_per_s']:g}/s {d['arrivals']}")
    fig.suptitle(f"{result.rpc}, {result.config.mode} loop, {load}: {d['throughput_per_s']:.0f} ok/s, "
                 f"{sum(result.errors.values())} errors")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def text_summary(result: LoadResult) -> str:
    d = result.to_dict()
    lat = d["latency_ms"]
    load = (f"concurrency {d['concurrency']}" if result.config.mode == "closed"
            else f"rate {d['target_rate_per_s']:g}/s ({d['arrivals']}), achieved send rate "
                 f"{d['achieved_send_rate_per_s']:g}/s, max schedule lag {d['max_schedule_lag_ms']:.1f} ms")
    procs = f" from {result.processes} processes" if result.processes > 1 else ""
    lines = [
        f"{result.rpc} {result.config.mode}-loop against {', '.join(result.addresses)}{procs}: {load}",
        f"  {d['requests']} requests in {d['elapsed_s']:.2f}s: {d['succeeded']} ok, "
        f"{d['throughput_per_s']:.1f} ok/s" + (f" ({d['records_per_s']:.0f} records/s)"
                                              if result.records_per_request > 1 else ""),
        "  latency ms: " + "  ".join(f"{k} {lat[k]:.3f}" for k in ("p50", "p90", "p99", "p99.9", "max")),
    ]
    if result.rss_samples:
        m = d["server_rss"]
        lines.append(f"  server RSS MiB: start {m['start_mb']}, after warm-up {m['after_warmup_mb']}, end "
                     f"{m['end_mb']}, max {m['max_mb']} ({m['growth_after_warmup_pct']:+.1f}% after warm-up)")
    if result.errors:
        lines.append("  errors: " + ", ".join(f"{k} {v}" for k, v in sorted(result.errors.items())))
    return "\n".join(lines)
