"""The settings the manifests hand the server are settings the server has, and what they point at
(files, the model repository, the store) is where the pod actually mounts it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow.fs as pafs
import pytest
from deploy_support import OVERLAYS, pod_spec, render, server_container, settings_env
from pydantic import BaseModel

from healthai.app.settings import ENV_PREFIX, KEY_ENV, Settings, load_settings
from healthai.serving.settings import DEFAULT_MODEL_REPOSITORY

# Read by the server or its libraries but not fields of Settings.
NON_SETTINGS_ENV = {"HOME", KEY_ENV, "HEALTHAI_CONFIG"}


def _field_path(name: str) -> list[str]:
    return name[len(ENV_PREFIX):].lower().split("__")


def _resolve(model: type[BaseModel], path: list[str]) -> Any:
    """The annotation at ``path`` in the settings model tree; KeyError naming the unknown part."""
    head, *rest = path
    if head not in model.model_fields:
        raise KeyError(f"{model.__name__} has no field {head!r}")
    annotation = model.model_fields[head].annotation
    if not rest:
        return annotation
    assert isinstance(annotation, type) and issubclass(annotation, BaseModel), f"{head} is not nested"
    return _resolve(annotation, rest)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_env_setting_names_a_settings_field(overlay: str) -> None:
    """env_overrides() silently skips unknown names: a typo here would be ignored at run time."""
    env = settings_env(render(f"overlays/{overlay}"))
    unknown = {}
    for name in env:
        if name in NON_SETTINGS_ENV or not name.startswith(ENV_PREFIX):
            continue
        try:
            _resolve(Settings, _field_path(name))
        except KeyError as e:
            unknown[name] = str(e)
    assert not unknown, f"{overlay}: settings the server does not have: {unknown}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_rendered_settings_load(overlay: str) -> None:
    env = settings_env(render(f"overlays/{overlay}"))
    settings = load_settings(environ=env)
    assert settings.port == int(env["HEALTHAI_PORT"])
    assert str(settings.serving.model_repository) == env["HEALTHAI_SERVING__MODEL_REPOSITORY"]


def _mount_for(container: dict[str, Any], path: str) -> dict[str, Any] | None:
    target = PurePosixPath(path)
    for mount in container.get("volumeMounts", []):
        if target == PurePosixPath(mount["mountPath"]) or PurePosixPath(mount["mountPath"]) in target.parents:
            return mount
    return None


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_configured_path_is_on_a_mounted_volume(overlay: str) -> None:
    objects = render(f"overlays/{overlay}")
    container, env = server_container(objects), settings_env(objects)
    paths = {k: v for k, v in env.items() if k.endswith(("_FILE", "__MODEL_REPOSITORY"))}
    if "://" not in env["HEALTHAI_STORE_URI"]:
        paths["HEALTHAI_STORE_URI"] = env["HEALTHAI_STORE_URI"]
    assert "HEALTHAI_PSEUDONYM_KEY_FILE" in paths
    for name, path in paths.items():
        mount = _mount_for(container, path)
        assert mount is not None, f"{overlay}: {name}={path} is on no mounted volume"
        if name.endswith("_FILE"):
            assert mount.get("readOnly") is True, f"{name}: secrets are mounted read-only"
    store_mount = _mount_for(container, paths.get("HEALTHAI_STORE_URI", "/nonexistent"))
    assert store_mount is None or not store_mount.get("readOnly"), "the local store must be writable"


def test_prod_stores_on_object_storage_behind_tls_and_api_keys() -> None:
    env = settings_env(render("overlays/prod"))
    uri = env["HEALTHAI_STORE_URI"]
    assert uri.startswith("s3://")
    filesystem, root = pafs.FileSystem.from_uri(uri)  # what healthai.store does; region given: offline
    assert filesystem.type_name == "s3" and root
    assert env["HEALTHAI_SECURITY__TLS_CERT_FILE"] and env["HEALTHAI_SECURITY__TLS_KEY_FILE"]
    assert env["HEALTHAI_SECURITY__API_KEYS_FILE"]
    assert env["HEALTHAI_HEALTH_PORT"] != env["HEALTHAI_PORT"], "kubelet probes need a plaintext port"


def test_dev_stores_locally_in_plaintext() -> None:
    objects = render("overlays/dev")
    env = settings_env(objects)
    assert "://" not in env["HEALTHAI_STORE_URI"]
    assert not any(k.startswith("HEALTHAI_SECURITY__") for k in env)
    mount = _mount_for(server_container(objects), env["HEALTHAI_STORE_URI"])
    assert mount is not None
    (volume,) = [v for v in pod_spec(objects)["volumes"] if v["name"] == mount["name"]]
    assert "persistentVolumeClaim" in volume, "the dev store must survive a pod restart"


def test_seed_models_init_container_copies_the_baked_repository(tmp_path: Path) -> None:
    """Run the dev init container's own command (target redirected): /models gets the default repo."""
    spec = pod_spec(render("overlays/dev"))
    (seed,) = spec["initContainers"]
    assert seed["image"] == server_container(render("overlays/dev"))["image"]
    assert seed["command"][:2] == ["python", "-c"]
    target = tmp_path / "models"
    code = seed["command"][2].replace('"/models"', repr(str(target)))
    assert code != seed["command"][2], "the init command no longer copies to /models"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    baked = sorted(p.relative_to(DEFAULT_MODEL_REPOSITORY) for p in DEFAULT_MODEL_REPOSITORY.rglob("*"))
    assert baked, f"no default model repository at {DEFAULT_MODEL_REPOSITORY}: the image would serve nothing"
    assert sorted(p.relative_to(target) for p in target.rglob("*")) == baked
    assert any(p.name == "config.pbtxt" for p in target.rglob("*")), "not a Triton-layout repository"
