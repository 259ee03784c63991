"""The one codegen entry for protos: proto/**/*.proto -> server/v1/*_pb2{,_grpc}.py{,i}.

Run by setup.py on every build (``python proto/gen_python.py`` also works by hand). Output is
build output: git-ignored, never edited.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def generate() -> None:
    protos = sorted(str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto").rglob("*.proto"))
    dest = ROOT / "server" / "v1"  # proto package healthai.v1 == import package healthai.v1
    if not protos:
        return
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "grpc_tools.protoc", "-I", str(ROOT / "proto"),
               f"--python_out={tmp}", f"--pyi_out={tmp}", f"--grpc_python_out={tmp}", *protos]
        subprocess.run(cmd, cwd=ROOT, check=True)
        dest.mkdir(exist_ok=True)
        for f in (Path(tmp) / "healthai" / "v1").iterdir():
            shutil.copyfile(f, dest / f.name)
    (dest / "__init__.py").write_text('"""Generated protobuf/gRPC stubs (build output)."""\n')


if __name__ == "__main__":
    generate()
