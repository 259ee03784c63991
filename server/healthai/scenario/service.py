"""The Scenario servicer: thin conversions around ``model.run`` and ``calibrate.calibrate``.

Jobs run in a worker thread (the native engine releases the GIL). Admission: work caps per RPC
(RESOURCE_EXHAUSTED), at most ``max_concurrent_jobs`` computing and ``max_queued_jobs`` waiting
(RESOURCE_EXHAUSTED beyond). A cancelled call or a passed deadline stops the job at the next period
boundary, which frees its slot.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime
from typing import Any, Protocol

import grpc
import numpy as np

from healthai.errors import InvalidInput, Overloaded, TooLarge
from healthai.observability.context import note
from healthai.ops.metapop import MobilityGraph
from healthai.scenario import convert
from healthai.scenario.calibrate import Fit, calibrate
from healthai.scenario.errors import FieldError
from healthai.scenario.model import Disease, Result, Scenario, run
from healthai.scenario.observed import stored_columns, within_graph
from healthai.scenario.settings import ScenarioSettings
from healthai.surveillance.counts import end_refused, place_level
from healthai.v1 import scenario_pb2, scenario_pb2_grpc

log = logging.getLogger(__name__)
SERVICE_NAME = "healthai.v1.Scenario"


class Surveillance(Protocol):
    def counts(
        self, syndrome: str = "ili", freq: str = "D", start: Any = None, end: Any = None, regions: Any = None,
        *, completed_by: date | None = None, level: str = "region",
    ) -> Any: ...


class JobGate:
    """At most ``slots`` jobs at once and ``queue`` waiting; ``active`` counts running jobs (tests)."""

    def __init__(self, slots: int, queue: int) -> None:
        self._sem = asyncio.Semaphore(slots)
        self._limit = slots + queue
        self.admitted = 0
        self.active = 0

    async def __aenter__(self) -> JobGate:
        if self.admitted >= self._limit:
            raise Overloaded(f"{self.admitted} scenario jobs running or queued; retry later")
        self.admitted += 1
        try:
            await self._sem.acquire()
        except BaseException:
            self.admitted -= 1
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._sem.release()
        self.admitted -= 1


class ScenarioServicer(scenario_pb2_grpc.ScenarioServicer):
    def __init__(self, settings: ScenarioSettings, surveillance: Surveillance | None = None) -> None:
        self.settings = settings
        self.surveillance = surveillance
        self.gate = JobGate(settings.max_concurrent_jobs, settings.max_queued_jobs)
        self._workers: dict[asyncio.Future[Result], threading.Event] = {}  # running jobs' threads

    async def shutdown(self) -> None:
        """Stop every running job at its next period and wait for its worker thread."""
        for stop in self._workers.values():
            stop.set()
        if self._workers:
            await asyncio.wait(list(self._workers))

    # ---- request -> job ----
    async def _counts(
        self, req: scenario_pb2.CalibrateRequest, field: str, graph: MobilityGraph
    ) -> tuple[list[str], np.ndarray, str]:
        which = req.WhichOneof("counts")
        if which == "observed":
            ids = list(req.observed.region_ids)
            if not ids or len(req.observed.counts) % len(ids):
                raise FieldError(
                    f"{len(req.observed.counts)} counts do not fill rows of {len(ids)} regions",
                    field=f"{field}.observed.counts",
                )
            return ids, np.array(req.observed.counts, np.float64).reshape(-1, len(ids)), ""
        if which == "stored":
            if self.surveillance is None:
                raise FieldError("this server keeps no surveillance counts", field=f"{field}.stored")
            end = req.stored.end_date or None
            if end is not None:
                try:
                    date.fromisoformat(end)
                except ValueError as e:
                    raise FieldError(
                        f"end_date {end!r} is not an ISO date", field=f"{field}.stored.end_date"
                    ) from e
            today = datetime.now(UTC).date()  # today's counts are partial: calibrate to days that ended
            query = {"syndrome": req.stored.syndrome or "ili", "freq": "D", "end": end, "completed_by": today}
            try:
                df = await asyncio.to_thread(self.surveillance.counts, **query)
                if place_level(graph.ids) == "county":  # states whose every case has a county: by county
                    counties = await asyncio.to_thread(self.surveillance.counts, **query, level="county")
                    df = stored_columns(df, counties, graph.ids)
            except InvalidInput as e:
                if e.field != "end":
                    raise
                raise end_refused(e, f"{field}.stored.end_date") from None
            df, outside = within_graph(df, graph.ids)  # residents of other regions: left out, counted
            if outside.regions:
                note(outside_regions=outside.regions, outside_cases=outside.cases)
                log.info("calibration: %d stored cases in %d regions outside the graph left out",
                         outside.cases, outside.regions)
            if df.empty:
                raise FieldError(
                    "no stored counts to calibrate to" + (
                        f" ({outside.cases} cases, all in {outside.regions} regions outside the graph)"
                        if outside.regions else ""),
                    field=f"{field}.stored",
                )
            return [str(c) for c in df.columns], df.to_numpy(np.float64), str(df.index[-1].date())
        raise FieldError("observed or stored counts: one is required", field=f"{field}.counts")

    async def _calibrate(
        self, req: scenario_pb2.CalibrateRequest, graph: MobilityGraph, disease: Disease, field: str
    ) -> tuple[Fit, str]:
        ids, counts, last = await self._counts(req, field, graph)
        stored = req.WhichOneof("counts") == "stored"  # errors then name the stored counts, not `observed`
        fields = (f"{field}.stored",) * 2 if stored else ("observed.region_ids", "observed.counts")
        fit = await asyncio.to_thread(
            calibrate, graph, disease, ids, counts, window_days=req.window_days or 28, fields=fields
        )
        return fit, last

    async def _scenario(
        self, req: scenario_pb2.ScenarioRequest, cap: int
    ) -> tuple[Scenario, list[int], scenario_pb2.CalibrateResult | None]:
        graph = await asyncio.to_thread(convert.graph_from, req.graph, self.settings.graphs_dir)
        disease = convert.disease_from(req.disease)
        runs = req.runs or 100
        if runs > self.settings.max_runs:
            raise FieldError(f"runs must be <= {self.settings.max_runs}, got {runs}", field="runs")
        if req.deterministic and runs != 1 and req.runs:
            raise FieldError("deterministic mode has one run", field="runs")
        runs = 1 if req.deterministic else runs
        horizon = req.horizon_days or 0
        work = runs * graph.n_regions * horizon
        if work > cap:  # before any calibration or allocation
            raise TooLarge(
                f"work runs x regions x days = {work:,} is over this call's cap {cap:,}"
                + (" (use RunStream: healthai-client scenario --stream)" if cap < self.settings.max_work
                   else ""),
                field="runs",
            )
        if req.sample_trajectories > min(self.settings.max_sample_trajectories, runs):
            raise FieldError(
                f"sample_trajectories must be <= min(runs, {self.settings.max_sample_trajectories})",
                field="sample_trajectories",
            )
        which = req.WhichOneof("start")
        calibration = None
        start_h = None
        if which == "state":
            comps = convert.state_from(req.state, graph)
            start, start_h = comps[:4], (comps[4] if len(comps) == 5 else None)
        elif which == "seed_infections":
            start = convert.seeded(req.seed_infections, graph)
        elif which == "calibrate":
            async with self.gate:  # calibration is work too: it takes a job slot
                fit, last = await self._calibrate(req.calibrate, graph, disease, "calibrate")
            start = fit.start
            disease = dataclasses.replace(disease, r0=fit.r0)
            calibration = convert.fit_to(fit, last)
        else:
            raise FieldError("start: state, seed_infections or calibrate is required", field="start")
        cols = convert.positions(graph, req.report_regions, "report_regions") or list(range(graph.n_regions))
        s = Scenario(
            graph=graph,
            start=start,
            horizon=horizon,
            runs=runs,
            seed=req.seed,
            disease=disease,
            interventions=convert.interventions_from(req.interventions, graph),
            period_days=req.period_days or min(7, max(horizon, 1)),
            levels=convert.levels_from(req.quantile_levels),
            samples=req.sample_trajectories,
            mode="deterministic" if req.deterministic else "stochastic",
            num_threads=self.settings.num_threads,
            start_h=start_h,
        )
        note(runs=runs, regions=graph.n_regions, days=horizon)
        return s, cols, calibration

    async def _execute(
        self, s: Scenario, context: grpc.aio.ServicerContext, progress: Callable[[int, int], None] | None
    ) -> Result:
        stop = threading.Event()
        remaining = context.time_remaining()
        deadline = time.monotonic() + remaining if remaining is not None else None
        async with self.gate:
            self.gate.active += 1
            task = asyncio.ensure_future(
                asyncio.to_thread(run, s, progress=progress, stop=stop, deadline=deadline)
            )
            self._workers[task] = stop
            task.add_done_callback(lambda t: self._workers.pop(t, None))
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                stop.set()  # the worker stops at the next period; wait for it so the slot means free cores
                await asyncio.wait([task])
                if not task.cancelled():
                    task.exception()  # retrieve the worker's Cancelled: nobody else will
                raise
            finally:
                self.gate.active -= 1

    def _result(
        self,
        s: Scenario,
        cols: list[int],
        res: Result,
        started: float,
        calibration: scenario_pb2.CalibrateResult | None,
    ) -> scenario_pb2.ScenarioResult:
        out = convert.result_to(res, s.graph, cols, s.runs, s.work, time.perf_counter() - started)
        out.horizon_days = s.horizon
        if calibration is not None:
            out.calibration.CopyFrom(calibration)
        return out

    # ---- RPCs ----
    async def Run(
        self, request: scenario_pb2.ScenarioRequest, context: grpc.aio.ServicerContext
    ) -> scenario_pb2.ScenarioResult:
        started = time.perf_counter()
        s, cols, calibration = await self._scenario(request, self.settings.unary_max_work)
        res = await self._execute(s, context, None)
        return await asyncio.to_thread(self._result, s, cols, res, started, calibration)

    async def RunStream(
        self, request: scenario_pb2.ScenarioRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[scenario_pb2.ScenarioUpdate]:
        started = time.perf_counter()
        s, cols, calibration = await self._scenario(request, self.settings.max_work)
        loop = asyncio.get_running_loop()
        updates: asyncio.Queue[tuple[int, int] | None] = asyncio.Queue()  # None: the job ended

        def progress(done: int, total: int) -> None:
            loop.call_soon_threadsafe(updates.put_nowait, (done, total))

        job = asyncio.ensure_future(self._execute(s, context, progress))
        job.add_done_callback(lambda t: (updates.put_nowait(None), t.cancelled() or t.exception()))
        try:
            while (item := await updates.get()) is not None:
                yield scenario_pb2.ScenarioUpdate(
                    progress=scenario_pb2.ScenarioProgress(
                        days_done=item[0], horizon_days=item[1], elapsed_s=time.perf_counter() - started
                    )
                )
            res = job.result()
        finally:
            # No await here: this also runs when the call is closed (GeneratorExit). The job stops its
            # worker at the next period and then frees its slot on its own.
            if not job.done():
                job.cancel()
        yield scenario_pb2.ScenarioUpdate(
            result=await asyncio.to_thread(self._result, s, cols, res, started, calibration)
        )

    async def Calibrate(
        self, request: scenario_pb2.CalibrateRequest, context: grpc.aio.ServicerContext
    ) -> scenario_pb2.CalibrateResult:
        graph = await asyncio.to_thread(convert.graph_from, request.graph, self.settings.graphs_dir)
        disease = convert.disease_from(request.disease)
        async with self.gate:
            fit, last = await self._calibrate(request, graph, disease, "")
        note(regions=graph.n_regions, days=fit.window_days)
        return convert.fit_to(fit, last)
