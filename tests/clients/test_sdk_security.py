"""The SDK and CLI over mutual TLS with API keys, against a real ``healthai serve`` configured
for them (TLS port + auth interceptor): the right credentials work; a missing key,
a key without the scope, and a plaintext client are refused with the right status / exit code."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest

from healthai_client import NO_RETRY, Client, HealthAIClientError
from healthai_client.cli import main

from .model_repo import FORECAST_MODEL, REGIONS, RISK_MODEL, expected_probability
from .pki import Secure


def _client(address: str, pki: dict[str, Path], key: str | None) -> Client:
    return Client(address, root_cert=pki["ca.crt"], client_cert=pki["client.crt"],
                  client_key=pki["client.key"], api_key=key, retry=NO_RETRY, timeout=10)


PATIENT = {"patient_id": "tls-p1", "sex": "male", "region": "US-MA"}


def test_mtls_with_a_scoped_key_works(secure_server: Secure) -> None:
    address, pki, keys = secure_server
    x = [[70.0, 28.0, 140.0, 7.5]]
    with _client(address, pki, keys["all"]) as c:
        assert c.health() == "SERVING"
        assert c.ingest_flat(patients=[PATIENT]).accepted == 1
        np.testing.assert_allclose(c.score(RISK_MODEL, x).probabilities, expected_probability(x), rtol=1e-5)
        assert c.forecast(model=FORECAST_MODEL, history={r: [1, 2, 3, 4] for r in REGIONS}).region_ids
    with _client(address, pki, keys["score"]) as c:
        assert c.score(RISK_MODEL, x).patients[0].risk_band == "high"
        with pytest.raises(HealthAIClientError, match="forecast") as info:
            c.forecast(model=FORECAST_MODEL, history={r: [1, 2, 3, 4] for r in REGIONS})
        assert info.value.code == grpc.StatusCode.PERMISSION_DENIED


def test_missing_key_and_wrong_scope_are_refused(secure_server: Secure) -> None:
    address, pki, keys = secure_server
    with _client(address, pki, None) as c, pytest.raises(HealthAIClientError) as info:
        c.ingest_flat(patients=[PATIENT])
    assert info.value.code == grpc.StatusCode.UNAUTHENTICATED and info.value.attempts == 1
    with _client(address, pki, keys["score"]) as c, pytest.raises(HealthAIClientError, match="scope") as info:
        c.ingest_flat(patients=[PATIENT])
    assert info.value.code == grpc.StatusCode.PERMISSION_DENIED


def test_plaintext_client_cannot_connect(secure_server: Secure) -> None:
    address, _, keys = secure_server
    with Client(address, api_key=keys["all"], retry=NO_RETRY, timeout=5) as c, \
            pytest.raises(HealthAIClientError) as info:
        c.health()
    assert info.value.code == grpc.StatusCode.UNAVAILABLE


def test_cli_over_mtls_and_auth_exit_code(secure_server: Secure,
                                          tmp_path: Path) -> None:
    address, pki, keys = secure_server
    tls = ["--address", address, "--root-cert", str(pki["ca.crt"]), "--client-cert", str(pki["client.crt"]),
           "--client-key", str(pki["client.key"])]
    patients = tmp_path / "patients.csv"
    patients.write_text("patient_id,sex,region\ntls-c1,female,US-NY\n")
    assert main(["ingest", str(patients), *tls, "--api-key", keys["all"]]) == 0
    assert main(["ingest", str(patients), *tls, "--api-key", keys["score"]]) == 5
