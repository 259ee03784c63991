"""Security settings (TLS files, API keys, open services) — nested as ``Settings.security``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

Scope = Literal["ingest", "score", "forecast", "inference", "admin", "scenario"]
SCOPES: tuple[Scope, ...] = ("ingest", "score", "forecast", "inference", "admin", "scenario")

# Services ("pkg.Service") and methods ("pkg.Service/Method") callable without credentials unless
# ``open_services`` says otherwise: load balancers, liveness probes and grpcurl need health, KServe's
# liveness/readiness and reflection before they hold a key (none of them returns data).
DEFAULT_OPEN_SERVICES: tuple[str, ...] = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
    "inference.GRPCInferenceService/ServerLive",
    "inference.GRPCInferenceService/ServerReady",
    "inference.GRPCInferenceService/ModelReady",
)

# Each TLS setting with its ``healthai serve`` flag, so refusals name both.
_FLAG = {"tls_cert_file": "tls_cert_file (--tls-cert)", "tls_key_file": "tls_key_file (--tls-key)",
         "tls_client_ca_file": "tls_client_ca_file (--tls-client-ca)",
         "require_client_cert": "require_client_cert (--require-client-cert)"}

# Key: a service ("pkg.Service") or one method ("pkg.Service/Method"); the method entry wins.
# Methods of services not listed here (and not open) need the ``admin`` scope: deny by default.
DEFAULT_METHOD_SCOPES: dict[str, Scope] = {
    "healthai.v1.Ingest": "ingest",
    "healthai.v1.Risk": "score",
    "healthai.v1.Forecast": "forecast",
    "healthai.v1.Scenario": "scenario",
    "inference.GRPCInferenceService": "inference",
    "inference.GRPCInferenceService/RepositoryModelLoad": "admin",
    "inference.GRPCInferenceService/RepositoryModelUnload": "admin",
}


class SecuritySettings(BaseModel):
    """Transport security and per-client authorization.

    TLS is on when ``tls_cert_file`` and ``tls_key_file`` are set; mutual TLS when
    ``require_client_cert`` is also set (client certificates must chain to ``tls_client_ca_file``).
    Authorization is on when ``api_keys_file`` is set (see ``healthai.security.keys`` for the format).
    """

    model_config = ConfigDict(extra="forbid")  # a misspelt key is refused, never ignored

    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    require_client_cert: bool = False
    api_keys_file: Path | None = None
    open_services: tuple[str, ...] = DEFAULT_OPEN_SERVICES
    method_scopes: dict[str, Scope] = Field(default_factory=lambda: dict(DEFAULT_METHOD_SCOPES))

    @model_validator(mode="after")
    def _check_consistent(self) -> Self:
        """Refuses every TLS combination that would not serve what it asks for (never a silent
        fall-back to plaintext): a key without its certificate, a client CA or required client
        certificates without TLS, required client certificates without the CA to check them."""
        cert, key = _FLAG["tls_cert_file"], _FLAG["tls_key_file"]
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            given, missing = (cert, key) if self.tls_key_file is None else (key, cert)
            raise ValueError(f"{cert} and {key} must be set together: {given} is set, {missing} is not")
        if self.tls_cert_file is None:
            for name in ("tls_client_ca_file", "require_client_cert"):
                if getattr(self, name):
                    raise ValueError(f"{_FLAG[name]} needs TLS: set {cert} and {key} too "
                                     "(without them the server would serve plaintext)")
        if self.require_client_cert and self.tls_client_ca_file is None:
            raise ValueError(f"{_FLAG['require_client_cert']} needs tls_client_ca_file (--tls-client-ca), "
                             "the CA that client certificates must chain to")
        if self.tls_client_ca_file is not None and self.tls_cert_file is not None \
                and not self.require_client_cert:
            raise ValueError(f"{_FLAG['tls_client_ca_file']} needs require_client_cert "
                             "(--require-client-cert): gRPC's server cannot ask for a client certificate "
                             "without requiring one, so the CA alone would verify nothing")
        for key_name in self.method_scopes:
            _check_method_key(key_name, "method_scopes")
        for name in self.open_services:
            _check_method_key(name, "open_services")
        return self

    @property
    def tls_mode(self) -> str:
        """'plaintext', 'TLS' or 'mTLS'."""
        if self.tls_cert_file is None:
            return "plaintext"
        return "mTLS" if self.require_client_cert else "TLS"

    @property
    def auth_mode(self) -> str:
        """'none' or 'API keys', with what is open without a key."""
        if self.api_keys_file is None:
            return "none (every call allowed)"
        return f"API keys; open without a key: {', '.join(self.open_services) or 'nothing'}"

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert_file is not None

    @property
    def auth_enabled(self) -> bool:
        return self.api_keys_file is not None


def _check_method_key(key: str, setting: str) -> None:
    service, _, method = key.partition("/")
    if not service or "/" in method or key.startswith("/"):
        raise ValueError(f"{setting} entry {key!r} must be 'pkg.Service' or 'pkg.Service/Method'")
