"""flwr 1.42's CLI stack (typer on click 8.5) warns on import; the suite turns warnings into errors, so
import it once here with that one deprecation silenced."""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="'click.utils.get_.*_stream' is deprecated",
                            category=DeprecationWarning)
    import flwr.server  # noqa: F401
