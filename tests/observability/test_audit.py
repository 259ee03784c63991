"""Audit log over a real server: one JSON line per call, with caller, counts, status, request id."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from pathlib import Path

import grpc
import pytest

from healthai.observability import AUDIT_LOGGER_NAME, ObservabilitySettings, note
from healthai.security import SecuritySettings, new_key

from .obs_testkit import read_audit, serving, unary

PATIENTS = [{"id": "p1", "name": "A"}, {"id": "p1", "name": "A"}, {"id": "p2", "name": "B"}]


@pytest.fixture
def keys_file(tmp_path: Path) -> tuple[Path, str, str]:
    ingest_key, ingest = new_key("ehr-north", ["ingest"])
    score_key, score = new_key("dashboard", ["forecast"])
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keys": [ingest, score]}))
    return path, ingest_key, score_key


def _auth(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def test_one_line_per_call_with_fields(tmp_path: Path, port: int, keys_file: tuple[Path, str, str]) -> None:
    path, ingest_key, other_key = keys_file
    audit_file = tmp_path / "audit.log"
    obs = ObservabilitySettings(audit_log_file=audit_file, metrics_port=None)

    async def scenario() -> list:
        async with (
            serving(port, obs, SecuritySettings(api_keys_file=path)) as (address, _),
            grpc.aio.insecure_channel(address) as channel,
        ):
            ingest = "/healthai.v1.Ingest/Ingest"
            results = [
                await unary(
                    channel,
                    ingest,
                    {"patients": PATIENTS},
                    (*_auth(ingest_key), ("x-request-id", "req-42")),
                ),
                await unary(channel, ingest, {"patients": PATIENTS}),
                await unary(channel, ingest, {"patients": PATIENTS}, _auth(other_key)),
                await unary(channel, ingest, {"patients": PATIENTS, "fail": "invalid"}, _auth(ingest_key)),
                await unary(channel, "/healthai.v1.Nope/Nothing", {}),
            ]
            bidi = channel.stream_stream("/healthai.v1.Ingest/IngestStream")(metadata=_auth(ingest_key))
            for _ in range(3):
                await bidi.write(json.dumps({"patients": PATIENTS[:2]}).encode())
                await bidi.read()
            await bidi.done_writing()
            assert await bidi.code() == grpc.StatusCode.OK
            return results

    results = asyncio.run(scenario())
    codes = [code for code, *_ in results]
    assert codes == [
        grpc.StatusCode.OK,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNIMPLEMENTED,
    ]
    lines = read_audit(audit_file)
    assert len(lines) == 6  # one per call, refused and failed ones included
    ok, unauth, denied, invalid, unknown, stream = lines
    assert set(ok) == {
        "ts",
        "request_id",
        "caller",
        "key_id",
        "client_cert",
        "peer",
        "rpc",
        "status",
        "latency_ms",
        "counts",
    }
    assert ok["request_id"] == "req-42" and results[0][2]["x-request-id"] == "req-42"
    assert ok["caller"] == "ehr-north" and ok["rpc"] == "healthai.v1.Ingest/Ingest" and ok["status"] == "OK"
    assert ok["counts"] == {"records": 3, "patients": 2}
    assert ok["peer"].startswith("ipv4:127.0.0.1:") and ok["latency_ms"] > 0
    assert (
        unauth["caller"] == "anonymous" and unauth["status"] == "UNAUTHENTICATED" and unauth["counts"] == {}
    )
    assert len(unauth["request_id"]) == 32 and results[1][2]["x-request-id"] == unauth["request_id"]
    assert denied["caller"] == "dashboard" and denied["status"] == "PERMISSION_DENIED"
    assert invalid["status"] == "INVALID_ARGUMENT" and invalid["counts"] == {"records": 3, "patients": 2}
    assert results[3][2]["x-request-id"] == invalid["request_id"]  # echoed on failures too
    assert unknown["rpc"] == "unknown/unknown" and unknown["status"] == "UNIMPLEMENTED"
    assert stream["rpc"] == "healthai.v1.Ingest/IngestStream" and stream["counts"] == {
        "records": 6,
        "patients": 3,
    }
    assert len({line["request_id"] for line in lines}) == 6


def test_unhandled_error_and_crash_statuses(tmp_path: Path, port: int) -> None:
    audit_file = tmp_path / "audit.log"

    async def scenario() -> list:
        obs = ObservabilitySettings(audit_log_file=audit_file, metrics_port=None)
        async with serving(port, obs) as (address, _), grpc.aio.insecure_channel(address) as channel:
            return [
                await unary(channel, "/healthai.v1.Risk/Score", {"fail": "crash"}),
                await unary(
                    channel, "/healthai.v1.Risk/Score", {}, (("x-request-id", "bad id with spaces"),)
                ),
            ]

    crash, ok = asyncio.run(scenario())
    assert crash[0] == grpc.StatusCode.UNKNOWN and ok[0] == grpc.StatusCode.OK
    lines = read_audit(audit_file)
    assert [line["status"] for line in lines] == ["UNKNOWN", "OK"]
    assert lines[0]["caller"] == "anonymous" and lines[0]["key_id"] is None
    assert lines[1]["request_id"] != "bad id with spaces" and len(lines[1]["request_id"]) == 32


def test_note_accepts_only_integer_counts() -> None:
    note(records=1)  # outside an RPC: no-op
    with pytest.raises(TypeError, match="audit count name must be an int, got str"):
        note(name="Jane Doe")
    with pytest.raises(ValueError, match="audit count name 'Birth-Date' must match"):
        note(**{"Birth-Date": 1})
    with pytest.raises(ValueError, match="audit count records=-1 must be >= 0"):
        note(records=-1)


class _LineEvents(logging.Handler):
    """Sets an event per audit line, so the test awaits the line instead of sleeping."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict] = []
        self.arrived = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(record.getMessage()))
        self.arrived.set()


