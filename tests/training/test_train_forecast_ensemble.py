"""Seed ensembles: level-by-level mean of the members, one ONNX model, non-private only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from healthai_training.epi.data import load_epi
from healthai_training.errors import TrainingInputError
from healthai_training.forecast.build import build_forecaster
from healthai_training.forecast.ensemble import ForecastEnsemble, train_ensemble
from healthai_training.forecast.graph import RegionGraph
from healthai_training.forecast.train import ForecastConfig
from healthai_training.privacy import PrivacySettings
from healthai_training.runs import run_forecast

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")


def _member(seed: int, graph: RegionGraph) -> torch.nn.Module:
    model = build_forecaster(graph, window=20, steps=3, hidden=8)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model.eval()


def test_ensemble_is_the_levelwise_mean_and_never_crosses() -> None:
    adj = np.ones((4, 4)) - np.eye(4)
    graph = RegionGraph.from_adjacency(adj, [f"r{i}" for i in range(4)])
    members = [_member(s, graph) for s in (1, 2, 3)]
    ensemble = ForecastEnsemble(members).eval()
    x = torch.rand(5, 20, 4, generator=torch.Generator().manual_seed(0)) * 50
    with torch.no_grad():
        out = ensemble(x)
        expected = torch.stack([m(x) for m in members]).mean(dim=0)
    assert torch.allclose(out, expected)
    assert bool((out.diff(dim=-1) >= 0).all())
    assert ensemble.window == 20 and ensemble.steps == 3 and ensemble.median_index == 11
    other = build_forecaster(graph, window=20, steps=4, hidden=8)
    with pytest.raises(ValueError, match="differ in"):
        ForecastEnsemble([members[0], other])


def test_ensemble_run_exports_one_model_with_member_metrics(shared_data: Path, tmp_path: Path) -> None:
    cfg = ForecastConfig(seasonal=False, epochs=3, hidden=8, steps=3, horizons=(2, 3))
    run_dir, summary = run_forecast(
        dataset="japan",
        data_root=shared_data,
        config=cfg,
        runs_dir=tmp_path / "runs",
        export_repo=tmp_path / "repo",
        ensemble_seeds=(0, 1),
        stack=False,  # the ensemble itself (stacking one: forecast.default with an ensemble trainer)
    )
    assert run_dir.name.startswith("forecast-japan-window20-nonprivate-ens0-1")
    assert summary["ensemble_seeds"] == [0, 1] and [m["seed"] for m in summary["members"]] == [0, 1]
    card = json.loads((tmp_path / "repo/forecast_japan/1/model_card.json").read_text())
    assert card["training"]["ensemble_seeds"] == [0, 1]
    assert max(card["onnx_parity_max_rel_err"].values()) < 1e-4
    assert set(card["metrics"]) == {"2", "3"}


def test_ensemble_refuses_dp_and_single_seeds(shared_data: Path) -> None:
    data = load_epi("japan", data_root=shared_data)
    cfg = ForecastConfig(epochs=1, hidden=8, steps=3, horizons=(2,))
    with pytest.raises(TrainingInputError, match="non-private only"):
        train_ensemble(data=data, config=ForecastConfig(privacy=PrivacySettings(epsilon=8.0)), seeds=(0, 1))
    with pytest.raises(TrainingInputError, match=">= 2 distinct seeds"):
        train_ensemble(data=data, config=cfg, seeds=(3, 3))
