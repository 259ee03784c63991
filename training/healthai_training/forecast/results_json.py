"""Machine-readable forecaster results (``--json FILE``)::

    {"horizons": [2, 3, ...],
     "models": {"healthai": {"rmse": [...], "mae": [...], "pcc": [...], "wis": [...],
                             "coverage_50": [...], "coverage_95": [...]},
                "<baseline>": {...}}}

``pcc`` is the Pearson correlation of forecasts and truth pooled over test periods × regions, as the
published graph-forecasting benchmarks (Cola-GNN, EpiGNN) report it.

Baselines are point forecasts: their WIS is that of a point mass at the forecast (= MAE) and their
coverage is ``null``.
"""

from __future__ import annotations

import math
from typing import Any

KEYS = (
    ("rmse", "rmse"),
    ("mae", "mae"),
    ("pcc", "pcc"),
    ("wis", "wis"),
    ("coverage_50", "coverage50"),
    ("coverage_95", "coverage95"),
)


def json_number(value: Any) -> Any:
    """NaN (a PCC of a constant forecast) as null: JSON has no NaN."""
    return None if isinstance(value, float) and math.isnan(value) else value


def _model(rows: list[dict[str, Any]]) -> dict[str, list]:
    return {out: [json_number(row.get(key)) for row in rows] for out, key in KEYS}


def forecast_results(test: dict[str, dict[str, Any]], *, model: str = "healthai") -> dict[str, Any]:
    """``test``: per-horizon rows as ``train_forecaster`` writes them (``{h: {rmse, ..., baselines}}``)."""
    horizons = sorted(test, key=int)
    rows = [test[h] for h in horizons]
    models = {model: _model(rows)}
    names = [n for n in rows[0].get("baselines", {}) if all(n in r.get("baselines", {}) for r in rows)]
    for name in names:
        base = [r["baselines"][name] for r in rows]
        models[name] = {
            "rmse": [b["rmse"] for b in base],
            "mae": [b["mae"] for b in base],
            "pcc": [json_number(b.get("pcc")) for b in base],
            "wis": [b.get("wis", b["mae"]) for b in base],
            "coverage_50": [b.get("coverage50") for b in base],
            "coverage_95": [b.get("coverage95") for b in base],
        }
    return {"horizons": [int(h) for h in horizons], "models": models}
