"""An asyncio event loop that says when it is about to wait for I/O.

Dynamic batching on one event loop needs to know whether waiting for company costs anyone anything.
While the loop has other work (other calls to read, answer, send), a request held back for a batch
delays nobody: the loop is busy either way. Once the loop would sit idle, the batch should run at
once. ``asyncio`` has no such signal, so the server's loop uses :class:`IdleSelector`: just before a
``select`` that may block (a timeout other than 0) it runs the callbacks registered with
``call_when_idle``, then polls without blocking (they may have made work ready). A callback may ask
for a grace: once the loop has nothing to run, it first waits that long for I/O — a loaded server's
loop pauses briefly while its callers are between calls. Only ``restart_grace`` (a new call came)
restarts the wait: other busy turns (the completions of calls already answered) do not, or a few
closed-loop callers, all already waiting, would wait the whole window for nobody. (The wait is an
epoll wait: whole milliseconds, rounded up, as for asyncio's own timers.) It also counts the
waits that may block, so the scheduler can tell whether the loop has been busy without a break since
an earlier moment (``idle_waits`` unchanged).

``new_event_loop()`` is the loop ``healthai serve`` runs on; on any other loop ``selector_of`` is
None and the scheduler never holds a request back for company.
"""

from __future__ import annotations

import asyncio
import logging
import selectors
import time
import weakref
from collections.abc import Callable

log = logging.getLogger(__name__)

_SELECTORS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, IdleSelector] = weakref.WeakKeyDictionary()


class IdleSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """The platform's default selector, with callbacks run when the loop would otherwise wait."""

    def __init__(self) -> None:
        super().__init__()
        self.idle_waits = 0  # selects that could block: the loop had nothing ready to run
        self._on_idle: list[Callable[[], None]] = []
        self._grace = 0.0  # the shortest grace of the waiting callbacks
        self._idle_since = 0.0  # monotonic time the loop last found nothing to run (0: it had work)

    def call_when_idle(self, callback: Callable[[], None], grace_s: float = 0.0) -> None:
        """Runs ``callback()`` once, on the loop thread, the next time the loop has had nothing to
        run for ``grace_s`` (0: at once)."""
        if not self._on_idle:
            self._grace, self._idle_since = grace_s, 0.0
        else:
            self._grace = min(self._grace, grace_s)
        self._on_idle.append(callback)

    def restart_grace(self) -> None:
        """Company came: the waiting callbacks' grace starts again at the loop's next idle moment."""
        self._idle_since = 0.0

    def end_grace(self) -> None:
        """No more company is expected: the waiting callbacks run at the loop's next idle moment."""
        self._grace = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None or timeout > 0:
            if self._on_idle and self._grace > 0:
                now = time.monotonic()
                self._idle_since = self._idle_since or now
                left = self._idle_since + self._grace - now
                if left > 0:  # wait for I/O, at most the rest of the grace
                    return super().select(left if timeout is None else min(timeout, left))  # type: ignore[no-any-return]
            if self._on_idle:
                self._idle_since = 0.0
                callbacks, self._on_idle = self._on_idle, []
                for callback in callbacks:
                    try:
                        callback()
                    except Exception:  # a broken callback must not stop the loop
                        log.exception("idle callback %r failed", callback)
                timeout = 0  # the callbacks may have made work ready: poll, do not wait
            else:
                self.idle_waits += 1
        return super().select(timeout)  # type: ignore[no-any-return]


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A selector event loop on an :class:`IdleSelector` (what the server runs on)."""
    selector = IdleSelector()
    loop = asyncio.SelectorEventLoop(selector)
    _SELECTORS[loop] = selector
    return loop


def selector_of(loop: asyncio.AbstractEventLoop) -> IdleSelector | None:
    """The loop's :class:`IdleSelector` when it was made by :func:`new_event_loop`, else None."""
    return _SELECTORS.get(loop)
