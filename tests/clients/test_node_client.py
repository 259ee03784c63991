"""The Node.js client (@grpc/grpc-js + the repository's protos) runs ingest -> score -> forecast
against a real server; its answers are checked here."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from .pki import Secure
from .polyglot import FORECAST_MODEL, check_demo_output, demo_args, tls_args

NODE_DIR = Path(__file__).resolve().parents[2] / "clients" / "node"
pytestmark = pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None,
                                reason="Node.js (node + npm) is not installed")


@pytest.fixture(scope="module")
def node_client() -> Path:
    """clients/node with its pinned dependencies installed (npm ci from package-lock.json)."""
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, timeout=300,
                       capture_output=True)
    return NODE_DIR


def test_node_ingest_score_forecast(node_client: Path, server: str, fhir_bundle: Path) -> None:
    proc = subprocess.run(["node", "demo.js", *demo_args(server, fhir_bundle, "node-test")], cwd=node_client,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    check_demo_output(proc.stdout, fhir_bundle)


def test_node_reports_status_of_a_refused_call(node_client: Path, server: str) -> None:
    proc = subprocess.run(["node", "demo.js", "--address", server, "--risk-model", "no_such_model",
                           "--features", "1"], cwd=node_client, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 3
    assert "NOT_FOUND" in proc.stderr and "no_such_model" in proc.stderr
    done = demo_args(server, Path("unused"), "node-test")[6:12]  # a risk step that succeeds first
    proc = subprocess.run(["node", "demo.js", "--address", server, *done, "--forecast-model", FORECAST_MODEL,
                           "--regions", "US-MA", "--history", "1,2"], cwd=node_client, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 3 and "INVALID_ARGUMENT" in proc.stderr
    assert set(json.loads(proc.stdout)) == {"score"}  # what was done before the failing step


def test_node_over_mutual_tls_with_api_key(node_client: Path, secure_server: Secure,
                                           fhir_bundle: Path) -> None:
    run = ["node", "demo.js", *demo_args(secure_server[0], fhir_bundle, "node-tls")]
    proc = subprocess.run([*run, *tls_args(secure_server, secure_server[2]["all"])], cwd=node_client,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    check_demo_output(proc.stdout, fhir_bundle)
    proc = subprocess.run([*run, *tls_args(secure_server, None)], cwd=node_client, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 3 and "UNAUTHENTICATED" in proc.stderr
