"""The ``healthai`` command: one entry point; each area registers its own sub-commands."""

from __future__ import annotations

import argparse
import importlib
import sys

from healthai.errors import HealthAIError

# Modules exposing ``register(subparsers)``; each adds its sub-commands with ``set_defaults(func=...)``
# where ``func(args) -> int`` is the exit code. Imported lazily so ``healthai --help`` stays fast.
SUBCOMMAND_MODULES = (
    "healthai.ops.cli",  # info
    "healthai.app.cli",  # serve
    "healthai_training.cli",  # train (the healthai-training distribution, training/)
    "healthai_training.federated.cli",  # federate (training distribution + requirements-federated.txt)
    "healthai.security.cli",  # keys
    "healthai.triton.cli",  # triton prepare
    "healthai.ingest.kafka.cli",  # ingest-kafka
    "healthai.surveillance.cli",  # counts
    "healthai.surveillance.ledger_cli",  # privacy-ledger
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="healthai", description="healthai service and tools")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != OPTIONAL_DISTRIBUTIONS.get(name):
                raise
            _register_missing(sub, name)
            continue
        module.register(sub)
    return parser


# Sub-commands that live in an optional distribution: the top-level package it provides.
OPTIONAL_DISTRIBUTIONS = {"healthai_training.cli": "healthai_training",
                          "healthai_training.federated.cli": "healthai_training"}


def _register_missing(sub: argparse._SubParsersAction, module: str) -> None:
    """``healthai train`` on a serving-only install: say what to install instead of a traceback."""
    command = {"healthai_training.cli": "train", "healthai_training.federated.cli": "federate"}[module]
    parser = sub.add_parser(command, help=f"({command}: not installed)", add_help=False)
    parser.add_argument("rest", nargs=argparse.REMAINDER)

    def missing(_args: argparse.Namespace) -> int:
        print(f"healthai {command}: the training tools are not installed in this environment; "
              "install the healthai-training distribution (pip install ./training, which pulls torch and "
              "opacus)", file=sys.stderr)
        return 2

    parser.set_defaults(func=missing)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except HealthAIError as e:  # a refusal no command caught itself (a store that cannot be opened): one line
        print(f"healthai {args.command}: {e.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
