"""``python -m healthai_training.federated.launch superlink|supernode WINDOW ARGS...``: Flower's
``flower-superlink`` / ``flower-supernode`` with a longer task-start window.

In flwr 1.42 a SuperLink or SuperNode hands each task (a ServerApp, or one ClientApp per message) to
a freshly started ``flwr-serverapp`` / ``flwr-clientapp`` process, which must pull its input within
``HEARTBEAT_DEFAULT_INTERVAL`` (30 s) of the claim, or the claim expires and the task is relaunched.
That constant is no CLI flag or environment variable; it is read from the core state modules at
call time, so this wrapper raises it there before starting Flower's own entry point. It also
scales a running task's liveness TTL (2 × window): only the time before a silently crashed app's
task is failed by its node grows; node heartbeats (SuperNode → SuperLink) are untouched.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

MIN_WINDOW = 30.0  # Flower's own value: never shorter


def set_task_start_window(seconds: float) -> None:
    from flwr.supercore.corestate import in_memory_corestate, sql_corestate

    for module in (in_memory_corestate, sql_corestate):
        if not hasattr(module, "HEARTBEAT_DEFAULT_INTERVAL"):  # a flwr release that moved it
            raise RuntimeError(f"{module.__name__} has no HEARTBEAT_DEFAULT_INTERVAL; pin flwr==1.42.0")
        module.HEARTBEAT_DEFAULT_INTERVAL = max(MIN_WINDOW, float(seconds))


def entry_point(role: str) -> Callable[[], None]:
    if role == "superlink":
        from flwr.superlink.cli.flower_superlink import flower_superlink

        return flower_superlink
    if role == "supernode":
        from flwr.supernode.cli.flower_supernode import flower_supernode

        return flower_supernode
    raise SystemExit(f"usage: launch superlink|supernode WINDOW_S ARGS... (got role {role!r})")


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise SystemExit("usage: launch superlink|supernode WINDOW_S ARGS...")
    role, window = argv[0], float(argv[1])
    run = entry_point(role)
    set_task_start_window(window)
    sys.argv = [f"flower-{role}", *argv[2:]]
    run()


if __name__ == "__main__":
    main(sys.argv[1:])
