"""The one codegen entry for protos: proto/**/*.proto -> build/gen/healthai/v1/*_pb2{,_grpc}.py{,i}.

Run by setup.py on every build (``python proto/gen_python.py`` also works by hand). Output is build
output, in the build tree (``HEALTHAI_GEN_DIR`` overrides it), never in the source tree; setup.py maps
the import package ``healthai.v1`` to it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def gen_dir() -> Path:
    """Where the import package ``healthai.v1`` is generated."""
    base = os.environ.get("HEALTHAI_GEN_DIR")
    return (Path(base) if base else ROOT / "build" / "gen").resolve() / "healthai" / "v1"


def generate() -> Path:
    protos = sorted(str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto").rglob("*.proto"))
    dest = gen_dir()  # proto package healthai.v1 == import package healthai.v1
    if not protos:
        raise SystemExit(f"no .proto files under {ROOT / 'proto'}")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "grpc_tools.protoc", "-I", str(ROOT / "proto"),
               f"--python_out={tmp}", f"--pyi_out={tmp}", f"--grpc_python_out={tmp}", *protos]
        subprocess.run(cmd, cwd=ROOT, check=True)
        dest.mkdir(parents=True, exist_ok=True)
        for f in (Path(tmp) / "healthai" / "v1").iterdir():
            shutil.copyfile(f, dest / f.name)
    (dest / "__init__.py").write_text('"""Generated protobuf/gRPC stubs (build output)."""\n')
    return dest


if __name__ == "__main__":
    generate()
