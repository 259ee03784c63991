"""The exported risk model is the trained one with its standardisation and Platt scaling folded into
the linear layers: the same probabilities, fewer ONNX nodes (each is a kernel call per run)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from healthai_training.export import export_risk, run_onnx
from healthai_training.risk.model import CalibratedRisk, RiskNet


def calibrated(hidden: int, n: int = 7, seed: int = 0) -> CalibratedRisk:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    mean = rng.normal(size=n) * 10
    std = np.abs(rng.normal(size=n)) * 5
    std[2] = 0.0  # a constant feature: RiskNet divides by 1 there, and so must the fold
    return CalibratedRisk(RiskNet(mean=mean, std=std, hidden=hidden), a=0.7, b=-0.4).eval()


@pytest.mark.parametrize("hidden", [0, 5])
def test_folded_module_gives_the_same_probabilities(hidden: int) -> None:
    model = calibrated(hidden)
    x = torch.tensor(np.random.default_rng(1).normal(size=(64, 7)) * 20, dtype=torch.float32)
    with torch.no_grad():
        np.testing.assert_allclose(model.folded()(x).numpy(), model(x).numpy(), rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize(("hidden", "ops"),
                         [(0, ["Gemm", "Sigmoid"]), (5, ["Gemm", "Relu", "Gemm", "Sigmoid"])])
def test_export_writes_the_folded_graph(tmp_path: Path, hidden: int, ops: list[str]) -> None:
    model = calibrated(hidden)
    features = [{"name": f"f{i}", "baseline": float(m)} for i, m in enumerate(model.net.mean.tolist())]
    vdir = export_risk(model=model, features=features, card={"name": "risk_fold"}, repo=tmp_path,
                       name="risk_fold")
    graph = onnx.load(str(vdir / "model.onnx")).graph
    assert [n.op_type for n in graph.node] == ops
    x = np.random.default_rng(2).normal(size=(16, 7)).astype(np.float32) * 20
    with torch.no_grad():
        want = model(torch.tensor(x)).numpy()
    np.testing.assert_allclose(run_onnx(vdir / "model.onnx", {"features": x}), want, rtol=2e-5, atol=1e-7)
