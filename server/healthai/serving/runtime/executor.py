"""One executor for every backend: groups a batch, runs it, isolates failures, classifies errors.

- Requests that carry the same task run as one group through the task; plain requests are
  concatenated along the batch axis into one model run and split back.
- When a group fails because of its input (``InvalidInput``), its requests run one by one so only
  the bad one fails. An availability error (not ready, overloaded, deadline) fails the group alike.
- Anything else is a bug in our code (a task's pre/post-processing, a backend): it is never reported
  as the caller's fault — the request fails INTERNAL with an incident id, and the stack (frames and
  exception types only, never messages, which may quote input) is logged under that id.

Every backend run is timed on ``RUN_CLOCK`` (per thread): when the execution's first run started
and its last ended, from which the scheduler tells input assembly, model run and output split apart
(KServe's compute_input / compute_infer / compute_output) — two clock reads per run.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence

import numpy as np

from healthai.errors import HealthAIError, InternalError, InvalidInput, stack_summary
from healthai.serving.runtime.contract import InferRequest, InferResult, ModelBackend

log = logging.getLogger(__name__)

Outcome = InferResult | HealthAIError


class RunClock(threading.local):
    """perf_counter ns when this thread's current execution first entered and last left a backend
    run; 0 = no run yet (the scheduler resets both before each execute)."""

    first_ns = 0
    last_ns = 0


RUN_CLOCK = RunClock()


def internal_error(exc: BaseException, where: str) -> InternalError:
    incident = uuid.uuid4().hex[:12]
    log.error("%s: execution failed (incident %s): %s\n%s", where, incident, type(exc).__name__,
              stack_summary(exc))
    return InternalError(f"internal error while executing {where} (incident {incident})")


class BatchExecutor:
    """``execute(batch)`` for a backend (see the module docstring)."""

    def __init__(self, backend: ModelBackend) -> None:
        self.backend = backend

    @property
    def where(self) -> str:
        return f"model {self.backend.name!r} version {self.backend.version}"

    def execute(self, batch: Sequence[InferRequest]) -> list[Outcome]:
        if len(batch) == 1:  # the common lone request: no grouping
            return self._group(batch)
        groups: dict[int, list[int]] = {}
        for i, r in enumerate(batch):
            groups.setdefault(id(r.task), []).append(i)
        if len(groups) == 1:
            return self._group(batch)
        results: list[Outcome] = [InternalError("not executed")] * len(batch)
        for indices in groups.values():
            for i, out in zip(indices, self._group([batch[i] for i in indices]), strict=True):
                results[i] = out
        return results

    def _group(self, group: Sequence[InferRequest]) -> list[Outcome]:
        """One run of the group; on bad input or a bug, its requests one by one to find the culprit."""
        try:
            task = group[0].task
            if task is not None:
                return task.run(self._run, group)
            return self._plain(group)
        except InvalidInput as exc:
            if len(group) == 1:
                return [exc]
        except HealthAIError as exc:  # not ready, overloaded, deadline: the same for every request
            return [exc] * len(group)
        except Exception as exc:
            if len(group) == 1:
                return [internal_error(exc, self.where)]
        return [self._group([r])[0] for r in group]

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        clock = RUN_CLOCK
        start = time.perf_counter_ns()
        if not clock.first_ns:
            clock.first_ns = start
        try:
            return self.backend.run(feeds)
        finally:
            clock.last_ns = time.perf_counter_ns()

    def _plain(self, group: Sequence[InferRequest]) -> list[Outcome]:
        names = [s.name for s in self.backend.inputs]
        if len(group) == 1:
            feeds = {n: group[0].inputs[n] for n in names}
        else:
            feeds = {n: np.concatenate([r.inputs[n] for r in group]) for n in names}
        outputs = self._run(feeds)
        out_names = [s.name for s in self.backend.outputs]
        results: list[Outcome] = []
        start = 0
        for r in group:
            stop = start + r.rows
            named = dict(zip(out_names, outputs, strict=True)) if len(group) == 1 else \
                {n: o[start:stop] for n, o in zip(out_names, outputs, strict=True)}
            results.append({n: named[n] for n in r.outputs} if r.outputs else named)
            start = stop
        return results
