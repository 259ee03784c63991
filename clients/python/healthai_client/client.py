"""The synchronous SDK client: typed methods over the generated ``healthai.v1`` stubs.

    with Client("127.0.0.1:50051", api_key=key) as c:
        receipt = c.ingest_fhir(Path("bundle.json"))
        scores = c.score("risk_readmission", [{"age": 71, ...}])

Every call has a deadline (``timeout``; retries included). UNAVAILABLE is retried with exponential
backoff and jitter (see ``retry.py``), moving round-robin to the next address: with several addresses
a dead replica costs one failed attempt, not the call.
"""

from __future__ import annotations

import functools
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from healthai.v1 import (
    diagnostics_pb2,
    diagnostics_pb2_grpc,
    forecast_pb2,
    forecast_pb2_grpc,
    ingest_pb2_grpc,
    risk_pb2,
    risk_pb2_grpc,
    scenario_pb2_grpc,
)
from healthai_client.connection import (
    DEFAULT_MAX_MESSAGE_BYTES,
    ConnectionConfig,
    as_addresses,
    await_connectivity_pollers,
)
from healthai_client.errors import HealthAIClientError
from healthai_client.history_file import HistoryFile, read_history
from healthai_client.requests import (
    arrow_parts,
    arrow_request,
    fhir_request,
    flat_request,
    forecast_request,
    score_request,
    stream_requests,
)
from healthai_client.results import ForecastResult, IngestResult, ScoreResult
from healthai_client.retry import RetryPolicy
from healthai_client.scenario import (
    Calibration,
    ScenarioResult,
    check_scenario_options,
    counts_request,
    graph_message,
    scenario_request,
)

# {region: counts oldest first}, (region_ids, [steps x regions]), a history file (dated) or a pandas
# DataFrame (wide: one column per region; periods in a ``period`` column or the index date it)
HistoryInput = Mapping[str, Sequence[float]] | tuple[Sequence[str], Any] | HistoryFile | Any

log = logging.getLogger(__name__)
T = TypeVar("T")
DEFAULT_SOURCE = "healthai-client"


class _Stubs:
    def __init__(self, channel: grpc.Channel) -> None:
        self.ingest = ingest_pb2_grpc.IngestStub(channel)
        self.risk = risk_pb2_grpc.RiskStub(channel)
        self.forecast = forecast_pb2_grpc.ForecastStub(channel)
        self.diagnostics = diagnostics_pb2_grpc.DiagnosticsStub(channel)
        self.scenario = scenario_pb2_grpc.ScenarioStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)


def _check_timeout(timeout: Any) -> float:
    """A deadline in seconds: a finite number > 0, else a ValueError naming ``timeout``."""
    number = isinstance(timeout, int | float | np.integer | np.floating) and not isinstance(timeout, bool)
    if not number or not 0 < timeout < float("inf"):
        raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
    return float(timeout)


