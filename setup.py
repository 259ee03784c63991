"""Build glue: generate the gRPC stubs from proto/ and build the native parts with CMake.

Package metadata lives in pyproject.toml. The import package ``healthai`` is the ``server/``
folder; ``healthai_training`` is ``training/``. Native outputs (``_native`` pybind11 module and the
ONNX Runtime custom-op library) land next to the package's Python files.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
VERSION = "0.1.0"


def generate_protos() -> None:
    sys.path.insert(0, str(ROOT / "proto"))
    from gen_python import generate

    generate()


class CMakeExtension(Extension):
    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    """Configure + build the whole CMake project once; outputs go to the extension's folder."""

    def build_extension(self, ext: Extension) -> None:
        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        out_dir.mkdir(parents=True, exist_ok=True)
        build_dir = Path(os.environ.get("HEALTHAI_CMAKE_BUILD_DIR", ROOT / "build" / "cmake")).resolve()
        build_dir.mkdir(parents=True, exist_ok=True)
        ort_inc = os.environ.get("HEALTHAI_ORT_INCLUDE_DIR", "")
        if not ort_inc:
            default = ROOT / "build" / "onnxruntime-dev" / "root" / "usr" / "include" / "onnxruntime"
            ort_inc = str(default) if default.is_dir() else ""
        import pybind11

        args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DHEALTHAI_VERSION={VERSION}",
            f"-DHEALTHAI_ORT_INCLUDE_DIR={ort_inc}",
            f"-DWITH_CUDA={os.environ.get('HEALTHAI_WITH_CUDA', 'AUTO')}",
            f"-DCMAKE_BUILD_TYPE={os.environ.get('HEALTHAI_BUILD_TYPE', 'Release')}",
            "-G", "Ninja",
        ]
        subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build_dir), *args], check=True)
        jobs = os.environ.get("HEALTHAI_BUILD_JOBS", str(os.cpu_count() or 2))
        subprocess.run(["cmake", "--build", str(build_dir), "-j", jobs], check=True)


# Stubs first: every build step (metadata, build_py, editable) then sees the package healthai.v1.
generate_protos()


def data_packages() -> list[str]:
    """The default model repository and code tables are package data: list their folders as
    (namespace) packages so setuptools copies them without "absent from packages" warnings."""
    base = ROOT / "server" / "healthai" / "data"
    folders = [base, *sorted(p for p in base.rglob("*") if p.is_dir() and p.name != "__pycache__")]
    return [".".join(("healthai", "data", *f.relative_to(base).parts)) for f in folders]


def packages() -> list[str]:
    server = find_packages("server", include=["healthai", "healthai.*"])
    sdk = find_packages("clients/python", include=["healthai_client", "healthai_client.*"])
    return [*server, "healthai.v1", *data_packages(), *sdk]


setup(
    packages=packages(),
    package_dir={
        "": "server",
        "healthai.v1": "build/gen/healthai/v1",  # written by generate_protos()
        "healthai_client": "clients/python/healthai_client",
    },
    package_data={"healthai": ["*.so", "*.pyi", "py.typed"], "healthai.v1": ["*.pyi"],
                  "healthai_client": ["py.typed"],
                  **{p: ["*"] for p in data_packages()}},
    ext_modules=[CMakeExtension("healthai._native")],
    cmdclass={"build_ext": CMakeBuild},
)
