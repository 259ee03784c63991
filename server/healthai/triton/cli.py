"""``healthai triton prepare --repository SRC --out DST``: a model repository ready for Triton."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from healthai.serving.settings import DEFAULT_MODEL_REPOSITORY


def _prepare(args: argparse.Namespace) -> int:
    from healthai.triton.prepare import PrepareError, prepare_repository

    try:
        prepared = prepare_repository(
            args.repository, args.out, kind=args.kind, instance_count=args.instances,
            standard_opset=args.standard_opset,
            preferred_batch_sizes=tuple(args.preferred_batch_size) if args.preferred_batch_size else None,
            max_queue_delay_us=args.max_queue_delay_us, mount_path=args.mount_path, force=args.force)
    except (PrepareError, OSError) as exc:
        print(f"healthai triton prepare: {exc}", file=sys.stderr)
        return 2
    for model in prepared:
        extra = f"  op library: {model.op_library}" if model.op_library else ""
        print(f"{model.name}: versions {list(model.versions)} -> {model.config_path}{extra}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    triton = sub.add_parser("triton", help="Triton Inference Server tools")
    tsub = triton.add_subparsers(dest="triton_command", required=True)
    p = tsub.add_parser("prepare", help="copy a model repository and write Triton config.pbtxt files")
    p.add_argument("--repository", type=Path, default=DEFAULT_MODEL_REPOSITORY,
                   help="source model repository (default: the packaged one)")
    p.add_argument("--out", type=Path, required=True, help="output folder (must be empty or absent)")
    p.add_argument("--kind", choices=("cpu", "gpu"), default="cpu", help="instance_group kind")
    p.add_argument("--instances", type=int, default=1, help="instance_group count (default 1)")
    p.add_argument("--standard-opset", action="store_true",
                   help="serve the standard-opset forecaster variant (stock Triton, no op library)")
    p.add_argument("--preferred-batch-size", type=int, action="append",
                   help="dynamic_batching preferred_batch_size (repeatable; default 8, 32, 128 up to "
                        "max_batch_size)")
    p.add_argument("--max-queue-delay-us", type=int,
                   help="dynamic_batching max_queue_delay_microseconds (default: the source's, else 500)")
    p.add_argument("--mount-path", type=Path,
                   help="where Triton sees the output folder (e.g. /models); op library paths use it")
    p.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    p.set_defaults(func=_prepare)
