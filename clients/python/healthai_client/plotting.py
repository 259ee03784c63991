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


def pyplot(flag: str) -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend."""
    require_plotting(flag)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
