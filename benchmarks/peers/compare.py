"""Main-environment side of the peer benchmark (run with the project's .venv).

export  write the exact splits of ``healthai train backtest`` (rolling origins or --fixed-split) for
        run_peers.py, from the same functions the backtest uses;
score   score run_peers.py's forecasts with our code (truth from our loader) into the ``--json``
        layout of ``train backtest``;
table   side-by-side Markdown of our backtest JSON and the peers' JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from healthai_training.cli_forecast import add_data_flags, user_data
from healthai_training.epi import data as epi_data
from healthai_training.forecast.splits import baseline_points, export_splits, score_points
from healthai_training.forecast.train import HORIZONS

OURS = ("healthai_stacked", "healthai", "last_value", "lag52", "seasonal_mean_2x5", "seasonal_naive_drift")


def _load(args: argparse.Namespace) -> epi_data.EpiData:
    """``--dataset``, or the user's own files exactly as ``train backtest --series ...`` reads them."""
    data = user_data(args)
    if (data is None) == (args.dataset is None):
        raise SystemExit("give --dataset or --series/--from-store (with --graph), not both")
    return data if data is not None else epi_data.load_epi(args.dataset, data_root=args.data_root)


def cmd_export(args: argparse.Namespace) -> int:
    splits = export_splits(_load(args), horizons=HORIZONS, window=args.window, fixed_split=args.fixed_split)
    args.out.write_text(json.dumps(splits) + "\n")
    print(json.dumps({"out": str(args.out), "origins": [o["origin"] for o in splits["origins"]]}))
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    splits = json.loads(args.splits.read_text())
    preds = json.loads(args.predictions.read_text())
    data = _load(args)
    result = score_points(data, splits, preds)
    # The backtest's baselines scored the same way: ``table`` checks they equal our backtest JSON's.
    result["baselines_rescored"] = score_points(data, splits, baseline_points(data, splits))["models"]
    result["seed"] = preds.get("seed")
    result["wall_s"] = preds.get("wall_s")
    # Per model, per origin: the epoch kept on validation and the epochs run (cap = undertrained).
    result["fits"] = {
        m: [{k: f[k] for k in ("origin", "best_epoch", "epochs_run")} for f in fits]
        for m, fits in preds["fits"].items()
    }
    result["max_epochs"], result["patience"] = preds.get("max_epochs"), preds.get("patience")
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({m: [round(v, 1) for v in r["rmse"]] for m, r in result["models"].items()}))
    return 0


def markdown(ours: dict, peers: dict, *, metrics: tuple[str, ...] = ("rmse", "mae", "wis")) -> str:
    if ours["horizons"] != peers["horizons"] or ours["origins"] != peers["origins"]:
        raise SystemExit(
            f"horizons/origins differ: ours {ours['horizons']} {ours['origins']}, "
            f"peers {peers['horizons']} {peers['origins']}"
        )
    for name, row in peers.get("baselines_rescored", {}).items():
        for m in ("rmse", "mae"):
            if name in ours["models"] and not all(
                abs(a - b) <= 1e-6 * max(1.0, abs(a))
                for a, b in zip(row[m], ours["models"][name][m], strict=True)
            ):
                raise SystemExit(f"{name} {m} rescored on the exported splits differs from the backtest's")
    names = [n for n in OURS if n in ours["models"]] + sorted(peers["models"])
    rows = {**ours["models"], **peers["models"]}
    lines = ["| h | metric | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for i, h in enumerate(ours["horizons"]):
        for m in metrics:  # PCC (higher is better, null for a constant forecast) with three decimals
            values = [rows[k][m][i] for k in names if rows[k].get(m) and rows[k][m][i] is not None]
            best = (max if m == "pcc" else min)(values, default=None)
            cells = []
            for n in names:
                v = rows[n][m][i] if rows[n].get(m) else None
                text = "–" if v is None else f"{v:.3f}" if m == "pcc" else f"{v:.1f}"
                cells.append(f"**{text}**" if v is not None and v == best else text)
            lines.append(f"| {h} | {m.upper()} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cmd_table(args: argparse.Namespace) -> int:
    ours = json.loads(args.ours.read_text())
    peers = json.loads(args.peers.read_text())
    print(markdown(ours, peers, metrics=tuple(args.metrics.split(","))))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(required=True)
    for name, fn in (("export", cmd_export), ("score", cmd_score)):
        s = sub.add_parser(name)
        s.add_argument("--dataset", choices=sorted(epi_data.DATASETS))
        add_data_flags(s)  # or your own series and graph, as train backtest takes them
        s.add_argument("--data-root", type=Path, default=Path("../shared/data"))
        s.add_argument("--out", type=Path, required=True)
        s.set_defaults(func=fn)
        if name == "export":
            s.add_argument("--fixed-split", action="store_true", help="the papers' 50/20/30 split")
            s.add_argument("--window", type=int, default=20, help="the peers' input window (papers: 20)")
        else:
            s.add_argument("--splits", type=Path, required=True)
            s.add_argument("--predictions", type=Path, required=True)
    t = sub.add_parser("table")
    t.add_argument("--ours", type=Path, required=True, help="healthai train backtest --json output")
    t.add_argument("--peers", type=Path, required=True, help="compare.py score output")
    t.add_argument("--metrics", default="rmse,mae,wis", help="rows per horizon, e.g. rmse,mae,pcc")
    t.set_defaults(func=cmd_table)
    args = p.parse_args()
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
