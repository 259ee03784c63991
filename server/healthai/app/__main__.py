"""``python -m healthai.app serve ...``: the ``healthai serve`` command without the other areas' commands
(what ``healthai.app.testing.start_server_process`` runs)."""

from __future__ import annotations

import argparse
import sys

from healthai.app import cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m healthai.app")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
