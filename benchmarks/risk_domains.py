"""What checking risk features against the card's domains costs (loopback only, ~1 minute).

1. The check alone (``FeatureDomains.check``), µs per call for 1 and 1,000 valid patients, for each
   default risk model (risk_readmission also checks two derived features).
2. Risk.Score with one patient beside Diagnostics.Echo (concurrency 1, interleaved blocks, one server):
   the model as committed vs the same model with its card's domains removed.

    .venv/bin/python benchmarks/risk_domains.py [--n 2000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import timeit
from pathlib import Path

import numpy as np
from serve import latency_pairs, rpc, table  # the sibling benchmark's interleaved latency blocks

from healthai.app.testing import start_server_process, stop_server_process
from healthai.serving.risk.card import parse_risk_card
from healthai.serving.settings import DEFAULT_MODEL_REPOSITORY, newest_version_dir
from healthai.v1 import diagnostics_pb2, diagnostics_pb2_grpc, risk_pb2, risk_pb2_grpc

MODELS = ("risk_heart", "risk_readmission")


def check_cost(name: str, rows: int, number: int) -> float:
    raw = json.loads((newest_version_dir(name) / "model_card.json").read_text())
    card = parse_risk_card(raw, n_inputs=0, where=name)
    x = (card.baseline * np.random.default_rng(0).uniform(0.5, 1.5, (rows, card.n_features)))
    x = card.domains.project(x)
    card.domains.check(x)  # valid: the timed calls take the path every accepted request takes
    best = min(timeit.repeat(lambda: card.domains.check(x), number=number, repeat=7))
    return best / number * 1e6


def without_domains(src: Path, dst: Path, name: str) -> str:
    new = f"{name}_no_domains"
    shutil.copytree(src / name, dst / new)
    config = dst / new / "config.pbtxt"
    config.write_text(config.read_text().replace(f'name: "{name}"', f'name: "{new}"'))
    path = newest_version_dir(new, dst) / "model_card.json"
    card = json.loads(path.read_text())
    card.pop("domains")
    for f in card["features"]:
        f.pop("domain")
    path.write_text(json.dumps(card))
    return new


def rpc_latency(n: int) -> list[list[str]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "models"
        repo.mkdir()
        for name in MODELS:
            shutil.copytree(DEFAULT_MODEL_REPOSITORY / name, repo / name)
        bare = {name: without_domains(DEFAULT_MODEL_REPOSITORY, repo, name) for name in MODELS}
        env = {"HEALTHAI_SERVING__MODEL_REPOSITORY": str(repo), "HEALTHAI_SERVING__RELOAD_POLL_S": "0",
               "HEALTHAI_LOG_LEVEL": "ERROR"}
        proc, port = start_server_process(["--dev", "--store-uri", str(Path(tmp) / "store")], env=env,
                                          timeout=180)
        try:
            for name in MODELS:
                raw = json.loads((newest_version_dir(name, repo) / "model_card.json").read_text())
                card = parse_risk_card(raw, n_inputs=0, where=name)
                x = card.baseline * np.random.default_rng(0).uniform(0.5, 1.5, card.n_features)
                patient = card.domains.project(x[None])[0].tolist()
                with_req = risk_pb2.ScoreRequest(model_name=name, features=patient)
                bare_req = risk_pb2.ScoreRequest(model_name=bare[name], features=patient)
                echo = diagnostics_pb2.EchoRequest(payload=b"x" * with_req.ByteSize())
                lat = latency_pairs(port, {
                    "echo": rpc(diagnostics_pb2_grpc.DiagnosticsStub, "Echo", echo),
                    "checked": rpc(risk_pb2_grpc.RiskStub, "Score", with_req),
                    "unchecked": rpc(risk_pb2_grpc.RiskStub, "Score", bare_req)}, n)
                e50 = np.percentile(lat["echo"], 50)
                for key, what in (("echo", "Diagnostics.Echo"), ("checked", f"Risk.Score {name}, domains"),
                                  ("unchecked", f"Risk.Score {name}, no domains")):
                    p50, p99 = np.percentile(lat[key], [50, 99])
                    rows.append([what, f"{p50:.0f}", f"{p99:.0f}", f"{p50 / e50:.2f}"])
        finally:
            stop_server_process(proc)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=2000, help="calls per RPC in the latency table")
    args = p.parse_args(argv)
    cost = [[name, f"{check_cost(name, 1, 5000):.1f}", f"{check_cost(name, 1000, 200):.0f}"]
            for name in MODELS]
    print(table("FeatureDomains.check on valid patients (µs per call)",
                ["model", "1 patient", "1,000 patients"], cost))
    print(table("One patient, concurrency 1, interleaved blocks (µs)", ["RPC", "p50", "p99", "p50 / echo"],
                rpc_latency(args.n)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
