"""A throw-away CA with a server certificate (for 127.0.0.1/localhost) and a client certificate."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

Secure = tuple[str, dict[str, Path], dict[str, str]]  # a TLS server: address, PKI files, API key by scope


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, issuer_key: ec.EllipticCurvePrivateKey,
          *, ca: bool, san: x509.SubjectAlternativeName | None = None) -> x509.Certificate:
    now = datetime.now(UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(folder: Path) -> dict[str, Path]:
    """Writes ca.crt, server.crt/.key, client.crt/.key; returns their paths by stem."""
    ca_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _cert("healthai test CA", ca_key, "healthai test CA", ca_key, ca=True)
    san = x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                       x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    server = _cert("localhost", server_key, "healthai test CA", ca_key, ca=False, san=san)
    client = _cert("ehr-test", client_key, "healthai test CA", ca_key, ca=False)
    pem = serialization.Encoding.PEM
    files = {"ca.crt": ca.public_bytes(pem),
             "server.crt": server.public_bytes(pem), "server.key": _pem_key(server_key),
             "client.crt": client.public_bytes(pem), "client.key": _pem_key(client_key)}
    out = {}
    for name, data in files.items():
        (folder / name).write_bytes(data)
        out[name] = folder / name
    return out
