"""matplotlib on demand: a serving-only install (``pip install .``, the container image) has none, so
the commands that draw check for it before they call the server."""

from __future__ import annotations

import importlib.util
from typing import Any

HINT = "needs matplotlib, which a serving-only install does not have (pip install matplotlib)"


def can_plot() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def require_plotting(flag: str) -> None:
    """OSError (exit 2, one line) naming ``flag`` when matplotlib is missing."""
    if not can_plot():
        raise OSError(f"{flag} {HINT}")


class _Figures:
    """The part of ``matplotlib.pyplot`` the plots use, on Figure + FigureCanvasAgg: drawing a file
    leaves pyplot's state and the session's backend (a notebook's inline one) untouched."""

    def subplots(self, nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float] | None = None,
                 **kw: Any) -> tuple[Any, Any]:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize)
        FigureCanvasAgg(fig)
        return fig, fig.subplots(nrows, ncols, **kw)

    def close(self, fig: Any) -> None:
        """Nothing to do: the figure is not registered with pyplot (garbage-collected when dropped)."""


def pyplot(flag: str) -> Any:
    """``subplots``/``close`` like ``matplotlib.pyplot``'s, drawing with Agg without switching the
    backend (``matplotlib.use`` is never called)."""
    require_plotting(flag)
    return _Figures()
