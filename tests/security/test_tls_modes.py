"""Inconsistent TLS flags refuse to start (naming the flags); the start-up line names the TLS and
auth modes; the auth interceptor's statuses come from the domain errors' codes."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

import grpc
import pytest

from healthai import errors
from healthai.app import cli
from healthai.app.main import run
from healthai.app.settings import Settings, load_settings
from healthai.security import SecuritySettings, new_key

from .certs import CertificateAuthority
from .rpc_testkit import call, serving
from .test_auth import write_keys


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tls")
    ca = CertificateAuthority("healthai test CA")
    (folder / "ca.crt").write_bytes(ca.cert_pem)
    cert, key = ca.issue("healthai server", server=True).write(folder, "server")
    _, entry = new_key("ops", ["admin"])
    write_keys(folder / "keys.json", [entry])
    return {"ca": folder / "ca.crt", "cert": cert, "key": key, "keys": folder / "keys.json"}


def serve_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["serve", "--dev", "--port", "0", *argv])


# flags given -> the flags the refusal must name
REFUSED = [
    (["--tls-client-ca", "ca"], ["--tls-client-ca", "--tls-cert", "--tls-key", "plaintext"]),
    (["--tls-key", "key"], ["--tls-cert", "(--tls-key) is set, tls_cert_file (--tls-cert) is not"]),
    (["--tls-cert", "cert"], ["--tls-key", "(--tls-cert) is set, tls_key_file (--tls-key) is not"]),
    (["--require-client-cert"], ["--require-client-cert", "--tls-cert", "--tls-key"]),
    (["--tls-client-ca", "ca", "--require-client-cert"], ["--tls-cert", "--tls-key"]),
    (["--tls-cert", "cert", "--tls-key", "key", "--require-client-cert"],
     ["--require-client-cert", "needs tls_client_ca_file (--tls-client-ca)"]),
    (["--tls-key", "key", "--tls-client-ca", "ca", "--require-client-cert"], ["--tls-cert", "--tls-key"]),
    # a client CA that would verify nothing: gRPC asks for no certificate unless it requires one
    (["--tls-cert", "cert", "--tls-key", "key", "--tls-client-ca", "ca"],
     ["--tls-client-ca", "needs require_client_cert (--require-client-cert)", "would verify nothing"]),
]


@pytest.mark.parametrize(("flags", "named"), REFUSED)
def test_inconsistent_tls_flags_refuse_to_start(files: dict[str, Path], flags: list[str], named: list[str],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    argv = [str(files[f]) if f in files else f for f in flags]
    args = serve_args(argv)
    assert args.func(args) == 2  # refused before anything binds or starts
    err = capsys.readouterr().err
    assert err.startswith("healthai serve: invalid settings:\n  security: ")
    for text in named:
        assert text in err
    assert "input_value" not in err  # no echo of the settings given


def test_consistent_tls_flags_are_accepted(files: dict[str, Path]) -> None:
    combos = [[], ["--tls-cert", "cert", "--tls-key", "key"],
              ["--tls-cert", "cert", "--tls-key", "key", "--tls-client-ca", "ca", "--require-client-cert"]]
    modes = []
    for flags in combos:
        args = serve_args([str(files[f]) if f in files else f for f in flags])
        modes.append(load_settings(environ={}, flags=cli._flags(args)).security.tls_mode)
    assert modes == ["plaintext", "TLS", "mTLS"]


@pytest.mark.parametrize(("security", "expected"), [
    ({}, "transport: plaintext; auth: none (every call allowed)"),
    ({"tls": True, "keys": True},
     "transport: TLS; auth: API keys; open without a key: grpc.health.v1.Health, "
     "grpc.reflection.v1alpha.ServerReflection, grpc.reflection.v1.ServerReflection, "
     "inference.GRPCInferenceService/ServerLive, inference.GRPCInferenceService/ServerReady, "
     "inference.GRPCInferenceService/ModelReady"),
    ({"tls": True, "mtls": True, "keys": True, "open_services": ()},
     "transport: mTLS; auth: API keys; open without a key: nothing"),
])
def test_startup_line_names_tls_and_auth_mode(files: dict[str, Path], tmp_path: Path, security: dict,
                                              expected: str, caplog: pytest.LogCaptureFixture) -> None:
    sec: dict[str, object] = {}
    if security.get("tls"):
        sec |= {"tls_cert_file": files["cert"], "tls_key_file": files["key"]}
    if security.get("mtls"):
        sec |= {"tls_client_ca_file": files["ca"], "require_client_cert": True}
    if security.get("keys"):
        sec["api_keys_file"] = files["keys"]
    if "open_services" in security:
        sec["open_services"] = security["open_services"]
    settings = Settings(port=0, dev_mode=True, store_uri=str(tmp_path / "store"),
                        serving={"enabled": False}, security=sec)
    port_file = tmp_path / "port"

    async def serve_once() -> int:
        stop = asyncio.Event()
        task = asyncio.create_task(run(settings, port_file=port_file, stop_event=stop))
        while not port_file.exists() and not task.done():
            await asyncio.sleep(0.01)
        stop.set()
        return await task

    with caplog.at_level(logging.INFO, logger="healthai.app.server"):
        assert asyncio.run(serve_once()) == 0
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("serving ")]
    assert len(lines) == 1 and lines[0].endswith(expected), lines


def test_auth_statuses_come_from_the_domain_errors(files: dict[str, Path], port: int,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """One place defines the mapping: change the errors' codes and the interceptor follows."""
    api_key, entry = new_key("reader", ["score"])
    write_keys(files["keys"].parent / "reader.json", [entry])
    monkeypatch.setattr(errors.Unauthenticated, "code", grpc.StatusCode.FAILED_PRECONDITION)
    monkeypatch.setattr(errors.PermissionDenied, "code", grpc.StatusCode.OUT_OF_RANGE)
    settings = SecuritySettings(api_keys_file=files["keys"].parent / "reader.json")

    async def scenario() -> list[tuple[grpc.StatusCode, str]]:
        seen = []
        async with serving(settings, port) as address, grpc.aio.insecure_channel(address) as channel:
            for method, key in (("/healthai.v1.Risk/Score", None),
                                ("/healthai.v1.Forecast/Forecast", api_key)):
                try:
                    await call(channel, method, key=key)
                except grpc.aio.AioRpcError as exc:
                    seen.append((exc.code(), exc.details() or ""))
        return seen

    (unauth, unauth_msg), (denied, denied_msg) = asyncio.run(scenario())
    assert (unauth, denied) == (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.OUT_OF_RANGE)
    assert unauth_msg.startswith("missing API key")
    assert denied_msg == "client 'reader' lacks scope 'forecast' needed for healthai.v1.Forecast/Forecast"
