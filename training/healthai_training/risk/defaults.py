"""Training settings for a user's cohort (``train risk --table/--spec`` and ``--from-store``), scaled
to its size.

The named data sets keep the settings chosen on their own validation splits (``report.RISK_DEFAULTS``).
A user's cohort gets those Diabetes 130 recipes with the batch scaled to the cohort, so that a cohort
of a few hundred patients is trained for as many steps as Diabetes 130's 42,000 (RESULTS.md, "Risk
defaults for a user's cohort"):

- non-private: a 32-unit MLP, Adam at 1e-3, batch n / 10 (32 to 256), epochs for about 2,000 steps
  (20 to 300); the best validation epoch is kept;
- DP-SGD: a linear model on inputs divided by sqrt(F), SGD with momentum 0.9 at 0.25, batch n / 20
  (at least 256: the noise on the mean clipped gradient is sigma * C / batch), 15 epochs.

The fixed settings these replace (10 epochs of batch 256 at Adam 1e-3) made tens of steps on a small
cohort: near-chance AUROC, under DP and without.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from healthai_training.risk.data import RiskData
from healthai_training.risk.train import RiskConfig

STEPS_NON_PRIVATE = 2000  # optimizer steps to aim for without DP (Diabetes 130: 165 steps x 20 epochs)
DP_STEPS_PER_EPOCH = 20  # Diabetes 130's DP recipe: batch 2,048 of ~42,000 patients
DP_MIN_BATCH = 256


def cohort_risk_defaults(n_examples: int, *, private: bool) -> dict[str, Any]:
    """RiskConfig settings for a cohort of ``n_examples`` training examples (patients when grouped)."""
    n = max(int(n_examples), 1)
    if private:
        return {
            "epochs": 15,
            "batch_size": max(DP_MIN_BATCH, math.ceil(n / DP_STEPS_PER_EPOCH)),
            "lr": 0.25,
            "hidden": 0,
            "optimizer": "sgd",
            "shrink_inputs": True,
        }
    batch = min(256, max(32, math.ceil(n / 10)))
    steps_per_epoch = math.ceil(n / batch)
    epochs = max(20, min(300, math.ceil(STEPS_NON_PRIVATE / steps_per_epoch)))
    return {"epochs": epochs, "batch_size": batch, "lr": 1e-3, "hidden": 32, "optimizer": "adam",
            "shrink_inputs": False}


def training_examples(data: RiskData) -> int:
    """Training examples DP-SGD samples: distinct patients when a patient may have several rows."""
    train = data.split["train"]
    return len(np.unique(data.groups[train])) if data.groups is not None else len(train)


def sized_config(config: RiskConfig, data: RiskData, overrides: dict[str, Any]) -> RiskConfig:
    """``config`` with the cohort-sized settings, then the user's ``overrides`` (CLI flags), applied."""
    sized = cohort_risk_defaults(training_examples(data), private=config.privacy.private)
    return replace(config, **{**sized, **overrides})
