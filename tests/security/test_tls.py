"""TLS and mutual TLS over a real grpc.aio server with certificates made in the test."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from healthai.security import SecuritySettings, server_credentials

from .certs import CertificateAuthority, Pem
from .rpc_testkit import health_check, serving

SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | Pem | CertificateAuthority]:
    folder = tmp_path_factory.mktemp("pki")
    ca, other_ca = CertificateAuthority("healthai test CA"), CertificateAuthority("someone else's CA")
    (folder / "ca.crt").write_bytes(ca.cert_pem)
    server_cert, server_key = ca.issue("healthai server", server=True).write(folder, "server")
    return {
        "ca": ca,
        "ca_file": folder / "ca.crt",
        "server_cert": server_cert,
        "server_key": server_key,
        "client": ca.issue("ehr-north", server=False),
        "foreign_client": other_ca.issue("ehr-north", server=False),
        "other_ca": other_ca,
    }


def _tls(pki: dict, *, mutual: bool) -> SecuritySettings:
    return SecuritySettings(
        tls_cert_file=pki["server_cert"],
        tls_key_file=pki["server_key"],
        tls_client_ca_file=pki["ca_file"] if mutual else None,
        require_client_cert=mutual,
    )


def _client_creds(root: bytes, client: Pem | None = None) -> grpc.ChannelCredentials:
    if client is None:
        return grpc.ssl_channel_credentials(root_certificates=root)
    return grpc.ssl_channel_credentials(
        root_certificates=root, private_key=client.key, certificate_chain=client.cert
    )


async def _check(address: str, credentials: grpc.ChannelCredentials | None) -> int:
    if credentials is None:
        async with grpc.aio.insecure_channel(address) as channel:
            return await health_check(channel)
    async with grpc.aio.secure_channel(address, credentials) as channel:
        return await health_check(channel)


def _run(settings: SecuritySettings, port: int, credentials: grpc.ChannelCredentials | None) -> int:
    async def scenario() -> int:
        async with serving(settings, port) as address:
            return await _check(address, credentials)

    return asyncio.run(scenario())


def _refused(settings: SecuritySettings, port: int, credentials: grpc.ChannelCredentials | None) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        _run(settings, port, credentials)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_tls_accepts_client_trusting_the_ca(pki: dict, port: int) -> None:
    assert _run(_tls(pki, mutual=False), port, _client_creds(pki["ca"].cert_pem)) == SERVING


def test_tls_refuses_plaintext(pki: dict, port: int) -> None:
    _refused(_tls(pki, mutual=False), port, None)


def test_tls_client_refuses_server_from_untrusted_ca(pki: dict, port: int) -> None:
    _refused(_tls(pki, mutual=False), port, _client_creds(pki["other_ca"].cert_pem))


def test_mtls_accepts_client_cert_from_the_ca(pki: dict, port: int) -> None:
    creds = _client_creds(pki["ca"].cert_pem, pki["client"])
    assert _run(_tls(pki, mutual=True), port, creds) == SERVING


def test_mtls_refuses_client_without_cert(pki: dict, port: int) -> None:
    _refused(_tls(pki, mutual=True), port, _client_creds(pki["ca"].cert_pem))


def test_mtls_refuses_client_cert_from_another_ca(pki: dict, port: int) -> None:
    _refused(_tls(pki, mutual=True), port, _client_creds(pki["ca"].cert_pem, pki["foreign_client"]))


def test_mtls_refuses_plaintext(pki: dict, port: int) -> None:
    _refused(_tls(pki, mutual=True), port, None)


def test_plaintext_when_tls_off(port: int) -> None:
    assert server_credentials(SecuritySettings()) is None
    assert _run(SecuritySettings(), port, None) == SERVING


def test_key_not_matching_cert_is_refused_at_startup(pki: dict, tmp_path: Path) -> None:
    _, other_key = pki["ca"].issue("other", server=True).write(tmp_path, "other")
    settings = SecuritySettings(tls_cert_file=pki["server_cert"], tls_key_file=other_key)
    with pytest.raises(ValueError, match=r"tls_key_file=.*does not match tls_cert_file"):
        server_credentials(settings)


def test_missing_files_name_the_setting(pki: dict, tmp_path: Path) -> None:
    missing = SecuritySettings(tls_cert_file=tmp_path / "nope.crt", tls_key_file=pki["server_key"])
    with pytest.raises(ValueError, match=r"tls_cert_file=.*nope\.crt.*No such file"):
        server_credentials(missing)
    (tmp_path / "junk.pem").write_text("not a certificate")
    junk_ca = _tls(pki, mutual=True).model_copy(update={"tls_client_ca_file": tmp_path / "junk.pem"})
    with pytest.raises(ValueError, match=r"tls_client_ca_file=.*holds no PEM certificate"):
        server_credentials(junk_ca)


def test_settings_reject_inconsistent_tls(pki: dict) -> None:
    with pytest.raises(ValueError, match="must be set together"):
        SecuritySettings(tls_cert_file=pki["server_cert"])
    with pytest.raises(ValueError, match="needs tls_client_ca_file"):
        SecuritySettings(
            tls_cert_file=pki["server_cert"], tls_key_file=pki["server_key"], require_client_cert=True
        )


def test_mtls_on_the_real_assembled_server(pki: dict, port: int) -> None:
    """``healthai.app.server.build_server`` bound through ``security.add_port`` (the wiring surface)."""
    from healthai import security
    from healthai.app.server import build_server
    from healthai.app.settings import Settings

    sec = _tls(pki, mutual=True)

    async def scenario() -> list[int | grpc.StatusCode]:
        running = build_server(
            Settings(port=port, dev_mode=True),
            [],
            interceptors=security.interceptors(sec),
            add_port=lambda server, address: security.add_port(server, address, sec),
        )
        await running.start()
        results: list[int | grpc.StatusCode] = []
        try:
            address = f"127.0.0.1:{running.port}"
            results.append(await _check(address, _client_creds(pki["ca"].cert_pem, pki["client"])))
            for creds in (_client_creds(pki["ca"].cert_pem), None):
                try:
                    results.append(await _check(address, creds))
                except grpc.aio.AioRpcError as exc:
                    results.append(exc.code())
        finally:
            await running.stop(grace=0.1)
        return results

    assert asyncio.run(scenario()) == [SERVING, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE]


def test_certificate_rotates_without_restart(pki: dict, tmp_path: Path, port: int) -> None:
    """New connections get the rewritten certificate; a broken rewrite keeps the last good one."""
    cert_file, key_file = pki["ca"].issue("healthai server", server=True).write(tmp_path, "server")
    settings = SecuritySettings(tls_cert_file=cert_file, tls_key_file=key_file)
    new_ca = CertificateAuthority("next year's CA")

    async def scenario() -> list[int | grpc.StatusCode]:
        async def check(ca: CertificateAuthority) -> int | grpc.StatusCode:
            try:
                return await _check(address, _client_creds(ca.cert_pem))
            except grpc.aio.AioRpcError as exc:
                return exc.code()

        async with serving(settings, port) as address:
            seen = [await check(pki["ca"])]
            new_ca.issue("healthai server", server=True).write(tmp_path, "server")
            seen += [await check(new_ca), await check(pki["ca"])]
            key_file.write_text("-----BEGIN PRIVATE KEY-----\ntruncated")
            seen.append(await check(new_ca))
            return seen

    unavailable = grpc.StatusCode.UNAVAILABLE
    assert asyncio.run(scenario()) == [SERVING, SERVING, unavailable, SERVING]
