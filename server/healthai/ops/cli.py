"""``healthai info``: what was built (CPU, CUDA + version, ONNX Runtime custom-op library)."""

from __future__ import annotations

import argparse
import json


def _info(_: argparse.Namespace) -> int:
    from healthai.ops import build_info

    print(json.dumps(build_info(), indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("info", help="what was built (CPU, CUDA, ONNX Runtime op library)")
    parser.set_defaults(func=_info)
