"""Processes of a federation on Flower's deployment engine (flwr 1.42).

Coordinator: a ``flower-superlink`` process (Fleet, Control and runtime APIs on one HTTP(S) port in
flwr 1.42; it starts ``flower-superexec``, which starts the ServerApp), optionally with SuperNode
authentication (site public keys registered with ``flwr supernode register``), then ``flwr run`` of
the app folder written here, whose components point at the installed ``healthai_training`` (the FAB
carries only ``pyproject.toml``; runtime dependency installation is disabled on the SuperLink and is
off by default on SuperNodes, so nothing is downloaded when a run starts).
Site: one ``flower-supernode`` process whose ClientApp reads the site's table + spec.
Both run through ``launch`` (Flower's entry points with a longer task-start window, see there).

Site keys are registered before any site can connect: ``register_sites`` starts a private SuperLink
on a free port with the run's database, registers every key there and stops it; the SuperLink sites
dial then starts on that database (a site that connected while keys were still being registered
was refused for good). ``stop`` ends a SuperLink with every process under it (its SuperExec runs in
a session of its own, the ServerApp under that).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from healthai_training.errors import TrainingInputError

logger = logging.getLogger(__name__)
APP_NAME = "healthai-federated"
# A ClientApp/ServerApp process must start and pull its task within this window (Flower: 30 s); on
# a loaded host (many sites' apps importing torch at once) 30 s is missed, so we allow far more.
TASK_START_WINDOW_S = 180.0
REGISTERED = "registered-sites.json"  # {node id: key name} in the run's ``out``, read by the ServerApp


class FederationError(TrainingInputError):
    """A federation process failed (SuperLink, SuperNode or the run)."""


class Stopped(BaseException):
    """SIGTERM / SIGINT reached the coordinator: unwinds so every child process is stopped."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGINT raise ``Stopped`` in the main thread while inside (then restored)."""

    def handler(signum: int, _frame: Any) -> None:
        raise Stopped(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


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
    conn = [f'address = "{address}"']  # flwr runs with cwd=workdir: no relative path
    conn += [f'root-certificates = {_toml(str(Path(tls.ca).resolve()))}'] if tls else ["insecure = true"]
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


def descendants(pid: int) -> list[int]:
    """Every process under ``pid`` (Linux ``/proc``; empty elsewhere), children first."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        out += children
        todo += children
    return out


def _signal(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        with suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def stop(proc: subprocess.Popen[bytes], *, grace: float = 10.0) -> None:
    """SIGTERM ``proc`` and every process under it, then SIGKILL what is left after ``grace`` seconds.
    The tree is taken before signalling: once the SuperLink exits, its SuperExec (a session of its
    own) and the ServerApp under that would no longer be found from it."""
    tree = descendants(proc.pid) if proc.poll() is None else []
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    _signal(tree, signal.SIGTERM)
    deadline = time.monotonic() + grace
    try:
        proc.wait(max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    while tree and time.monotonic() < deadline:
        tree = [p for p in tree if Path(f"/proc/{p}").exists() and not _zombie(p)]
        time.sleep(0.1)
    _signal(tree, signal.SIGKILL)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def start_superlink(
    *, host: str, port: int, workdir: Path, tls: Tls | None, supernode_auth: bool,
    task_start_window: float = TASK_START_WINDOW_S, log_name: str = "superlink.log",
) -> subprocess.Popen[bytes]:
    cmd = [*flower("superlink", task_start_window), "--host", host, "--port", str(port),
           "--disable-runtime-dependency-installation", "--database", str(workdir / "superlink.db")]
    if tls is None:
        cmd.append("--insecure")
    else:
        if tls.cert is None or tls.key is None:
            raise FederationError("TLS at the coordinator needs --tls-cert and --tls-key", field="tls")
        cmd += ["--ssl-ca-certfile", str(Path(tls.ca).resolve()),
                "--ssl-certfile", str(Path(tls.cert).resolve()),
                "--ssl-keyfile", str(Path(tls.key).resolve())]
    if supernode_auth:
        cmd.append("--enable-supernode-auth")
    log = workdir / log_name
    (workdir / log_name.replace(".log", ".cmd")).write_text(" ".join(cmd) + "\n")  # what was started
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                env=tool_env(workdir / "flwr-home"))
    try:
        wait_for_port(host, port, proc, timeout=60, log=log)
    except BaseException:
        stop(proc)
        raise
    return proc


def site_key_name(key: Path) -> str:
    """``keys/north.key.pub`` -> ``north`` (the name a site key is registered under)."""
    name = Path(key).name
    for suffix in (".pub", ".key"):
        name = name.removesuffix(suffix)
    return name or Path(key).name


def check_site_keys(public_keys: Sequence[Path]) -> list[Path]:
    """The keys as absolute paths (flwr runs with cwd=workdir); refuses a missing one before any start."""
    keys = [Path(k).expanduser().resolve() for k in public_keys]
    missing = [str(k) for k in keys if not k.is_file()]
    if missing:
        raise FederationError(f"--site-key: no such file {', '.join(missing)}", field="site_key")
    return keys


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def register_sites(
    workdir: Path, public_keys: Sequence[Path], *, host: str, tls: Tls | None,
    task_start_window: float = TASK_START_WINDOW_S,
) -> dict[int, str]:
    """Register every site key in the run's database before the SuperLink sites dial starts (through a
    private SuperLink on a free port, stopped again); returns {node id: key name}."""
    keys = check_site_keys(public_keys)
    port = free_port(host)
    home = workdir / "flwr-home-register"
    write_connection(home, f"{host}:{port}", tls)
    link = start_superlink(host=host, port=port, workdir=workdir, tls=tls, supernode_auth=True,
                           task_start_window=task_start_window, log_name="superlink-register.log")
    nodes: dict[int, str] = {}
    try:
        for key in keys:
            name = site_key_name(key)
            out = run_cli(["supernode", "register", str(key), "coordinator", "--name", name,
                           "--format", "json"], workdir, timeout=60, flwr_home=home)
            try:
                node = int(json.loads(out[out.index("{"):])["node-id"])
            except (ValueError, KeyError) as exc:
                raise FederationError(f"flwr supernode register {key}: no node id in its output:\n"
                                      f"{out[-500:]}", field="site_key") from exc
            nodes[node] = name
            logger.info("registered site key %s as node %d (%s)", key, node, name)
    finally:
        stop(link)
    return nodes


def run_cli(args: list[str], workdir: Path, *, timeout: float, log: Path | None = None,
            flwr_home: Path | None = None) -> str:
    """``flwr <args>`` with the coordinator's FLWR_HOME; raises with its output when it fails."""
    try:
        env = tool_env(flwr_home or workdir / "flwr-home")
        done = subprocess.run([tool("flwr"), *args], cwd=workdir, env=env,
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
    task_start_window: float = TASK_START_WINDOW_S, max_wait_time: float = 600.0,
) -> list[str]:
    config = {"table": str(Path(table).resolve()), "spec": str(Path(spec).resolve()), "site": site,
              "seed": seed, **(extra_config or {})}
    node_config = " ".join(f"{k}={_toml(v)}" for k, v in config.items())
    if auth_key is not None and tls_ca is None:
        raise FederationError("SuperNode authentication needs TLS: give --tls-ca with --auth-key",
                              field="auth_key")
    cmd = [*flower("supernode", task_start_window), "--superlink", superlink, "--port", str(runtime_port),
           "--node-config", node_config, "--max-wait-time", repr(float(max_wait_time))]
    cmd += ["--root-certificates", str(Path(tls_ca).resolve())] if tls_ca else ["--insecure"]
    if auth_key is not None:
        cmd += ["--auth-supernode-private-key", str(Path(auth_key).resolve())]
    return cmd
