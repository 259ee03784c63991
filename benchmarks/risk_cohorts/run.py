"""Risk defaults on public cohorts: the fixed settings used before (``RiskConfig()``), the settings
sized to the cohort (``healthai_training.risk.defaults``) and two non-private scikit-learn references,
on the same patient splits as ``train risk`` (60/20/20 by seed). Test AUROC, mean over seeds.

    python benchmarks/risk_cohorts/run.py --set test2 --seeds 0,1,2,3,4 [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cohorts

from healthai_training.privacy import PrivacySettings
from healthai_training.risk.cohort import load_cohort
from healthai_training.risk.data import RiskData
from healthai_training.risk.defaults import sized_config
from healthai_training.risk.train import RiskConfig, train_risk

SETTINGS = ("current", "sized")


def references(data: RiskData, seed: int) -> dict[str, float]:
    """Non-private AUROC of a cross-validated logistic regression and gradient-boosted trees."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    tr, te = data.split["train"], data.split["test"]
    models = {
        "logistic (CV)": make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=10, cv=5, max_iter=2000)),
        "boosted trees": HistGradientBoostingClassifier(random_state=seed),
    }
    return {
        name: float(roc_auc_score(data.y[te], m.fit(data.x[tr], data.y[tr]).predict_proba(data.x[te])[:, 1]))
        for name, m in models.items()
    }


def ours(data: RiskData, seed: int, setting: str, epsilon: float | None) -> float:
    config = RiskConfig(seed=seed, device="cpu", privacy=PrivacySettings(epsilon=epsilon))
    if setting == "sized":
        config = sized_config(config, data, {})
    return float(train_risk(data=data, config=config).metrics["test"]["auroc"])


def evaluate(table: Path, spec: Path, seeds: list[int], epsilon: float) -> dict[str, list[float]]:
    scores: dict[str, list[float]] = {}
    for seed in seeds:
        data, _ = load_cohort(table, spec, seed=seed)
        for name, value in references(data, seed).items():
            scores.setdefault(name, []).append(value)
        for setting in SETTINGS:
            for eps in (None, epsilon):
                key = f"{setting}, {'no DP' if eps is None else f'ε {eps:g}'}"
                scores.setdefault(key, []).append(ours(data, seed, setting, eps))
    return scores


def verdict(results: dict[str, dict[str, list[float]]], epsilon: float) -> str:
    """Test 2's rule: mean over cells higher, and no cell lower by more than max(0.01, 2 SE)."""
    cells, worse = [], []
    for name, scores in results.items():
        for mode in ("no DP", f"ε {epsilon:g}"):
            old, new = scores[f"current, {mode}"], scores[f"sized, {mode}"]
            diff = [b - a for a, b in zip(old, new, strict=True)]
            se = statistics.stdev(diff) / math.sqrt(len(diff)) if len(diff) > 1 else 0.0
            cells.append((np.mean(old), np.mean(new)))
            if np.mean(diff) < -max(0.01, 2 * se):
                worse.append(f"{name} ({mode})")
    old, new = (float(np.mean([c[i] for c in cells])) for i in (0, 1))
    return (
        f"mean over {len(cells)} cells: current {old:.3f}, sized {new:.3f}; "
        f"cells lower beyond max(0.01, 2 SE): {', '.join(worse) or 'none'}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", choices=sorted(cohorts.SETS), default="test2")
    p.add_argument("--cohorts", default=None, help="comma-separated names instead of --set")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--epsilon", type=float, default=1.2)
    p.add_argument("--out", type=Path, default=None, help="write tables, specs and results.json here")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    names = args.cohorts.split(",") if args.cohorts else cohorts.SETS[args.set]
    seeds = [int(s) for s in args.seeds.split(",")]
    out = args.out or Path(tempfile.mkdtemp(prefix="risk-cohorts-"))
    results = {name: evaluate(*cohorts.write(name, out), seeds, args.epsilon) for name in names}
    columns = list(next(iter(results.values())))
    print(f"test AUROC, mean over seeds {args.seeds} (cohort tables and specs in {out})\n")
    print("| cohort | " + " | ".join(columns) + " |\n|---|" + "---:|" * len(columns))
    for name, scores in results.items():
        print(f"| {name} | " + " | ".join(f"{np.mean(scores[c]):.3f}" for c in columns) + " |")
    print("\n" + verdict(results, args.epsilon))
    (out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
