"""Forecaster: tiny training runs, DP accounting, ONNX export parity for both variants, bad input."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from healthai_training.epi.data import load_epi, make_epi_data
from healthai_training.errors import PrivacyBudgetError, TrainingInputError
from healthai_training.export import CARD_FIELDS
from healthai_training.forecast.build import build_forecaster
from healthai_training.forecast.export import export_forecaster
from healthai_training.forecast.graph import RegionGraph
from healthai_training.forecast.model import FLUSIGHT_QUANTILES, SEASONAL_MIX_INIT
from healthai_training.forecast.train import ForecastConfig, region_weights, train_forecaster
from healthai_training.privacy import PrivacySettings
from healthai_training.runs import run_forecast

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")


def _randomize(model: torch.nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)


def _ring_graph(n: int) -> RegionGraph:
    adj = np.zeros((n, n))
    for i in range(n):
        adj[i, (i + 1) % n] = adj[(i + 1) % n, i] = 1.0
    return RegionGraph.from_adjacency(adj, [f"r{i}" for i in range(n)])


@pytest.fixture(scope="module")
def japan(shared_data: Path):
    return load_epi("japan", data_root=shared_data)


def test_quantiles_never_cross_and_shapes() -> None:
    graph = _ring_graph(6)
    model = build_forecaster(
        graph, window=54, steps=4, seasonal=True, hidden=8, scale_min=np.zeros(6), scale_max=np.full(6, 100.0)
    )
    _randomize(model)
    out = model(torch.rand(5, 54, 6) * 100).detach().numpy()
    assert out.shape == (5, 4, 6, len(FLUSIGHT_QUANTILES))
    assert np.all(np.diff(out, axis=-1) >= 0)
    assert np.all(out >= 0)


@pytest.mark.parametrize(
    ("seasonal", "base", "inputs"),
    [
        (False, "last", "levels"),
        (True, "last", "levels"),
        (True, "seasonal_mix", "levels"),
        (True, "lag52", "levels"),
        (True, "lag52", "anomalies"),
    ],
)
def test_export_parity_both_variants(tmp_path: Path, seasonal: bool, base: str, inputs: str) -> None:
    graph = _ring_graph(12)
    window = 54 if seasonal else 20
    model = build_forecaster(
        graph,
        window=window,
        steps=5,
        seasonal=seasonal,
        base=base,
        seasonal_inputs=inputs,
        anomaly_lags=2 if inputs == "anomalies" else 0,
        recent=1 if inputs == "anomalies" else 20,
        hidden=16,
        scale_min=np.full(12, 3.0),
        scale_max=np.full(12, 500.0),
    )
    _randomize(model, seed=1)
    errors = export_forecaster(model, graph, tmp_path / "fc", variants=("custom", "standard"))
    assert set(errors) == {"custom", "standard"}
    assert max(errors.values()) < 1e-4
    custom = onnx.load(str(tmp_path / "fc/1/model.onnx"))
    standard = onnx.load(str(tmp_path / "fc/1/model.standard.onnx"))
    assert any(n.domain == "healthai" and n.op_type == "CsrAggregate" for n in custom.graph.node)
    # the quantile head is one node of our library in the custom variant; its softplus is never ORT's
    # scalar kernel (vectorised standard ops in the standard variant)
    heads = [(n.domain, n.op_type) for n in custom.graph.node if n.op_type in ("QuantileHead", "Softplus")]
    assert heads == [("healthai", "QuantileHead")]
    assert not any(n.op_type == "Softplus" for n in standard.graph.node)
    assert all(n.domain in ("", "ai.onnx") for n in standard.graph.node)
    assert [i.name for i in custom.graph.input] == ["history"]
    assert [o.name for o in custom.graph.output] == ["forecast"]
    card = json.loads((tmp_path / "fc/1/model_card.json").read_text())
    assert card["window"] == window and card["output_steps"] == 5
    assert card["quantile_levels"] == list(FLUSIGHT_QUANTILES)
    saved = RegionGraph.load(tmp_path / "fc/1/graph.json")
    assert saved.region_ids == graph.region_ids and np.array_equal(saved.indptr, graph.indptr)
    assert "dims: [ 5, 12, 23 ]" in (tmp_path / "fc/config.pbtxt").read_text()


def test_seasonal_bases_start_from_their_seasonal_term() -> None:
    """Untrained (zero head and highway), the median is exactly the base: lag 52, or the initial
    convex mix of last week / lag 52 / seasonal mean (softmax of SEASONAL_MIX_INIT)."""
    graph = _ring_graph(5)
    x = torch.rand(3, 54, 5, generator=torch.Generator().manual_seed(0)) * 100
    steps, mid = 4, FLUSIGHT_QUANTILES.index(0.5)
    lag = build_forecaster(graph, window=54, steps=steps, seasonal=True, base="lag52", hidden=8)
    median = lag(x).detach()[..., mid]  # [B, S, N]
    for s in range(1, steps + 1):  # week t + s - 52 sits at window position 53 + s - 52
        assert torch.allclose(median[:, s - 1], x[:, 1 + s], atol=1e-4)
    mix = build_forecaster(graph, window=54, steps=steps, seasonal=True, base="seasonal_mix", hidden=8)
    w = torch.softmax(torch.tensor(SEASONAL_MIX_INIT), dim=0)
    median = mix(x).detach()[..., mid]
    for s in range(1, steps + 1):
        around = x[:, s - 1 : s + 4].mean(dim=1)
        expected = w[0] * x[:, -1] + w[1] * x[:, 1 + s] + w[2] * around
        assert torch.allclose(median[:, s - 1], expected, atol=1e-3)
    anomalies = build_forecaster(
        graph,
        window=54,
        steps=steps,
        seasonal=True,
        base="lag52",
        seasonal_inputs="anomalies",
        anomaly_lags=2,
        recent=1,
        hidden=8,
    )
    assert torch.allclose(anomalies(x).detach()[..., mid], lag(x).detach()[..., mid], atol=1e-4)
    # the networks see the last week and the two seasonal differences y[t-k] - y[t-k-52] only
    feats = anomalies.learned_features(anomalies.features((x - anomalies.scale_min) / anomalies.scale_range))
    assert feats.shape == (3, 5, 1 + 2)
    assert torch.allclose(feats[:, :, 1], x[:, 52] - x[:, 0], atol=1e-5)
    assert torch.allclose(feats[:, :, 2], (x[:, 53] - x[:, 1]), atol=1e-5)
    with pytest.raises(ValueError, match="needs anomaly_lags >= 1"):
        build_forecaster(graph, window=54, steps=steps, seasonal=True, seasonal_inputs="anomalies")
    with pytest.raises(ValueError, match="needs window >= 56"):
        build_forecaster(graph, window=54, steps=steps, seasonal=True, anomaly_lags=4)
    with pytest.raises(ValueError, match="needs seasonal=True"):
        build_forecaster(graph, window=20, steps=steps, base="lag52")
    with pytest.raises(ValueError, match="base must be one of"):
        build_forecaster(graph, window=54, steps=steps, seasonal=True, base="lag53")


def test_refit_on_train_and_validation_uses_selected_epochs(japan) -> None:
    cfg = ForecastConfig(
        seasonal=True, base="seasonal_mix", refit=True, epochs=4, hidden=8, steps=3, horizons=(2,)
    )
    result = train_forecaster(data=japan, config=cfg)
    summary = result.metrics
    assert summary["epoch_selected_on"] == "rmse"  # the default: a stack member's median
    assert summary["best_epoch"] == min(range(4), key=lambda e: result.curve[e]["val_rmse_scaled"])
    assert summary["refit_on_train_val_epochs"] == summary["best_epoch"] + 1
    assert set(summary["val"]) == set(summary["test"]) == set(summary["test_before_refit"]) == {"2"}
    assert summary["test"]["2"]["rmse"] != summary["test_before_refit"]["2"]["rmse"]
    with pytest.raises(TrainingInputError, match="refit is for non-private runs"):
        train_forecaster(data=japan, config=replace(cfg, privacy=PrivacySettings(epsilon=8.0)))
    with pytest.raises(TrainingInputError, match="need the seasonal mode"):
        train_forecaster(data=japan, config=replace(cfg, seasonal=False))
    with pytest.raises(TrainingInputError, match="loss_steps"):
        train_forecaster(data=japan, config=replace(cfg, loss_steps=(4,)))
    with pytest.raises(TrainingInputError, match="select_on"):
        train_forecaster(data=japan, config=replace(cfg, select_on="mae"))


def test_tiny_run_loss_falls_exports_with_full_card(shared_data: Path, tmp_path: Path) -> None:
    cfg = ForecastConfig(seasonal=False, epochs=8, hidden=8, steps=5, horizons=(2, 5), seed=0)
    run_dir, summary = run_forecast(
        dataset="japan",
        data_root=shared_data,
        config=cfg,
        runs_dir=tmp_path / "runs",
        export_repo=tmp_path / "repo",
        stack=False,  # the ST-GNN run itself (the stack: test_forecast_default.py)
    )
    curve = json.loads((run_dir / "curve.json").read_text())["curve"]
    assert curve[-1]["train_loss"] < curve[0]["train_loss"]
    # the ST-GNN alone is served with its own quantiles: its epoch is the one that scores them best
    assert summary["epoch_selected_on"] == "wis" and summary["config"]["select_on"] == "wis"
    assert summary["best_epoch"] == min(range(len(curve)), key=lambda e: curve[e]["val_pinball"])
    for name in ("metrics.json", "training_curve.png", "forecast_h2.png", "model_state.pt"):
        assert (run_dir / name).is_file()
    test = summary["test"]
    assert set(test) == {"2", "5"}
    assert {"rmse", "mae", "pcc", "wis", "coverage50", "coverage95", "baselines"} <= set(test["2"])
    assert test["2"]["baselines"]["lag52"]["rmse"] == pytest.approx(839.2, abs=0.1)
    card = json.loads((tmp_path / "repo/forecast_japan/1/model_card.json").read_text())
    assert set(CARD_FIELDS) <= set(card)
    assert {"window", "output_steps", "quantile_levels", "n_regions", "variants"} <= set(card)
    assert card["privacy"]["private"] is False and card["privacy"]["privacy_unit"].startswith(
        "one training window"
    )
    assert max(card["onnx_parity_max_rel_err"].values()) < 1e-4
    assert set(card["onnx_parity_max_rel_err"]) == {"custom", "standard"}
    for name in ("model.onnx", "model.standard.onnx", "graph.json"):
        assert (tmp_path / "repo/forecast_japan/1" / name).is_file()


def test_dp_training_epsilon_within_target(japan) -> None:
    cfg = ForecastConfig(
        seasonal=False,
        epochs=3,
        hidden=8,
        steps=3,
        horizons=(2,),
        batch_size=16,
        privacy=PrivacySettings(epsilon=8.0),
    )
    result = train_forecaster(data=japan, config=cfg)
    assert result.privacy["private"] is True
    assert 0 < result.privacy["epsilon"] <= 8.0
    assert result.privacy["privacy_unit"].startswith("one training window")


def test_bad_inputs_are_refused_before_training() -> None:
    rng = np.random.default_rng(0)
    series = rng.uniform(0, 10, size=(100, 4))
    adj = np.eye(4)
    with pytest.raises(TrainingInputError, match="square"):
        make_epi_data("x", series, np.ones((4, 3)), window=20, horizon=5)
    asym = np.eye(4)
    asym[0, 1] = 1.0
    with pytest.raises(TrainingInputError, match="symmetric"):
        make_epi_data("x", series, asym, window=20, horizon=5)
    with pytest.raises(TrainingInputError, match="3x3 but the series has 4"):
        make_epi_data("x", series, np.eye(3), window=20, horizon=5)
    with pytest.raises(TrainingInputError, match="too short"):
        make_epi_data("x", series[:40], adj, window=20, horizon=5)
    bad = series.copy()
    bad[7, 2] = np.nan
    with pytest.raises(TrainingInputError, match="non-finite value at week 7, region 2"):
        make_epi_data("x", bad, adj, window=20, horizon=5)
    bad[7, 2] = -1
    with pytest.raises(TrainingInputError, match="negative count"):
        make_epi_data("x", bad, adj, window=20, horizon=5)
    data = make_epi_data("x", series, adj, window=20, horizon=5)
    with pytest.raises(TrainingInputError, match="too short"):
        train_forecaster(data=data, config=ForecastConfig(seasonal=True, steps=5, horizons=(2,)))
    with pytest.raises(TrainingInputError, match="at most 50 steps"):
        train_forecaster(data=data, config=ForecastConfig(seasonal=True, steps=51, horizons=(2,)))
    with pytest.raises(TrainingInputError, match="horizons"):
        train_forecaster(data=data, config=ForecastConfig(steps=5, horizons=(6,)))
    with pytest.raises(TrainingInputError, match="anomalies' needs"):
        train_forecaster(data=data, config=ForecastConfig(seasonal=True, seasonal_inputs="anomalies"))
    with pytest.raises(TrainingInputError, match="quantile_init_gap"):
        train_forecaster(data=data, config=ForecastConfig(steps=5, horizons=(2,), quantile_init_gap=0.0))
    with pytest.raises(TrainingInputError, match="region_weighting"):
        train_forecaster(data=data, config=ForecastConfig(steps=5, horizons=(2,), region_weighting="size"))
    with pytest.raises(PrivacyBudgetError, match=r"cannot be reached|noise multiplier"):
        train_forecaster(
            data=data,
            config=ForecastConfig(
                steps=5, horizons=(2,), epochs=500, batch_size=64, privacy=PrivacySettings(epsilon=0.01)
            ),
        )


DEFAULT_MODELS = Path(__file__).resolve().parents[2] / "server" / "healthai" / "data" / "models"


@pytest.mark.parametrize("name", ["forecast_japan", "forecast_us_states"])
def test_default_forecasters_variants_agree_without_softplus(name: str) -> None:
    from healthai.ops import build_info, ort_library_path
    from healthai_training.export import max_relative_error, run_onnx

    vdir = DEFAULT_MODELS / name / "1"
    card = json.loads((vdir / "model_card.json").read_text())
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 5000, size=(4, card["window"], card["n_regions"])).astype(np.float32)
    x[1] = 0.0
    standard = run_onnx(vdir / "model.standard.onnx", {"history": x})
    assert standard.shape == (4, card["output_steps"], card["n_regions"], len(card["quantile_levels"]))
    assert np.all(np.isfinite(standard)) and np.all(np.diff(standard, axis=-1) >= 0)
    assert not [n for n in onnx.load(str(vdir / "model.standard.onnx")).graph.node if n.op_type == "Softplus"]
    if build_info()["ort_ops"]:
        custom = run_onnx(vdir / "model.onnx", {"history": x}, custom_op_library=str(ort_library_path()))
        assert max_relative_error(standard, custom) < 1e-4  # float32 summation order differs


@pytest.mark.parametrize(
    ("name", "dataset"), [("forecast_japan", "japan"), ("forecast_us_states", "us_states")]
)
def test_default_forecasters_reproduce_their_card_metrics(shared_data: Path, name: str, dataset: str) -> None:
    """The committed ONNX files, run on the benchmark's test weeks, give the RMSE their cards state
    (of the stacked default's ``point`` output; of the median for a model without one)."""
    import onnxruntime as ort

    from healthai.ops import build_info, ort_library_path
    from healthai_training.epi import metrics
    from healthai_training.epi.data import target_weeks, windows

    def run_onnx(path: Path, feeds: dict, custom_op_library: str | None) -> np.ndarray:
        opts = ort.SessionOptions()
        if custom_op_library:
            opts.register_custom_ops_library(custom_op_library)
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        out = session.run(["point"] if "point" in names else ["forecast"], feeds)[0]
        return out if out.ndim == 4 else out[..., None]  # point: one "level"

    vdir = DEFAULT_MODELS / name / "1"
    card = json.loads((vdir / "model_card.json").read_text())
    data = load_epi(dataset, data_root=shared_data, window=card["window"], horizon=card["output_steps"])
    targets = target_weeks(data, "test")
    median = card["quantile_levels"].index(0.5)
    variants = [("model.standard.onnx", None)]
    if build_info()["ort_ops"]:
        variants.append(("model.onnx", str(ort_library_path())))
    for h, row in card["metrics"].items():
        x = windows(data.series, targets - int(h) + 1, card["window"]).astype(np.float32)
        for fname, lib in variants:
            out = run_onnx(vdir / fname, {"history": x}, custom_op_library=lib)
            level = median if out.shape[-1] > 1 else 0
            got = metrics.point_metrics(data.series[targets], out[:, int(h) - 1, :, level])
            assert got["rmse"] == pytest.approx(row["rmse"], rel=1e-3), (fname, h)


def test_quantile_init_gap_and_region_weights() -> None:
    graph = _ring_graph(4)
    x = torch.rand(2, 20, 4, generator=torch.Generator().manual_seed(0)) * 10
    model = build_forecaster(graph, window=20, steps=3, hidden=8, quantile_init_gap=0.02)
    q = model.forward_scaled(x).detach()  # [B, S, N, Q]: untrained, every gap is exactly 0.02
    assert torch.allclose(q.diff(dim=-1), torch.full_like(q[..., 1:], 0.02), atol=1e-6)
    wide = build_forecaster(graph, window=20, steps=3, hidden=8).forward_scaled(x).detach()
    assert torch.allclose(wide.diff(dim=-1), torch.full_like(wide[..., 1:], float(np.log(2.0))), atol=1e-6)
    lo, hi = np.zeros(4), np.array([1.0, 1.0, 2.0, 4.0])
    assert region_weights(ForecastConfig(), lo, hi).tolist() == [1.0, 1.0, 1.0, 1.0]
    w = region_weights(ForecastConfig(region_weighting="scale"), lo, hi)
    np.testing.assert_allclose(w.numpy(), np.array([1, 1, 4, 16]) / 5.5, rtol=1e-6)
