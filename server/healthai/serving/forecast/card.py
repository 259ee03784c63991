"""What a forecaster's version folder says that serving needs: window, horizons, quantiles, regions."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from healthai.errors import InvalidInput
from healthai.serving.forecast.regions import iso_alias
from healthai.serving.runtime.manager import LoadedVersion
from healthai.serving.runtime.repository import RepositoryError
from healthai.surveillance.counts import WEEK_DAYS

FORECAST_INPUT = "history"
FORECAST_OUTPUT = "forecast"
FORECAST_POINT = "point"  # optional [-1, S, N]: the stacked default's point forecast
GRAPH_FILE = "graph.json"


@dataclass(frozen=True)
class ForecastCard:
    window: int
    horizons: tuple[int, ...]  # steps ahead, one per output step
    quantile_levels: np.ndarray  # float64 [Q], ascending
    region_ids: tuple[str, ...]
    region_aliases: dict[str, int]  # any accepted id (graph id, ISO 3166-2 code) -> column
    step: str  # pandas frequency of one step: "W" or "D"
    region_names: tuple[str, ...] = ()  # display names in column order ("" where unknown)
    has_point: bool = False  # the model outputs its own point forecast (else: the 0.5 quantile)
    week_start: str = "monday"  # weekly models: the day their weeks begin on (sunday: MMWR weeks)
    negatives: bool = False  # trained with negative counts kept (corrections): its history may hold them

    @property
    def n_regions(self) -> int:
        return len(self.region_ids)

    def refused_counts(self, x: np.ndarray) -> np.ndarray:
        """Where ``x`` holds a count this model does not take: not finite, or negative unless it was
        trained with negative counts kept (reporting corrections)."""
        return ~np.isfinite(x) | ((x < 0) & (not self.negatives))

    @property
    def count_rule(self) -> str:
        """What a count must be, for refusals of ``refused_counts``."""
        return ("a finite count" if self.negatives
                else "a finite count >= 0 (this model was not trained on negative counts)")

    def count_refusal(self, value: float) -> str:
        """``value X is not ...`` for one cell of ``refused_counts``: NaN and infinity are no count for
        any model; only a negative count is refused for how the model was trained."""
        if not np.isfinite(value):
            return f"value {value} is not a finite count"
        return f"value {value} is not {self.count_rule}"


def _first(card: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        if k in card:
            return card[k]
    return None


def parse_forecast_card(card: dict[str, Any], graph: dict[str, Any], dims: tuple[int, ...],
                        n_steps: int, n_quantiles: int, where: str) -> ForecastCard:
    ids = _first(graph, "region_ids", "regions", "ids", "nodes")
    if not isinstance(ids, list) or not ids:
        raise RepositoryError(f"{where}: {GRAPH_FILE} has no region id list")
    region_ids = tuple(str(r["id"]) if isinstance(r, dict) else str(r) for r in ids)
    if dims[1] > 0 and dims[1] != len(region_ids):
        raise RepositoryError(f"{where}: {GRAPH_FILE} lists {len(region_ids)} regions but the model "
                              f"input takes {dims[1]}")
    aliases = {r: i for i, r in enumerate(region_ids)}
    aliases.update({iso: i for i, r in enumerate(region_ids) if (iso := iso_alias(r)) and iso not in aliases})
    for key in ("iso_codes", "region_codes", "codes"):
        codes = graph.get(key) or card.get(key)
        if isinstance(codes, list) and len(codes) == len(region_ids):
            aliases.update({str(c): i for i, c in enumerate(codes) if c})
    window = _first(card, "window", "window_steps", "input_window")
    window = int(window) if window is not None else dims[0]
    if window <= 0 or (dims[0] > 0 and dims[0] != window):
        raise RepositoryError(f"{where}: window {window} does not match the model input dims {list(dims)}")
    horizons = _first(card, "horizons", "horizon_steps")
    horizons = tuple(int(h) for h in horizons) if horizons else tuple(range(1, n_steps + 1))
    levels = _first(card, "quantile_levels", "quantiles")
    if not levels:
        raise RepositoryError(f"{where}: model card has no quantile_levels")
    levels_arr = np.asarray(levels, np.float64)
    if n_steps > 0 and len(horizons) != n_steps:
        raise RepositoryError(f"{where}: model card has {len(horizons)} horizons, the model outputs "
                              f"{n_steps}")
    if n_quantiles > 0 and len(levels_arr) != n_quantiles:
        raise RepositoryError(f"{where}: model card has {len(levels_arr)} quantile levels, the model "
                              f"outputs {n_quantiles}")
    if np.any(np.diff(levels_arr) <= 0) or levels_arr[0] <= 0 or levels_arr[-1] >= 1:
        raise RepositoryError(f"{where}: quantile_levels must be ascending inside (0, 1)")
    step = str(_first(card, "step", "freq", "time_step") or "W")[:1].upper()
    names = graph.get("region_names") or card.get("region_names") or []
    names = tuple(str(n) for n in names) if len(names) == len(region_ids) else ("",) * len(region_ids)
    week_start = str(card.get("week_start") or "monday").lower()
    if week_start not in WEEK_DAYS:
        raise RepositoryError(f"{where}: week_start {week_start!r} is not a day of the week")
    data = card.get("data") if isinstance(card.get("data"), dict) else {}
    return ForecastCard(window, horizons, levels_arr, region_ids, aliases, "D" if step == "D" else "W", names,
                        week_start=week_start, negatives=data.get("negatives") == "keep")


def inspect_forecast(loaded: LoadedVersion) -> None:
    """Manager inspector: a model with input 'history' -> output 'forecast' needs graph.json + card."""
    rt = loaded.runtime
    if [s.name for s in rt.inputs] != [FORECAST_INPUT]:
        return
    out = {s.name: s for s in rt.outputs}.get(FORECAST_OUTPUT)
    spec = rt.inputs[0]
    where = str(rt.dir.path)
    if out is None or len(spec.dims) != 2 or len(out.dims) != 3:
        raise RepositoryError(f"{where}: a forecaster maps '{FORECAST_INPUT}' [-1,W,N] to "
                              f"'{FORECAST_OUTPUT}' [-1,S,N,Q]")
    path = rt.dir.path / GRAPH_FILE
    try:
        graph = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RepositoryError(f"{where}: cannot read {GRAPH_FILE} ({exc})") from exc
    card = parse_forecast_card(loaded.card, graph, spec.dims, out.dims[0], out.dims[2], where)
    point = {s.name: s for s in rt.outputs}.get(FORECAST_POINT)
    if point is not None:
        if len(point.dims) != 2 or (point.dims[0] > 0 and point.dims[0] != out.dims[0]):
            raise RepositoryError(f"{where}: '{FORECAST_POINT}' must be [-1,S,N] like '{FORECAST_OUTPUT}'")
        card = replace(card, has_point=True)
    loaded.extras["forecast"] = card


def check_infer_history(loaded: LoadedVersion, inputs: dict[str, np.ndarray]) -> None:
    """KServe ModelInfer on a forecaster: the same counts as Forecast takes (no-op for other models):
    finite, and >= 0 unless the model was trained with negative counts kept."""
    card = loaded.extras.get("forecast")
    x = inputs.get(FORECAST_INPUT)
    if card is None or x is None:
        return
    bad = card.refused_counts(x)
    if bad.any():
        b, t, j = (int(i) for i in np.argwhere(bad)[0])
        raise InvalidInput(f"{FORECAST_INPUT}[{b}][{t}][{j}] (region {card.region_ids[j]}): "
                           f"{card.count_refusal(float(x[b, t, j]))}", field=FORECAST_INPUT)