def test_deadline_exceeded_is_audited(tmp_path: Path, port: int) -> None:
    watcher = _LineEvents()

    async def scenario() -> grpc.StatusCode:
        obs = ObservabilitySettings(audit_log_file=tmp_path / "audit.log", metrics_port=None)
        async with serving(port, obs) as (address, _), grpc.aio.insecure_channel(address) as channel:
            logging.getLogger(AUDIT_LOGGER_NAME).addHandler(watcher)
            try:
                code = (await unary(channel, "/healthai.v1.Risk/Score", {"fail": "hang"}, timeout=0.3))[0]
                assert await asyncio.to_thread(watcher.arrived.wait, 10)
            finally:
                logging.getLogger(AUDIT_LOGGER_NAME).removeHandler(watcher)
            return code

    assert asyncio.run(scenario()) == grpc.StatusCode.DEADLINE_EXCEEDED
    (line,) = watcher.lines
    assert line["status"] == "DEADLINE_EXCEEDED" and line["latency_ms"] >= 250


def test_audit_goes_to_stdout_by_default_and_survives_rotation(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from healthai import observability

    obs = observability.setup(ObservabilitySettings(metrics_port=None))
    logging.getLogger(AUDIT_LOGGER_NAME).info('{"probe":1}')
    obs.close()
    captured = capfd.readouterr()
    assert captured.out.strip().splitlines()[-1] == '{"probe":1}'
    assert '{"probe":1}' not in captured.err, "audit lines never mix into the application log (stderr)"

    path = tmp_path / "audit.log"
    obs = observability.setup(ObservabilitySettings(audit_log_file=path, metrics_port=None))
    logging.getLogger(AUDIT_LOGGER_NAME).info('{"n":1}')
    path.rename(tmp_path / "audit.log.1")  # what logrotate does
    logging.getLogger(AUDIT_LOGGER_NAME).info('{"n":2}')
    obs.close()
    assert (tmp_path / "audit.log.1").read_text() == '{"n":1}\n'
    assert path.read_text() == '{"n":2}\n'
