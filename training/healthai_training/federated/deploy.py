"""Processes of a federation on Flower's deployment engine (flwr 1.42).

Coordinator: a ``flower-superlink`` process (Fleet, Control and runtime APIs on one HTTP(S) port in
flwr 1.42; it starts ``flower-superexec``, which starts the ServerApp), optionally with SuperNode
authentication (site public keys registered with ``flwr supernode register``), then ``flwr run`` of
the app folder written here, whose components point at the installed ``healthai_training`` (the FAB
carries only ``pyproject.toml``; runtime dependency installation is disabled on the SuperLink and is
off by default on SuperNodes, so nothing is downloaded when a run starts).
Site: one ``flower-supernode`` process whose ClientApp reads the site's table + spec.
Both run through ``launch`` (Flower's entry points with a longer task-start window, see there).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from healthai_training.errors import TrainingInputError

logger = logging.getLogger(__name__)
APP_NAME = "healthai-federated"
# A ClientApp/ServerApp process must start and pull its task within this window (Flower: 30 s); on
# a loaded host (many sites' apps importing torch at once) 30 s is missed, so we allow far more.
TASK_START_WINDOW_S = 180.0


class FederationError(TrainingInputError):
    """A federation process failed (SuperLink, SuperNode or the run)."""


@dataclass(frozen=True)
class Tls:
    """TLS for the SuperLink's port: server cert + key at the coordinator, the CA at every site."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None


