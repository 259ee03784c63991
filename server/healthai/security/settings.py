"""Security settings (TLS files, API keys, open services) — nested as ``Settings.security``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, Field, model_validator

Scope = Literal["ingest", "score", "forecast", "inference", "admin", "scenario"]
SCOPES: tuple[Scope, ...] = ("ingest", "score", "forecast", "inference", "admin", "scenario")

# Services callable without credentials unless ``open_services`` says otherwise: load balancers and
# grpcurl need health and reflection before they hold a key.
DEFAULT_OPEN_SERVICES: tuple[str, ...] = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)

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

    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    require_client_cert: bool = False
    api_keys_file: Path | None = None
    open_services: tuple[str, ...] = DEFAULT_OPEN_SERVICES
    method_scopes: dict[str, Scope] = Field(default_factory=lambda: dict(DEFAULT_METHOD_SCOPES))

    @model_validator(mode="after")
    def _check_consistent(self) -> Self:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file must be set together")
        if self.require_client_cert and self.tls_client_ca_file is None:
            raise ValueError("require_client_cert=true needs tls_client_ca_file (the CA of client certs)")
        if self.require_client_cert and self.tls_cert_file is None:
            raise ValueError("require_client_cert=true needs TLS (tls_cert_file and tls_key_file)")
        for key in self.method_scopes:
            service, _, method = key.partition("/")
            if not service or "/" in method or key.startswith("/"):
                raise ValueError(f"method_scopes key {key!r} must be 'pkg.Service' or 'pkg.Service/Method'")
        return self

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert_file is not None

    @property
    def auth_enabled(self) -> bool:
        return self.api_keys_file is not None
