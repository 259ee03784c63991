"""Valid feature domains computed by training: the stated rule on hand-computed cases, rules verified on
the data, and ``healthai train domains`` reproducing the committed cards' domains without retraining."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import pytest

from healthai.serving.settings import newest_version_dir
from healthai_training.cli import register
from healthai_training.errors import TrainingInputError
from healthai_training.risk.data import load_heart
from healthai_training.risk.domains import feature_domains, numeric_range, with_domains

HEART = "risk/uci_heart_disease/heart_disease_4sites.csv"


@pytest.mark.parametrize(("lo", "hi", "limits", "expected"), [
    (28, 77, (18, 110), [18, 110]),  # clinical limits bind on both sides
    (1, 14, (0, 365), [0, 27]),  # one observed span beyond the maximum
    (0, 36, (0, None), [0, 72]),  # no upper limit: one span
    (-2.5, 6, None, [-11, 14.5]),  # no limits at all
    (5, 95, (10, 90), [5, 95]),  # never narrower than what training saw
])
def test_numeric_range_rule(lo, hi, limits, expected) -> None:
    assert numeric_range(lo, hi, limits) == expected


@pytest.fixture(scope="module")
def heart(shared_data: Path):
    return load_heart(shared_data / HEART, seed=0)


def test_rules_are_verified_on_the_training_rows(heart) -> None:
    per_feature, block = feature_domains(heart)
    assert per_feature[0] == {"kind": "range", "min": 18, "max": 110, "integer": False, "observed": [28, 77],
                              "clinical": [18, 110]}
    assert [g["rule"] for g in block["one_hot"]] == ["exactly_one", "at_most_one"]  # ECG normal = none set
    bad = replace(heart, x=heart.x.copy())
    bad.x[bad.split["train"][0], [2, 3]] = 1.0  # two chest-pain types for one training patient
    with pytest.raises(TrainingInputError, match="chest_pain"):
        feature_domains(bad)
    narrow = replace(heart, features=[replace(heart.features[0], limits=(40, 70)), *heart.features[1:]])
    with pytest.raises(TrainingInputError, match=r"age: training values \[28, 77\] break the clinical"):
        feature_domains(narrow)


def test_train_domains_reproduces_the_committed_card(shared_data: Path, tmp_path: Path) -> None:
    """The committed risk_heart card's domains are what the CLI computes from the data today; the
    rest of the card (weights' metadata, baselines) is byte-for-byte the same JSON."""
    committed = json.loads((newest_version_dir("risk_heart") / "model_card.json").read_text())
    stripped = json.loads(json.dumps(committed))
    stripped.pop("domains")
    for f in stripped["features"]:
        f.pop("domain")
    path = tmp_path / "model_card.json"
    path.write_text(json.dumps(stripped))
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "domains", str(path), "--data-root", str(shared_data)])
    assert args.func(args) == 0
    assert json.loads(path.read_text()) == committed


def test_a_card_from_other_data_is_refused(shared_data: Path, heart) -> None:
    """Domains are only written for the data (and seed) the model was trained on: a non-private card's
    baselines must be that split's training means, the features the loader's. (A DP card's baselines
    come from public bounds, the same for any data: nothing to check them against.)"""
    dp_card = json.loads((newest_version_dir("risk_heart") / "model_card.json").read_text())
    card = {**dp_card, "privacy": {"private": False}}
    means = heart.x[heart.split["train"]].mean(axis=0)
    card["features"] = [{**f, "baseline": float(m)} for f, m in zip(dp_card["features"], means, strict=True)]
    assert with_domains(card, heart)["domains"]["rule"].startswith("numeric: [min(lo")
    with pytest.raises(TrainingInputError, match="baselines differ"):
        with_domains(card, load_heart(shared_data / HEART, seed=1))
    renamed = json.loads(json.dumps(card))
    renamed["features"][0]["name"] = "age_years"
    with pytest.raises(TrainingInputError, match="card features"):
        with_domains(renamed, heart)