def tool_env(flwr_home: Path) -> dict[str, str]:
    """Environment for Flower's tools: this interpreter's scripts first on PATH (SuperLink starts
    ``flower-superexec`` by name), an isolated FLWR_HOME, no runtime dependency installation."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["FLWR_HOME"] = str(flwr_home)
    env.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    return env


def tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise FederationError(f"{name} is not installed in this environment; install the federated "
                              "extra: pip install -r training/requirements-federated.txt", field="flwr")
    return str(path)


def flower(role: str, window: float) -> list[str]:
    """``flower-superlink`` / ``flower-supernode`` started through ``launch`` (this interpreter)."""
    tool("flower-superexec")  # both start it by name: the federated extra must be installed
    return [sys.executable, "-m", "healthai_training.federated.launch", role, repr(float(window))]


def write_site_key(path: Path) -> tuple[Path, Path]:
    """A site's SuperNode key pair: ``path`` (private, OpenSSH, mode 600) and ``path.pub`` (to give
    the coordinator). EC P-256: Flower 1.42 accepts only NIST curves for SuperNode authentication."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pub = path.with_name(path.name + ".pub")
    if path.exists() or pub.exists():
        raise FederationError(f"{path} or {pub} exists; not overwriting a site key", field="key")
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    path.touch(mode=0o600)
    path.write_bytes(private)
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                   serialization.PublicFormat.OpenSSH) + b"\n")
    return path, pub


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_app(folder: Path, run_config: Mapping[str, Any]) -> Path:
    """The Flower app folder (``pyproject.toml`` only): components in the installed package."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        "[build-system]", 'requires = ["hatchling"]', 'build-backend = "hatchling.build"', "",
        "[project]", f'name = "{APP_NAME}"', 'version = "1.0.0"',
        'description = "healthai federated risk model (components in the installed healthai_training)"',
        'license = "Apache-2.0"', "dependencies = []", "",
        "[tool.flwr.app]", 'publisher = "healthai"', "",
        "[tool.flwr.app.components]",
        'serverapp = "healthai_training.federated.server_app:app"',
        'clientapp = "healthai_training.federated.client_app:app"', "",
        "[tool.flwr.app.config]",
        *(f"{k} = {_toml(v)}" for k, v in run_config.items()),
    ]
    (folder / "pyproject.toml").write_text("\n".join(lines) + "\n")
    return folder


def write_connection(flwr_home: Path, address: str, tls: Tls | None) -> None:
    flwr_home.mkdir(parents=True, exist_ok=True)
    conn = [f'address = "{address}"']
    conn += [f'root-certificates = "{tls.ca}"'] if tls else ["insecure = true"]
    text = '[superlink]\ndefault = "coordinator"\n\n[superlink.coordinator]\n' + "\n".join(conn) + "\n"
    (flwr_home / "config.toml").write_text(text)


def wait_for_port(host: str, port: int, proc: subprocess.Popen[bytes], *, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise FederationError(f"process exited with {proc.returncode} before listening on {host}:{port}; "
                                  f"last log lines:\n{tail(log)}", field="superlink")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.2)
    raise FederationError(f"nothing listens on {host}:{port} after {timeout:.0f} s", field="superlink")


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop(proc: subprocess.Popen[bytes], *, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds: only the process we started."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def start_superlink(
    *, host: str, port: int, workdir: Path, tls: Tls | None, supernode_auth: bool,
    task_start_window: float = TASK_START_WINDOW_S,
) -> subprocess.Popen[bytes]:
    cmd = [*flower("superlink", task_start_window), "--host", host, "--port", str(port),
           "--disable-runtime-dependency-installation", "--database", str(workdir / "superlink.db")]
    if tls is None:
        cmd.append("--insecure")
    else:
        if tls.cert is None or tls.key is None:
            raise FederationError("TLS at the coordinator needs --tls-cert and --tls-key", field="tls")
        cmd += ["--ssl-ca-certfile", str(tls.ca), "--ssl-certfile", str(tls.cert),
                "--ssl-keyfile", str(tls.key)]
    if supernode_auth:
        cmd.append("--enable-supernode-auth")
    log = workdir / "superlink.log"
    (workdir / "superlink.cmd").write_text(" ".join(cmd) + "\n")  # what was started, for audits
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                env=tool_env(workdir / "flwr-home"))
    wait_for_port(host, port, proc, timeout=60, log=log)
    return proc


def register_sites(workdir: Path, public_keys: Sequence[Path]) -> None:
    for key in public_keys:
        run_cli(["supernode", "register", str(key), "coordinator"], workdir, timeout=60)


def run_cli(args: list[str], workdir: Path, *, timeout: float, log: Path | None = None) -> str:
    """``flwr <args>`` with the coordinator's FLWR_HOME; raises with its output when it fails."""
    try:
        done = subprocess.run([tool("flwr"), *args], cwd=workdir, env=tool_env(workdir / "flwr-home"),
                              capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise FederationError(f"flwr {args[0]} did not finish within {timeout:.0f} s", field="run") from exc
    out = done.stdout + done.stderr
    if log is not None:
        log.write_text(out)
    if done.returncode != 0:
        raise FederationError(f"flwr {' '.join(args[:2])} failed ({done.returncode}):\n{out[-3000:]}",
                              field="run")
    return out


def supernode_command(
    *, superlink: str, table: Path, spec: Path, site: str, seed: int, tls_ca: Path | None,
    auth_key: Path | None, runtime_port: int, extra_config: Mapping[str, Any] | None = None,
    task_start_window: float = TASK_START_WINDOW_S,
) -> list[str]:
    config = {"table": str(Path(table).resolve()), "spec": str(Path(spec).resolve()), "site": site,
              "seed": seed, **(extra_config or {})}
    node_config = " ".join(f"{k}={_toml(v)}" for k, v in config.items())
    if auth_key is not None and tls_ca is None:
        raise FederationError("SuperNode authentication needs TLS: give --tls-ca with --auth-key",
                              field="auth_key")
    cmd = [*flower("supernode", task_start_window), "--superlink", superlink, "--port", str(runtime_port),
           "--node-config", node_config, "--max-wait-time", "600"]
    cmd += ["--root-certificates", str(tls_ca)] if tls_ca else ["--insecure"]
    if auth_key is not None:
        cmd += ["--auth-supernode-private-key", str(auth_key)]
    return cmd
