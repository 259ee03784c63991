"""TLS and mutual TLS server credentials from PEM files named in ``SecuritySettings``.

Files are checked up front (readable, PEM, key matches certificate) so a misconfiguration fails at
startup with the setting's name, not as an opaque handshake error on the first call.

Certificates rotate without a restart: gRPC asks for the certificate configuration before each new
connection's handshake; the files are re-read then, and a changed, valid set is used from that
connection on (existing connections keep theirs). A changed but invalid set (say, the new
certificate written before its key) is logged and the last good set keeps serving.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from healthai.security.settings import SecuritySettings

log = logging.getLogger(__name__)


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{setting}={str(path)!r}: {exc.strerror}") from exc


def _check_pair(cert_pem: bytes, key_pem: bytes, settings: SecuritySettings) -> None:
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise ValueError(f"tls_cert_file={str(settings.tls_cert_file)!r} is not a PEM certificate") from exc
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"tls_key_file={str(settings.tls_key_file)!r} is not an unencrypted PEM private key"
        ) from exc
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if cert.public_key().public_bytes(*fmt) != key.public_key().public_bytes(*fmt):
        raise ValueError(
            f"tls_key_file={str(settings.tls_key_file)!r} does not match "
            f"tls_cert_file={str(settings.tls_cert_file)!r}"
        )
    if cert.not_valid_after_utc <= datetime.now(UTC):
        log.warning("server certificate %s expired on %s", settings.tls_cert_file, cert.not_valid_after_utc)


class CertificateFiles:
    """The server's certificate, key and client CA as read from disk, validated."""

    def __init__(self, settings: SecuritySettings) -> None:
        if settings.tls_cert_file is None or settings.tls_key_file is None:
            raise ValueError("TLS needs tls_cert_file and tls_key_file")
        self.settings = settings
        self._contents = self._read_all()
        self.configuration = self._configuration(self._contents)

    def _read_all(self) -> tuple[bytes, bytes, bytes | None]:
        s = self.settings
        assert s.tls_cert_file is not None and s.tls_key_file is not None
        client_ca = _read(s.tls_client_ca_file, "tls_client_ca_file") if s.tls_client_ca_file else None
        return _read(s.tls_cert_file, "tls_cert_file"), _read(s.tls_key_file, "tls_key_file"), client_ca

    def _configuration(
        self, contents: tuple[bytes, bytes, bytes | None]
    ) -> grpc.ServerCertificateConfiguration:
        cert_pem, key_pem, client_ca = contents
        _check_pair(cert_pem, key_pem, self.settings)
        if client_ca is not None:
            try:
                x509.load_pem_x509_certificates(client_ca)
            except ValueError as exc:
                raise ValueError(
                    f"tls_client_ca_file={str(self.settings.tls_client_ca_file)!r} holds no PEM certificate"
                ) from exc
        return grpc.ssl_server_certificate_configuration([(key_pem, cert_pem)], root_certificates=client_ca)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's per-connection callback: a new configuration when the files changed, else None.

        Never raises (an exception here would fail the handshake); problems are logged.
        """
        try:
            contents = self._read_all()
            if contents == self._contents:
                return None
            self._contents = contents
            self.configuration = self._configuration(contents)
        except Exception as exc:
            log.error("TLS files changed but are not usable (%s); keeping the previous certificate", exc)
            return None
        log.info("TLS certificate reloaded from %s", self.settings.tls_cert_file)
        return self.configuration


def server_credentials(settings: SecuritySettings) -> grpc.ServerCredentials | None:
    """TLS (or mTLS when ``require_client_cert``) credentials; None when TLS is off (plaintext)."""
    if not settings.tls_enabled:
        return None
    files = CertificateFiles(settings)
    return grpc.dynamic_ssl_server_credentials(
        files.configuration,
        files.fetch,
        require_client_authentication=settings.require_client_cert,
    )


def add_port(server: grpc.aio.Server, address: str, settings: SecuritySettings) -> int:
    """Bind ``address`` with TLS when configured, plaintext otherwise; returns the bound port."""
    credentials = server_credentials(settings)
    if credentials is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, credentials)
