"""Risk.Score through a real gRPC server under concurrent load, where the scheduler gathers calls into
batches while its event loop is busy (``runtime/idle.py``): every call gets exactly its own answer —
the same as when sent alone —, a bad call fails alone with the field named by its own patient index,
and expired or cancelled calls take nobody else down. The real risk_heart model (with its card's
feature domains) from the default repository.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import grpc
import numpy as np

from healthai.serving.risk.card import parse_risk_card
from healthai.serving.settings import DEFAULT_MODEL_REPOSITORY, newest_version_dir
from healthai.v1 import risk_pb2, risk_pb2_grpc

MODEL = "risk_heart"


def patients(n: int) -> tuple[list[str], np.ndarray]:
    import json

    card = json.loads((newest_version_dir(MODEL) / "model_card.json").read_text())
    risk = parse_risk_card(card, n_inputs=len(card["features"]), where=MODEL)
    assert risk.domains is not None
    x = risk.baseline * np.random.default_rng(7).uniform(0.6, 1.4, size=(n, risk.n_features))
    return list(risk.feature_names), risk.domains.project(x)


def score(x: np.ndarray) -> risk_pb2.ScoreRequest:
    return risk_pb2.ScoreRequest(model_name=MODEL, features=x.reshape(-1).tolist(), top_features=3)


async def concurrent(port: int, requests: list[risk_pb2.ScoreRequest], *, expiring: int,
                     cancelled: int) -> list[object]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = risk_pb2_grpc.RiskStub(channel)
        calls = [stub.Score(r, timeout=0.001 if i == expiring else 30) for i, r in enumerate(requests)]
        await asyncio.sleep(0)
        calls[cancelled].cancel()
        out: list[object] = []
        for call in calls:
            try:
                out.append(await call)
            except (grpc.aio.AioRpcError, asyncio.CancelledError) as exc:
                out.append(exc)
        return out


def same_answer(got: risk_pb2.ScoreResponse, alone: risk_pb2.ScoreResponse) -> None:
    np.testing.assert_allclose(got.probability, alone.probability, rtol=1e-5, atol=1e-7)
    assert list(got.risk_band) == list(alone.risk_band)
    np.testing.assert_allclose(got.top_feature_contribution, alone.top_feature_contribution,
                               rtol=1e-4, atol=1e-6)
    gaps = np.abs(np.diff(np.abs(alone.top_feature_contribution)))
    if gaps.size == 0 or gaps.min() > 1e-4:  # the order of near-ties may differ in the last bit
        assert list(got.top_feature_name) == list(alone.top_feature_name)


def test_concurrent_calls_each_get_their_own_answer_and_a_bad_one_fails_alone(tmp_path: Path, make_server):
    repo = tmp_path / "models"
    shutil.copytree(DEFAULT_MODEL_REPOSITORY / MODEL, repo / MODEL)
    server = make_server(repo)
    names, x = patients(96)
    stub = risk_pb2_grpc.RiskStub(server.channel)
    alone = [stub.Score(score(row), timeout=30) for row in x]  # one at a time: never gathered
    bad_row = x[5].copy()
    bad_row[names.index("age")] = 500
    requests = [score(row) for row in x]
    requests[5] = score(bad_row)
    for _ in range(3):  # rounds: the loop is busy with the other calls while each arrives
        out = asyncio.run(concurrent(server.port, requests, expiring=11, cancelled=17))
        assert isinstance(out[5], grpc.aio.AioRpcError)
        assert out[5].code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "features[0].age=500 is outside" in (out[5].details() or "")
        assert isinstance(out[11], grpc.aio.AioRpcError)
        assert out[11].code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert isinstance(out[17], asyncio.CancelledError) or (
            isinstance(out[17], grpc.aio.AioRpcError) and out[17].code() == grpc.StatusCode.CANCELLED)
        for i, got in enumerate(out):
            if i not in (5, 11, 17):
                assert isinstance(got, risk_pb2.ScoreResponse), (i, got)
                same_answer(got, alone[i])
    stats = server.plugin.manager.resolve(MODEL).scheduler.stats
    assert stats.success.count >= 96 + 3 * 93