class Client:
    """A connection to one or more healthai servers (thread-safe; share one per process)."""

    def __init__(self, address: str | Sequence[str] | None = None, *, addresses: Sequence[str] | None = None,
                 tls: bool = False, root_cert: str | Path | None = None,
                 client_cert: str | Path | None = None, client_key: str | Path | None = None,
                 server_name: str | None = None, api_key: str | None = None, timeout: float = 30.0,
                 retry: RetryPolicy | None = None, source: str = DEFAULT_SOURCE,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, seed: int | None = None) -> None:
        _check_timeout(timeout)
        self.config = ConnectionConfig(as_addresses(address, addresses), tls=tls, root_cert=root_cert,
                                       client_cert=client_cert, client_key=client_key,
                                       server_name=server_name, api_key=api_key,
                                       max_message_bytes=max_message_bytes)
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.source = source
        self._closed = False
        self._channels = [self.config.channel(a) for a in self.config.addresses]
        self._stubs = [_Stubs(ch) for ch in self._channels]
        self._rotation = itertools.count()
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        # With several addresses, a channel seen in TRANSIENT_FAILURE is "down" until it is READY
        # again (gRPC keeps reconnecting in the background): calls start on the others meanwhile.
        self._down = [False] * len(self._channels)
        self._watchers: list[Callable[[grpc.ChannelConnectivity], None]] = []
        if len(self._channels) > 1:
            for i, ch in enumerate(self._channels):
                self._watchers.append(functools.partial(self._on_connectivity, i))
                ch.subscribe(self._watchers[-1], try_to_connect=True)

    @property
    def addresses(self) -> tuple[str, ...]:
        """The server addresses this client rotates over, in the order given."""
        return self.config.addresses

    # -- plumbing ---------------------------------------------------------------------------------

    def _on_connectivity(self, i: int, state: grpc.ChannelConnectivity) -> None:
        if state is grpc.ChannelConnectivity.TRANSIENT_FAILURE:
            self._down[i] = True
        elif state is grpc.ChannelConnectivity.READY:
            self._down[i] = False

    def _next_index(self) -> int:
        """Round-robin, passing over addresses known to be down (unless every one is)."""
        with self._lock:
            n = len(self._stubs)
            for _ in range(n):
                i = next(self._rotation) % n
                if not self._down[i]:
                    return i
            return i

    def _invoke(self, method: Callable[[_Stubs], Callable[..., T]], request: Any, *,
                timeout: float | None = None) -> T:
        """One logical call: attempts round-robin over the addresses until success, a final status,
        ``retry.max_attempts`` or the deadline. Addresses not yet tried by this call are tried at once;
        once all were tried, each retry waits the policy's jittered backoff."""
        if self._closed:
            raise ValueError("this Client is closed: make a new one (or call it inside its with-block)")
        deadline = time.monotonic() + (self.timeout if timeout is None else _check_timeout(timeout))
        metadata = self.config.metadata()
        tried: set[int] = set()
        backoffs = 0
        start = self._next_index()  # this call's first address; its retries walk on from there
        for attempt in itertools.count(1):
            i = (start + attempt - 1) % len(self._stubs)
            remaining = deadline - time.monotonic()
            address = self.config.addresses[i]
            try:
                if remaining <= 0:
                    raise HealthAIClientError(grpc.StatusCode.DEADLINE_EXCEEDED, f"the deadline passed after "
                                              f"{attempt - 1} attempt(s), before retrying",
                                              address=address, attempts=attempt - 1)
                return method(self._stubs[i])(request, timeout=remaining, metadata=metadata)
            except grpc.RpcError as e:
                err = HealthAIClientError.from_rpc_error(e, address=address, attempts=attempt)
            tried.add(i)
            if not err.retryable or attempt >= self.retry.max_attempts:
                raise err
            pause = 0.0
            if len(tried) == len(self._stubs):  # every address failed at least once: back off
                backoffs += 1
                pause = self.retry.backoff_s(backoffs, self._rng)
            if time.monotonic() + pause >= deadline:
                raise err
            log.info("%s (attempt %d); retrying in %.3fs", err, attempt, pause)
            time.sleep(pause)
        raise AssertionError("unreachable")

    # -- Ingest -----------------------------------------------------------------------------------

    def ingest_fhir(self, data: bytes | str | Path, *, source: str | None = None,
                    outcome_detail: str = "all", timeout: float | None = None) -> IngestResult:
        """FHIR R4 JSON: a Bundle, a resource or a JSON array (``bytes``, or a ``str`` of JSON text
        starting with ``{`` or ``[``), or a path to such a file.

        ``outcome_detail="issues"`` asks for full outcomes only of records with warnings or
        rejections (bulk senders); ``IngestResult.statuses`` always has every record's status."""
        request = fhir_request(data, source or self.source, outcome_detail)
        return IngestResult.from_proto(self._invoke(lambda s: s.ingest.IngestBatch, request, timeout=timeout))

    def ingest_flat(self, *, patients: Sequence[Mapping[str, Any] | Any] = (),
                    encounters: Sequence[Mapping[str, Any] | Any] = (),
                    conditions: Sequence[Mapping[str, Any] | Any] = (),
                    observations: Sequence[Mapping[str, Any] | Any] = (),
                    source: str | None = None, outcome_detail: str = "all",
                    timeout: float | None = None) -> IngestResult:
        """Typed flat records: dicts with the proto's field names (``DataFrame.to_dict("records")``:
        missing values left out, datetimes as ISO 8601), or the messages themselves."""
        request = flat_request(source or self.source, outcome_detail, patients=patients,
                               encounters=encounters, conditions=conditions, observations=observations)
        return IngestResult.from_proto(self._invoke(lambda s: s.ingest.IngestBatch, request, timeout=timeout))

    def ingest_arrow(self, table: Any, kind: str, *, source: str | None = None,
                     outcome_detail: str = "all", timeout: float | None = None) -> IngestResult:
        """A ``pyarrow.Table``/``RecordBatch`` of one record kind (patient, encounter, condition,
        observation); columns named like the flat record's fields. A table over ``ARROW_PART_BYTES`` or
        ``ARROW_PART_ROWS`` rows (the server's default ``max_records_per_request``) travels in parts of one
        IngestStream (one batch id); outcomes are still numbered by table row."""
        parts = arrow_parts(table)
        if len(parts) == 1:
            request = arrow_request(table, kind, source or self.source, outcome_detail)
            return IngestResult.from_proto(self._invoke(lambda s: s.ingest.IngestBatch, request,
                                                        timeout=timeout))
        return self.ingest_stream([(table, kind)], source=source, outcome_detail=outcome_detail,
                                  timeout=timeout)

    def ingest_stream(self, items: Iterable[bytes | str | Path | tuple[Any, str] | Mapping[str, Any]], *,
                      source: str | None = None, outcome_detail: str = "all",
                      timeout: float | None = None) -> IngestResult:
        """Several payloads in one client stream (one response, one batch id): FHIR bytes or paths,
        ``(pyarrow table, kind)`` pairs, or flat-record dicts (``{"patients": [...], ...}``).
        ``RecordOutcome.request_index`` is the item's position. A table over ``ARROW_PART_BYTES`` or
        ``ARROW_PART_ROWS`` travels as several messages; its outcomes are still numbered by table row.
        The requests are built up front so an UNAVAILABLE retry can resend them all (safe: ingest is
        idempotent)."""
        requests, origin = stream_requests(items, source or self.source, outcome_detail)
        if not requests:
            raise ValueError("items: nothing to send")

        def method(stubs: _Stubs) -> Callable[..., Any]:
            return lambda reqs, **kw: stubs.ingest.IngestStream(iter(reqs), **kw)

        result = IngestResult.from_proto(self._invoke(method, requests, timeout=timeout))
        return result if all(o == (k, 0) for k, o in enumerate(origin)) else result.renumbered(origin)

    # -- Risk and Forecast ------------------------------------------------------------------------

    def score(self, model: str,
              features: Sequence[Mapping[str, float]] | np.ndarray | Sequence[Sequence[float]], *,
              feature_names: Sequence[str] | None = None,
              diagnoses: Sequence[Sequence[str] | Mapping[str, Any]] | None = None,
              top_features: int | None = None, model_version: int = 0,
              timeout: float | None = None) -> ScoreResult:
        """Risk scores for a batch of patients: a list of {feature: value} dicts, a pandas DataFrame
        (scored by its column names, any order), or a 2-D array with ``feature_names`` (None = the model
        card's order, which the array must match). None / NaN / pd.NA: missing, filled or refused by
        the card."""
        request = score_request(model, features, feature_names=feature_names, diagnoses=diagnoses,
                                top_features=top_features, model_version=model_version)
        return ScoreResult.from_proto(self._invoke(lambda s: s.risk.Score, request, timeout=timeout))

    def risk_model_info(self, model: str, model_version: int = 0, *,
                        timeout: float | None = None) -> dict[str, Any]:
        """What a risk model takes (Risk.Describe, from its model card): {"model_name", "model_version",
        "features": [{"name", "description", "unit", "kind", "min", "max", "integer", "one_hot_group",
        "one_hot_rule", "may_be_missing", "missing_flag", "derived", "derived_from"}] in input order
        (min/max None where open or binary; one_hot_*/missing_flag None where none), "risk_bands",
        "privacy": {"private", "epsilon", "delta", "privacy_unit"}}."""
        request = risk_pb2.DescribeRequest(model_name=model, model_version=model_version)
        r = self._invoke(lambda s: s.risk.Describe, request, timeout=timeout)
        features = [{"name": f.name, "description": f.description, "unit": f.unit, "kind": f.kind or None,
                     "min": f.min if f.HasField("min") else None, "max": f.max if f.HasField("max") else None,
                     "integer": f.integer, "one_hot_group": f.one_hot_group or None,
                     "one_hot_rule": f.one_hot_rule or None, "may_be_missing": f.may_be_missing,
                     "missing_flag": f.missing_flag or None, "derived": f.derived,
                     "derived_from": list(f.derived_from)} for f in r.features]
        p = r.privacy
        privacy = {"private": p.private, "epsilon": p.epsilon if p.private else None,
                   "delta": p.delta if p.private else None, "privacy_unit": p.privacy_unit or None}
        return {"model_name": r.model_name, "model_version": r.model_version, "features": features,
                "risk_bands": list(r.risk_bands), "privacy": privacy}

    def forecast(self, graph: str | None = None, *, model: str | None = None,
                 history: HistoryInput | None = None,
                 stored: str | bool | None = None, end_date: str | None = None,
                 regions: Sequence[str] = (), horizons: Sequence[int] = (),
                 quantile_levels: Sequence[float] = (), model_version: int = 0,
                 allow_missing_regions: bool = False, nowcast: bool = False,
                 timeout: float | None = None) -> ForecastResult:
        """Forecast from an explicit ``history`` ({region: counts oldest first}, (region_ids,
        [steps x regions]), a ``read_history(path)`` file or a DataFrame (``read_history(frame)``), whose
        periods date the result) or from the
        stored surveillance counts (``stored=True`` or a syndrome;
        regions without stored counts are refused unless ``allow_missing_regions``, then flagged in
        ``ForecastResult.coverage``; ``nowcast``: the window's latest periods corrected for reporting
        delay first, each region's ``nowcast_added`` in the coverage)."""
        if history is not None and hasattr(history, "to_csv") and hasattr(history, "columns"):
            history = read_history(history)  # a DataFrame, read like the file it would write
        sent = history if isinstance(history, HistoryFile) else None
        if sent is not None:
            history = (list(sent.region_ids), sent.counts)
        request = forecast_request(graph, model=model, history=history, stored=stored, end_date=end_date,
                                   regions=regions, horizons=horizons, quantile_levels=quantile_levels,
                                   model_version=model_version, allow_missing_regions=allow_missing_regions,
                                   nowcast=nowcast)
        reply = self._invoke(lambda s: s.forecast.Forecast, request, timeout=timeout)
        result = ForecastResult.from_proto(reply)
        if history is not None:  # keep what was sent, for plots
            hist = forecast_pb2.History()
            hist.CopyFrom(request.history)
            result = result.with_history(list(hist.region_ids), np.asarray(hist.counts, np.float32))
        return sent.date(result) if sent is not None else result

    def regions(self, graph: str | None = None, *, model: str | None = None, model_version: int = 0,
                timeout: float | None = None) -> list[dict[str, Any]]:
        """A forecaster's regions in column order: [{"id", "name", "aliases"}]."""
        return self.model_info(graph, model=model, model_version=model_version, timeout=timeout)["regions"]

    def model_info(self, graph: str | None = None, *, model: str | None = None, model_version: int = 0,
                   timeout: float | None = None) -> dict[str, Any]:
        """What a forecaster takes and returns: {"model_name", "model_version", "window", "step",
        "horizons", "quantile_levels", "week_start", "regions": [{"id", "name", "aliases"}]}."""
        if not graph and not model:
            raise ValueError("give graph (e.g. 'japan') or model")
        request = forecast_pb2.RegionsRequest(graph=graph or "", model_name=model or "",
                                              model_version=model_version)
        r = self._invoke(lambda s: s.forecast.Regions, request, timeout=timeout)
        return {"model_name": r.model_name, "model_version": r.model_version, "window": r.window,
                "step": r.step, "horizons": list(r.horizons),
                "quantile_levels": [round(q, 6) for q in r.quantile_levels], "week_start": r.week_start,
                "regions": [{"id": x.id, "name": x.name, "aliases": list(x.aliases)} for x in r.regions]}

    # -- Scenario ---------------------------------------------------------------------------------

    def scenario(self, graph: str | Mapping[str, Any], *, horizon_days: int, timeout: float | None = None,
                 progress: Callable[[int, int], None] | None = None, **options: Any) -> ScenarioResult:
        """Run a what-if scenario (options: see ``healthai_client.scenario.scenario_request``). With
        ``progress`` the server streams (RunStream, any size up to its cap) and ``progress(done_days,
        horizon_days)`` is called per period; without, one unary Run (small jobs). Both fail over and retry
        UNAVAILABLE like every call (a stream retried restarts: ``progress`` counts from 0 again)."""
        check_scenario_options(options)
        request = scenario_request(graph, horizon_days=horizon_days, **options)
        if progress is None:
            return ScenarioResult.from_proto(self._invoke(lambda s: s.scenario.Run, request, timeout=timeout))

        def stream(stubs: _Stubs) -> Callable[..., ScenarioResult]:
            def run(req: Any, **kw: Any) -> ScenarioResult:
                for update in stubs.scenario.RunStream(req, **kw):
                    if update.HasField("progress"):
                        progress(update.progress.days_done, update.progress.horizon_days)
                    else:
                        return ScenarioResult.from_proto(update.result)
                raise HealthAIClientError(grpc.StatusCode.INTERNAL, "stream ended without a result",
                                          address=self.config.addresses[self._stubs.index(stubs)])
            return run

        return self._invoke(stream, request, timeout=timeout)

    def calibrate(self, graph: str | Mapping[str, Any], *, observed: tuple[Sequence[str], Any] | None = None,
                  stored: str | bool | None = None, end_date: str | None = None, window_days: int = 0,
                  disease: Mapping[str, float] | None = None, mobility: float | None = None,
                  timeout: float | None = None) -> Calibration:
        """Fit r0 and a reporting rate to ``observed`` (region_ids, [days x regions]) or stored counts."""
        from healthai.v1 import scenario_pb2

        request = counts_request(graph_message(graph, mobility), scenario_pb2.Disease(**dict(disease or {})),
                                 observed=observed, stored=stored, end_date=end_date, window_days=window_days)
        return Calibration.from_proto(self._invoke(lambda s: s.scenario.Calibrate, request, timeout=timeout))

    # -- Diagnostics ------------------------------------------------------------------------------

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The gRPC health status of ``service`` ("" = the whole server): SERVING, NOT_SERVING, ..."""
        reply = self._invoke(lambda s: s.health.Check, health_pb2.HealthCheckRequest(service=service),
                             timeout=timeout)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    def echo(self, payload: bytes = b"", *, timeout: float | None = None) -> bytes:
        """The server sends ``payload`` back (a round trip through auth, TLS and the network)."""
        reply = self._invoke(lambda s: s.diagnostics.Echo, diagnostics_pb2.EchoRequest(payload=payload),
                             timeout=timeout)
        return bytes(reply.payload)

    # -- life cycle -------------------------------------------------------------------------------

    @property
    def down_addresses(self) -> tuple[str, ...]:
        """Addresses whose connection is failing now (tracked only with several addresses)."""
        return tuple(a for a, down in zip(self.config.addresses, self._down, strict=True) if down)

    def close(self) -> None:
        """Closes the channels (idempotent); calls made afterwards raise ValueError."""
        if self._closed:
            return
        self._closed = True
        for ch, watcher in zip(self._channels, self._watchers, strict=False):
            ch.unsubscribe(watcher)
        if self._watchers:
            await_connectivity_pollers(self._channels)
        for ch in self._channels:
            ch.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

