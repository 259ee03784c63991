"""Forecast.Forecast: per region and horizon, a point forecast and quantiles, from an explicit history
window or from the surveillance counts the Ingest service stores."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np

from healthai.errors import InvalidInput, NotFound
from healthai.observability.context import note
from healthai.serving.forecast.card import FORECAST_INPUT, FORECAST_OUTPUT, FORECAST_POINT, ForecastCard
from healthai.serving.forecast.stored import Surveillance, stored_window
from healthai.serving.runtime.contract import InferRequest
from healthai.serving.runtime.manager import LoadedVersion, ModelManager
from healthai.serving.settings import ServingSettings
from healthai.serving.wire import PACKED_FAST_MIN, extend_float32, packed_float32
from healthai.v1 import forecast_pb2, forecast_pb2_grpc

SERVICE_NAME = "healthai.v1.Forecast"


def _region_columns(ids: list[str], card: ForecastCard, field: str) -> list[int]:
    cols = []
    for i, rid in enumerate(ids):
        col = card.region_aliases.get(rid)
        if col is None:
            raise InvalidInput(f"{field}[{i}]: unknown region {rid!r} (the graph has {card.n_regions} "
                               f"regions, e.g. {list(card.region_ids[:3])})", field=f"{field}[{i}]")
        cols.append(col)
    if len(set(cols)) != len(cols):
        raise InvalidInput(f"{field}: a region is given twice", field=field)
    return cols


def explicit_window(history: forecast_pb2.History, card: ForecastCard) -> np.ndarray:
    """[W, N] float32 in graph order from an explicit history; InvalidInput naming the field."""
    cols = _region_columns(list(history.region_ids), card, "history.region_ids")
    if len(cols) != card.n_regions:
        given = set(cols)
        missing = [r for i, r in enumerate(card.region_ids) if i not in given]
        raise InvalidInput(f"history.region_ids: missing {len(missing)} of the graph's regions, e.g. "
                           f"{missing[:3]}", field="history.region_ids")
    count = len(history.counts)
    if count % card.n_regions:
        raise InvalidInput(f"history.counts: {count} values is not a multiple of {card.n_regions} regions",
                           field="history.counts")
    steps = count // card.n_regions
    if steps < card.window:
        raise InvalidInput(f"history.counts: {steps} steps of history; the model needs at least "
                           f"{card.window}", field="history.counts")
    x = (packed_float32(history, "counts", count) if count >= PACKED_FAST_MIN
         else np.fromiter(history.counts, dtype=np.float32, count=count)).reshape(steps, card.n_regions)
    x = x[-card.window:]
    bad = card.refused_counts(x)
    if bad.any():
        t, j = np.argwhere(bad)[0]
        raise InvalidInput(f"history.counts[{steps - card.window + t}][{history.region_ids[j]}]: "
                           f"{card.count_refusal(float(x[t, j]))}", field="history.counts")
    window = np.empty_like(x)
    window[:, cols] = x
    return window


def interpolate_levels(forecast: np.ndarray, model_levels: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """[S, N, Q] at the model's levels -> [S, N, len(levels)], linear in the level (the model's own
    levels: the forecast itself, which is what the formula gives for them)."""
    if levels.shape == model_levels.shape and np.array_equal(levels, model_levels):
        return forecast.astype(np.float32, copy=False)
    hi = np.clip(np.searchsorted(model_levels, levels, side="left"), 1, len(model_levels) - 1)
    lo = hi - 1
    span = model_levels[hi] - model_levels[lo]
    w = np.where(span > 0, (levels - model_levels[lo]) / np.where(span > 0, span, 1), 0.0)
    return (forecast[..., lo] * (1 - w) + forecast[..., hi] * w).astype(np.float32)


def check_levels(raw: list[float], card: ForecastCard) -> np.ndarray:
    """Requested levels (float32 on the wire, snapped to the model's levels within 1e-6); checked."""
    if not raw:
        return card.quantile_levels
    levels = np.asarray(raw, np.float64)
    model = card.quantile_levels
    nearest = model[np.abs(levels[:, None] - model[None, :]).argmin(axis=1)]
    levels = np.where(np.abs(levels - nearest) < 1e-6, nearest, levels)
    for i, q in enumerate(levels):
        if not (0.0 < q < 1.0):
            raise InvalidInput(f"quantile_levels[{i}]: {q:g} is outside (0, 1)",
                               field=f"quantile_levels[{i}]")
        if q < model[0] or q > model[-1]:
            raise InvalidInput(f"quantile_levels[{i}]: {q:g} is outside the model's range [{model[0]:g}, "
                               f"{model[-1]:g}]", field=f"quantile_levels[{i}]")
    return levels


class ForecastServicer(forecast_pb2_grpc.ForecastServicer):
    def __init__(self, manager: ModelManager, settings: ServingSettings,
                 surveillance: Surveillance | None) -> None:
        self.manager = manager
        self.settings = settings
        self.surveillance = surveillance

    def _model(self, request: forecast_pb2.ForecastRequest | forecast_pb2.RegionsRequest
               ) -> tuple[LoadedVersion, ForecastCard]:
        name = request.model_name
        if request.graph:
            graph_model = self.settings.forecast_graphs.get(request.graph)
            if graph_model is None:
                raise NotFound(f"graph {request.graph!r} is not served (have "
                               f"{sorted(self.settings.forecast_graphs)})", field="graph")
            if name and name != graph_model:
                raise InvalidInput(f"model_name {name!r} does not serve graph {request.graph!r}",
                                   field="model_name")
            name = graph_model
        if not name:
            raise InvalidInput("graph or model_name: one is required (e.g. graph='japan')", field="graph")
        loaded = self.manager.resolve(name, request.model_version)
        card = loaded.extras.get("forecast")
        if card is None:
            raise InvalidInput(f"model_name: {name!r} is not a forecaster", field="model_name")
        return loaded, card

    async def Regions(self, request: forecast_pb2.RegionsRequest,
                      context: grpc.aio.ServicerContext) -> forecast_pb2.RegionsResponse:
        loaded, card = self._model(request)
        aliases: dict[int, list[str]] = {}
        for alias, col in card.region_aliases.items():
            if alias != card.region_ids[col]:
                aliases.setdefault(col, []).append(alias)
        regions = [forecast_pb2.Region(id=rid, name=card.region_names[i] if card.region_names else "",
                                       aliases=sorted(aliases.get(i, [])))
                   for i, rid in enumerate(card.region_ids)]
        return forecast_pb2.RegionsResponse(
            model_name=loaded.name, model_version=loaded.version, regions=regions, window=card.window,
            step=card.step, horizons=list(card.horizons), quantile_levels=card.quantile_levels.tolist(),
            week_start=card.week_start if card.step == "W" else "")

    async def Forecast(self, request: forecast_pb2.ForecastRequest,
                       context: grpc.aio.ServicerContext) -> forecast_pb2.ForecastResponse:
        loaded, card = self._model(request)
        out_cols = (_region_columns(list(request.region_ids), card, "region_ids") if request.region_ids
                    else list(range(card.n_regions)))
        horizon_rows = []
        for i, h in enumerate(request.horizons):
            if h not in card.horizons:
                raise InvalidInput(f"horizons[{i}]: {h} is not one of the model's horizons "
                                   f"{list(card.horizons)}", field=f"horizons[{i}]")
            horizon_rows.append(card.horizons.index(h))
        horizon_rows = horizon_rows or list(range(len(card.horizons)))
        levels = check_levels(list(request.quantile_levels), card)
        note(regions=len(out_cols), horizons=len(horizon_rows))  # the audit line's counts
        first_period, coverage = "", []
        source = request.WhichOneof("history_source")
        if source == "history":
            window = explicit_window(request.history, card)
        elif source == "stored":
            if self.surveillance is None:
                raise InvalidInput("stored: this server keeps no surveillance counts", field="stored")
            got = await asyncio.to_thread(stored_window, self.surveillance, request.stored, card)
            window, first_period, coverage = got.window, got.first_period, got.coverage
        else:
            raise InvalidInput("history or stored: one is required", field="history_source")
        outputs = (FORECAST_OUTPUT, FORECAST_POINT) if card.has_point else (FORECAST_OUTPUT,)
        result = await loaded.scheduler.infer(InferRequest({FORECAST_INPUT: window[None]}, outputs=outputs),
                                              timeout=context.time_remaining())
        full = result[FORECAST_OUTPUT][0][horizon_rows][:, out_cols]  # [H, R, Q_model]
        full = np.sort(full, axis=-1)  # rearrangement: quantiles never cross
        quantiles = interpolate_levels(full, card.quantile_levels, levels)
        if card.has_point:  # the stacked default: its own point forecast (a weighted mean of members)
            point = np.asarray(result[FORECAST_POINT][0][horizon_rows][:, out_cols], np.float32)
        else:
            point = interpolate_levels(full, card.quantile_levels, np.array([0.5]))[..., 0]
        response = forecast_pb2.ForecastResponse(
            model_name=loaded.name, model_version=loaded.version,
            region_ids=[card.region_ids[c] for c in out_cols],
            horizons=[card.horizons[h] for h in horizon_rows], quantile_levels=levels.tolist(),
            first_forecast_period=first_period, step=card.step, coverage=coverage,
            week_start=card.week_start if card.step == "W" else "")
        if source == "stored":
            extend_float32(response, "stored_history", window[:, out_cols])
        extend_float32(response, "point", point)
        extend_float32(response, "quantiles", quantiles)
        return response
