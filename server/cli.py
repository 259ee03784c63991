"""The ``healthai`` command: one entry point; each area registers its own sub-commands."""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules exposing ``register(subparsers)``; each adds its sub-commands with ``set_defaults(func=...)``
# where ``func(args) -> int`` is the exit code. Imported lazily so ``healthai --help`` stays fast.
SUBCOMMAND_MODULES = (
    "healthai.ops.cli",  # info
    "healthai.app.cli",  # serve
    "healthai.training.cli",  # train
    "healthai.security.cli",  # keys
    "healthai.triton.cli",  # triton prepare
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="healthai", description="healthai service and tools")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
