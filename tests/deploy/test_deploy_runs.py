"""Start the real server (``healthai serve``, the image's entrypoint) with exactly the environment an
overlay gives the pod: container paths mapped onto temporary folders filled like the pod's volumes,
ports on loopback. Then do what kubelet and Prometheus do: gRPC health on the probe port, /metrics on
the metrics port, and SIGTERM for shutdown."""

from __future__ import annotations

import base64
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import free_port
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from deploy_support import DEPLOY, of_kind, pod_spec, render, server_container, settings_env
from grpc_health.v1 import health_pb2, health_pb2_grpc

from healthai.security.keys import new_key
from healthai.serving.settings import DEFAULT_MODEL_REPOSITORY

sys.path.insert(0, str(DEPLOY))
from grpc_health_check import check

pytestmark = pytest.mark.slow
START_TIMEOUT_S = 30


def _self_signed() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _secret_files(objects: tuple[dict[str, Any], ...], secret_name: str) -> dict[str, bytes]:
    """What the volume of ``secret_name`` holds: the rendered Secret (dev), or what the README's
    `kubectl create secret` commands would store (prod)."""
    rendered = {s["metadata"]["name"]: s for s in of_kind(objects, "Secret")}
    if secret_name in rendered:
        return {k: base64.b64decode(v) for k, v in rendered[secret_name]["data"].items()}
    if secret_name == "healthai-pseudonym-key":
        return {"pseudonym.key": os.urandom(32).hex().encode()}
    if secret_name == "healthai-tls":
        cert, key = _self_signed()
        return {"tls.crt": cert, "tls.key": key}
    if secret_name == "healthai-api-keys":
        _, entry = new_key("deploy-test", ["score"])
        return {"api_keys.json": json.dumps({"keys": [entry]}).encode()}
    raise AssertionError(f"no way to fill secret {secret_name}")


def _pod_environment(overlay: str, root: Path) -> tuple[dict[str, str], dict[str, Path]]:
    """The container's HEALTHAI_* env with every mount path mapped under ``root``, volumes filled."""
    objects = render(f"overlays/{overlay}")
    spec, container = pod_spec(objects), server_container(objects)
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts: dict[str, Path] = {}
    for mount in container["volumeMounts"]:
        local = root / mount["name"]
        local.mkdir(parents=True)
        mounts[mount["mountPath"]] = local
        volume = volumes[mount["name"]]
        if "secret" in volume:
            items = {i["key"]: i["path"] for i in volume["secret"].get("items", [])}
            for key, data in _secret_files(objects, volume["secret"]["secretName"]).items():
                if not items or key in items:
                    (local / items.get(key, key)).write_bytes(data)
        elif mount["mountPath"] == "/models" and DEFAULT_MODEL_REPOSITORY.is_dir():
            shutil.copytree(DEFAULT_MODEL_REPOSITORY, local, dirs_exist_ok=True)  # the seeded volume
    env = {}
    for name, value in settings_env(objects).items():
        for mount_path in sorted(mounts, key=len, reverse=True):  # the innermost mount holds it
            if value == mount_path or value.startswith(mount_path + "/"):
                value = str(mounts[mount_path]) + value[len(mount_path):]
                break
        env[name] = value
    if "://" in env["HEALTHAI_STORE_URI"]:  # object storage is not reachable here: a local folder
        env["HEALTHAI_STORE_URI"] = str(root / "object-store")
    ports = {"HEALTHAI_PORT", "HEALTHAI_HEALTH_PORT", "HEALTHAI_OBSERVABILITY__METRICS_PORT"}
    env.update({p: str(free_port()) for p in ports if p in env})
    env.update(HEALTHAI_HOST="127.0.0.1", HEALTHAI_OBSERVABILITY__METRICS_HOST="127.0.0.1",
               HOME=str(root / "tmp"))
    return env, mounts


@pytest.fixture
def start_pod(tmp_path: Path) -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Any] = []

    def start(overlay: str) -> tuple[subprocess.Popen[bytes], dict[str, str], dict[str, Path]]:
        env, mounts = _pod_environment(overlay, tmp_path / overlay)
        base = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHAI_")}
        log = (tmp_path / f"{overlay}.log").open("wb")
        logs.append(log)
        proc = subprocess.Popen([sys.executable, "-m", "healthai.cli", "serve"], env={**base, **env},
                                stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
        procs.append(proc)
        probe = f"127.0.0.1:{env.get('HEALTHAI_HEALTH_PORT') or env['HEALTHAI_PORT']}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while not check(probe, timeout_s=1.0)[0]:  # what the startup probe does
            if proc.poll() is not None or time.monotonic() > deadline:
                output = (tmp_path / f"{overlay}.log").read_text()
                pytest.fail(f"{overlay}: server did not become SERVING on {probe}:\n{output[-3000:]}")
            time.sleep(0.2)
        return proc, env, mounts

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for log in logs:
        log.close()


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=30)


def _metrics(env: dict[str, str]) -> str:
    url = f"http://127.0.0.1:{env['HEALTHAI_OBSERVABILITY__METRICS_PORT']}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        assert reply.status == 200
        return reply.read().decode()


def test_dev_pod_serves_health_and_metrics_and_stops_on_sigterm(start_pod: Any) -> None:
    proc, env, _ = start_pod("dev")
    assert check(f"127.0.0.1:{env['HEALTHAI_PORT']}")[0]
    assert "# TYPE" in _metrics(env)
    assert _stop(proc) == 0


def test_prod_pod_probes_in_plaintext_and_serves_only_tls(start_pod: Any) -> None:
    proc, env, mounts = start_pod("prod")
    main = f"127.0.0.1:{env['HEALTHAI_PORT']}"
    health_port = env["HEALTHAI_HEALTH_PORT"]
    assert check(f"127.0.0.1:{health_port}")[0], "kubelet's plaintext gRPC probe port"
    serving, seen = check(main, timeout_s=2.0)
    assert not serving and "UNAVAILABLE" in seen, f"plaintext accepted on the TLS port: {seen}"
    ca = (mounts["/etc/healthai/tls"] / "tls.crt").read_bytes()
    credentials = grpc.ssl_channel_credentials(root_certificates=ca)
    options = [("grpc.ssl_target_name_override", "localhost")]
    with grpc.secure_channel(main, credentials, options=options) as ch:
        reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert "# TYPE" in _metrics(env)
    assert _stop(proc) == 0
