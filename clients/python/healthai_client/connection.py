"""How the SDK (and the load harness) connects: addresses, TLS / mutual TLS, API key, channel options.

One channel per address. A DNS name that resolves to several hosts (a headless Kubernetes Service)
is balanced by gRPC itself (``round_robin`` policy); several addresses are rotated by the SDK.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

API_KEY_HEADER = "authorization"  # "Bearer <key>"; healthai.security also accepts "x-api-key"
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def _read(path: str | Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"{what} {str(path)!r}: {e.strerror}") from e


@dataclass(frozen=True)
class ConnectionConfig:
    """Where and how to connect. ``tls`` is implied by any certificate file."""

    addresses: tuple[str, ...]
    tls: bool = False
    root_cert: str | Path | None = None  # PEM CA bundle; None = the system roots
    client_cert: str | Path | None = None  # PEM, for mutual TLS (with client_key)
    client_key: str | Path | None = None
    server_name: str | None = None  # TLS name override (when dialing an IP the cert does not name)
    api_key: str | None = None
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    extra_options: tuple[tuple[str, int | str], ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.addresses:
            raise ValueError("addresses: at least one host:port is required")
        for a in self.addresses:
            check_address(a)
        if self.api_key and any(not " " < ch <= "~" for ch in self.api_key):
            # gRPC metadata values are printable ASCII: a key read with its newline fails every call
            raise ValueError("api_key must be printable ASCII without spaces or a newline (strip what you "
                             "read from a file)")
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key must be given together (mutual TLS)")

    @property
    def uses_tls(self) -> bool:
        return self.tls or any(p is not None for p in (self.root_cert, self.client_cert))

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.root_cert, "root_cert"),
            private_key=_read(self.client_key, "client_key"),
            certificate_chain=_read(self.client_cert, "client_cert"),
        )

    def options(self) -> list[tuple[str, int | str]]:
        opts: list[tuple[str, int | str]] = [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.lb_policy_name", "round_robin"),
            # Fail fast on a dead address (the SDK retries elsewhere) instead of backing off for ~1 s.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
            ("grpc.enable_retries", 0),  # retries are the SDK's (UNAVAILABLE only, with jitter)
        ]
        if self.server_name:
            opts.append(("grpc.ssl_target_name_override", self.server_name))
        return [*opts, *self.extra_options]

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return ((API_KEY_HEADER, f"Bearer {self.api_key}"),) if self.api_key else ()

    def channel(self, address: str) -> grpc.Channel:
        if self.uses_tls:
            return grpc.secure_channel(address, self.credentials(), options=self.options())
        return grpc.insecure_channel(address, options=self.options())

    def aio_channel(self, address: str) -> grpc.aio.Channel:
        if self.uses_tls:
            return grpc.aio.secure_channel(address, self.credentials(), options=self.options())
        return grpc.aio.insecure_channel(address, options=self.options())


_URL_SCHEMES = ("http", "https", "grpc", "grpcs")  # not gRPC targets: a common slip
_TARGET_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:", "xds:")


def check_address(address: str) -> None:
    """``host:port`` (``[v6]:port``) with a port 1-65535, or a gRPC target (``dns:///h:p``, ``unix:...``);
    else a ValueError naming the address (a malformed one would only fail later, as UNAVAILABLE)."""
    scheme = address.split("://", 1)[0].lower() if "://" in address else ""
    if scheme in _URL_SCHEMES:
        raise ValueError(f"address {address!r}: a gRPC address has no {scheme}:// prefix; give host:port "
                         "(and tls=True / --tls for TLS)")
    if address.lower().startswith(_TARGET_SCHEMES) or scheme:
        return
    host, _, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535 or any(c in host for c in "/ "):
        raise ValueError(f"address {address!r} must be host:port with a port 1-65535 (or a gRPC target "
                         "such as dns:///host:port)")


def as_addresses(address: str | Sequence[str] | None, addresses: Sequence[str] | None) -> tuple[str, ...]:
    """``Client("h:1")``, ``Client(addresses=[...])`` or ``Client("h:1,h:2")`` -> a tuple."""
    if address is not None and addresses is not None:
        raise ValueError("give address or addresses, not both")
    raw: Sequence[str]
    if addresses is not None:
        raw = addresses
    elif isinstance(address, str):
        raw = address.split(",")
    elif address is not None:
        raw = address
    else:
        raise ValueError("address: required (host:port)")
    return tuple(a.strip() for a in raw if a.strip())


def await_connectivity_pollers(channels: Sequence[grpc.Channel], timeout_s: float = 1.0) -> None:
    """Waits (bounded) until each channel's connectivity-polling thread has seen its last
    unsubscribe. grpcio's poller wakes every 0.2 s; closing a channel under it raises
    "Cannot monitor channel state: Channel closed!" in that thread."""
    deadline = time.monotonic() + timeout_s
    for ch in channels:
        state = getattr(ch, "_connectivity_state", None)  # grpcio internals; absent: no wait
        while getattr(state, "polling", False) and time.monotonic() < deadline:
            time.sleep(0.01)
