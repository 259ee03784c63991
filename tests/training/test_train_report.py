"""Metric tables: means over seeds and the 'beats every reference' verdict."""

from __future__ import annotations

from healthai_training.report import forecast_table, risk_table


def _forecast_row(rmse: float) -> dict:
    base = {"lag52": {"rmse": 300.0}, "seasonal_mean_2x5": {"rmse": 250.0}, "last_value": {"rmse": 150.0}}
    cell = {
        "rmse": rmse,
        "mae": 1.0,
        "pcc": 0.9,
        "wis": 2.0,
        "coverage50": 0.5,
        "coverage95": 0.9,
        "baselines": base,
    }
    return {
        "dataset": "us_states",
        "mode": "seasonal",
        "privacy": {"epsilon": None},
        "test": {h: dict(cell) for h in ("2", "3", "5", "10", "15")},
    }


def test_forecast_table_compares_with_every_reference() -> None:
    text = forecast_table([_forecast_row(130.0), _forecast_row(134.0)])
    lines = [line for line in text.splitlines() if line.startswith("| 2 |")]
    assert lines[0].startswith("| 2 | 132.0 ± 2.8 |")
    assert lines[0].endswith("| 136 | 300 | 250 | 150 | yes |")  # 132 < published 136 and every baseline
    h10 = next(line for line in text.splitlines() if line.startswith("| 10 |"))
    assert h10.endswith("| 220 | 300 | 250 | 150 | yes |")
    worse = forecast_table([_forecast_row(140.0)])
    assert next(line for line in worse.splitlines() if line.startswith("| 2 |")).endswith("| no |")
    assert "mean RMSE over h=3,5,10,15: 140.0 (TERN 2026: 199)" in worse


def test_risk_table_groups_by_setting() -> None:
    def row(eps: float | None, auroc: float) -> dict:
        priv = {"epsilon": None if eps is None else eps - 0.01, "target_epsilon": eps}
        return {
            "dataset": "heart",
            "privacy": priv,
            "test": {"auroc": auroc, "auprc": 0.5, "brier": 0.2, "ece": 0.05, "accuracy": 0.7},
        }

    text = risk_table([row(None, 0.8), row(None, 0.82), row(1.2, 0.78)])
    assert "| non-private | 2 | – | 0.8100 ± 0.0141 |" in text
    assert text.splitlines()[-2].endswith("| 0.7000 ± 0.0000 |")
    assert "| ε target 1.2 | 1 | 1.190 | 0.7800 ± 0.0000 |" in text
