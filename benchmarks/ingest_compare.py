"""Old vs new ingest throughput, interleaved in one run: ``benchmarks/ingest.py`` against two trees.

The old tree is ``git archive <rev> server/healthai`` with this install's generated stubs and native
libraries (the ingest path does not use the native code; the stubs must be compatible, i.e. the
ingest proto unchanged since ``rev``). Runs alternate old/new in ABBA order so that load drifting on
a shared machine hits both alike; each path's figure is the median over runs, and the ratio is the
median of per-round ratios (new / old). The 1-minute load average is printed at every run.

    .venv/bin/python benchmarks/ingest_compare.py --old-rev 10ba802 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import healthai

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "ingest.py"
_ROW = re.compile(r"^\| (\w+) \| ([^|]+) \| ([\d,.]+) (MB/s|rec/s).*\| ([\d,.]+|nan) \w+/cpu-s \|$")


def old_tree(rev: str, into: Path) -> Path:
    """A ``healthai`` package of ``rev``'s Python sources plus this install's stubs and .so files."""
    archive = into / "src.tar"
    with open(archive, "wb") as f:
        subprocess.run(["git", "-C", str(REPO), "archive", rev, "server/healthai"], stdout=f, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "src", filter="data")
    pkg = into / "pkg" / "healthai"
    shutil.copytree(into / "src" / "server" / "healthai", pkg)
    installed = Path(healthai.__file__).parent
    shutil.copytree(installed / "v1", pkg / "v1", dirs_exist_ok=True)
    for lib in installed.glob("*.so"):
        shutil.copy2(lib, pkg / lib.name)
    return into / "pkg"


def one_run(pythonpath: str | None, quick: bool) -> dict[tuple[str, str], tuple[float, float]]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    cmd = [sys.executable, str(SCRIPT), *(["--quick"] if quick else [])]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, cwd="/tmp").stdout
    rows = {}
    for line in out.splitlines():
        m = _ROW.match(line)
        if m:
            rows[(m.group(1), m.group(2).strip())] = (float(m.group(3).replace(",", "")),
                                                      float(m.group(5).replace(",", "")))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old-rev", required=True, help="git revision of the old tree")
    parser.add_argument("--rounds", type=int, default=2, help="ABBA rounds (each runs old and new twice)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old_path = str(old_tree(args.old_rev, Path(tmp)))
        runs: dict[str, list[dict[tuple[str, str], tuple[float, float]]]] = {"old": [], "new": []}
        for r in range(args.rounds):
            for name in ("old", "new", "new", "old"):
                rows = one_run(old_path if name == "old" else None, args.quick)
                runs[name].append(rows)
                print(f"# round {r + 1} {name}: load {os.getloadavg()[0]:.1f}", flush=True)
    paths = list(runs["new"][0])
    print(f"| path | mode | wall: old | wall: new | wall new/old (pairs) | CPU-time rate: old | new "
          f"| CPU new/old (pairs) |  (medians of {len(runs['old'])} runs each)")
    print("|---|---|---|---|---|---|---|---|")
    for key in paths:
        line = f"| {key[0]} | {key[1]} |"
        for i in (0, 1):
            old = [r[key][i] for r in runs["old"] if key in r]
            new = [r[key][i] for r in runs["new"] if key in r]
            pairs = [n / o for n, o in zip(new, old, strict=False)]
            line += (f" {statistics.median(old):,.1f} | {statistics.median(new):,.1f} | "
                     f"**{statistics.median(pairs):.2f}** ({' '.join(f'{p:.2f}' for p in pairs)}) |")
        print(line)


if __name__ == "__main__":
    main()
