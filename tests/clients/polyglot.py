"""What the Node.js and C++ demo clients are asked to do (ingest -> score -> forecast) and the checks
of their printed answers against values computed here from the models' definitions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .model_repo import (
    FORECAST_MODEL,
    QUANTILES,
    REGIONS,
    RISK_FEATURES,
    RISK_MODEL,
    expected_forecast,
    expected_probability,
)
from .pki import Secure

# two patients, features given in a different order than the model card's
FEATURE_ORDER = ["hba1c", "age", "systolic_bp", "bmi"]
PATIENTS = np.array([[7.5, 70, 140, 28], [5.0, 30, 110, 22]], dtype=np.float32)
HISTORY = (np.arange(15, dtype=np.float32).reshape(5, 3) * 3 + 1)  # [steps x REGIONS]


def demo_args(address: str, fhir: Path, source: str) -> list[str]:
    return ["--address", address, "--fhir", str(fhir), "--source", source,
            "--risk-model", RISK_MODEL, "--feature-names", ",".join(FEATURE_ORDER),
            "--features", ",".join(f"{v:g}" for v in PATIENTS.ravel()),
            "--forecast-model", FORECAST_MODEL, "--regions", ",".join(REGIONS),
            "--history", ",".join(f"{v:g}" for v in HISTORY.ravel())]


def tls_args(secure: Secure, key: str | None) -> list[str]:
    """Demo arguments for the mutual-TLS server (after demo_args): CA, client certificate + key, API key."""
    _, pki, _ = secure
    args = ["--root-cert", str(pki["ca.crt"]), "--client-cert", str(pki["client.crt"]),
            "--client-key", str(pki["client.key"])]
    return args + (["--api-key", key] if key else [])


def check_demo_output(stdout: str, fhir: Path) -> None:
    out: dict[str, Any] = json.loads(stdout)
    entries = len(json.loads(fhir.read_bytes())["entry"])
    ingest = out["ingest"]
    assert ingest["accepted"] + ingest["rejected"] == entries and ingest["accepted"] > 0
    assert ingest["batch_id"]
    # new stores or duplicates (the same bundle may have been sent by another client): never lost
    assert sum(ingest["stored"].values()) + ingest["duplicates"] > 0

    score = out["score"]
    card_order = PATIENTS[:, [FEATURE_ORDER.index(n) for n in RISK_FEATURES]]
    np.testing.assert_allclose(score["probability"], expected_probability(card_order), rtol=1e-5)
    assert (score["model_name"], score["model_version"]) == (RISK_MODEL, 1)
    assert score["risk_band"] == ["high", "medium"]

    fc = out["forecast"]
    assert fc["region_ids"] == REGIONS and fc["horizons"] == [1, 2, 3]
    np.testing.assert_allclose(fc["quantile_levels"], QUANTILES, rtol=1e-6)
    want = expected_forecast(HISTORY)
    np.testing.assert_allclose(np.reshape(fc["quantiles"], want.shape), want, rtol=1e-5)
    np.testing.assert_allclose(np.reshape(fc["point"], want.shape[:2]), want[:, :, 1], rtol=1e-5)
