"""Privacy sweep through the real assembled server (``healthai.app.server.build_server`` with the
Ingest and serving plugins, behind the auth + observability interceptors).

Recognisable names, identifiers and birth dates go in through every RPC, in accepted and in failing
requests; none may come back out in server logs, audit lines, metrics or error messages/metadata.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request

import grpc
import pytest
from conftest import free_port
from tritonclient.grpc import service_pb2 as kserve_pb2

from healthai import observability, security
from healthai.app.server import build_server
from healthai.app.settings import Settings
from healthai.ingest.plugin import IngestPlugin
from healthai.observability import ObservabilitySettings
from healthai.security import SecuritySettings, new_key
from healthai.serving.plugin import plugin as serving_plugin
from healthai.serving.settings import ServingSettings
from healthai.v1 import (
    diagnostics_pb2,
    diagnostics_pb2_grpc,
    forecast_pb2,
    forecast_pb2_grpc,
    ingest_pb2,
    ingest_pb2_grpc,
    risk_pb2,
    risk_pb2_grpc,
)

FAMILY, GIVEN = "Quixbury", "Zebulon"
MRN, SSN = "MRN88317731", "999-41-5678"
BIRTH_DATE, PHONE, STREET = "1961-07-23", "555-0199-7731", "42 Wallaby Way"
PHI = (FAMILY, GIVEN, MRN, SSN, BIRTH_DATE, PHONE, STREET, "Wallaby")


def _patient(resource_id: str, birth_date: str = BIRTH_DATE) -> dict:
    return {
        "resourceType": "Patient",
        "id": resource_id,
        "identifier": [
            {"system": "urn:oid:1.2.36.146.595.217.0.1", "value": MRN},
            {"system": "http://hl7.org/fhir/sid/us-ssn", "value": SSN},
        ],
        "name": [{"family": FAMILY, "given": [GIVEN]}],
        "telecom": [{"system": "phone", "value": PHONE}],
        "gender": "male",
        "birthDate": birth_date,
        "address": [{"line": [STREET], "city": "Springfield", "state": "MA", "country": "US"}],
    }


def _bundle(*resources: dict) -> bytes:
    entries = [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in resources]
    return json.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries}).encode()


def _requests() -> list[ingest_pb2.IngestRequest]:
    condition = {
        "resourceType": "Condition",
        "id": "c-1",
        "subject": {"reference": "urn:uuid:p-1", "display": f"{GIVEN} {FAMILY}"},
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "E11.9"}]},
        "onsetDateTime": BIRTH_DATE,
    }
    bad_patient = {**_patient("p-2", birth_date=f"{BIRTH_DATE}T25:61"), "gender": f"{GIVEN} {FAMILY}"}
    flat = ingest_pb2.FlatRecords(
        patients=[
            ingest_pb2.PatientRecord(
                patient_id=MRN, sex="M", birth_date=BIRTH_DATE, state="MA", country="US"
            ),
            ingest_pb2.PatientRecord(patient_id=SSN, sex=FAMILY, birth_date=f"{BIRTH_DATE}x", country="US"),
        ],
        conditions=[ingest_pb2.ConditionRecord(condition_id="c-9", patient_id=MRN, code=f"{GIVEN}-{MRN}")],
    )
    return [
        ingest_pb2.IngestRequest(
            source="hospital-a/ehr", fhir=ingest_pb2.FhirPayload(json=_bundle(_patient("p-1"), condition))
        ),
        ingest_pb2.IngestRequest(
            source="hospital-a/ehr", fhir=ingest_pb2.FhirPayload(json=_bundle(bad_patient))
        ),
        ingest_pb2.IngestRequest(
            source="hospital-a/ehr", fhir=ingest_pb2.FhirPayload(json=_bundle(_patient("p-3"))[:-40])
        ),
        ingest_pb2.IngestRequest(source="hospital-a/ehr", flat=flat),
        ingest_pb2.IngestRequest(source="", flat=flat),
    ]


async def _capture(call) -> dict[str, str]:
    """What the client sees of a call: the reply (with per-record issue messages) or the status."""
    seen = {"reply": "", "status": "OK"}
    try:
        seen["reply"] = str(await call)
    except grpc.aio.AioRpcError as exc:
        seen["status"] = f"{exc.code().name}: {exc.details()}"
    seen["status"] += f" {list(await call.trailing_metadata() or ())}"
    return seen


async def _sweep(address: str, key: str) -> list[dict[str, str]]:
    auth = (("authorization", f"Bearer {key}"),)
    async with grpc.aio.insecure_channel(address) as channel:
        ingest = ingest_pb2_grpc.IngestStub(channel)
        seen = [await _capture(ingest.IngestBatch(r, metadata=auth, timeout=30)) for r in _requests()]
        seen.append(await _capture(ingest.IngestBatch(_requests()[0], timeout=30)))  # no key

        async def stream():
            for request in _requests()[:4]:
                yield request

        seen.append(await _capture(ingest.IngestStream(stream(), metadata=auth, timeout=30)))
        risk = risk_pb2_grpc.RiskStub(channel)
        score = risk_pb2.ScoreRequest(
            model_name="risk",
            feature_names=["age"],
            features=[61.0],
            diagnoses=[risk_pb2.DiagnosisCodes(codes=[MRN, f"{GIVEN} {FAMILY}"], system="ICD10CM")],
        )
        seen.append(await _capture(risk.Score(score, metadata=auth, timeout=30)))
        forecast = forecast_pb2_grpc.ForecastStub(channel)
        seen.append(
            await _capture(
                forecast.Forecast(
                    forecast_pb2.ForecastRequest(region_ids=[MRN, FAMILY]), metadata=auth, timeout=30
                )
            )
        )
        echo = diagnostics_pb2_grpc.DiagnosticsStub(channel)
        payload = f"{GIVEN} {FAMILY} {BIRTH_DATE}".encode()
        reply = await echo.Echo(diagnostics_pb2.EchoRequest(payload=payload), metadata=auth, timeout=30)
        assert reply.payload == payload  # the echo answers the caller; nothing else may keep it
        infer = kserve_pb2.ModelInferRequest(
            model_name="risk",
            inputs=[
                kserve_pb2.ModelInferRequest.InferInputTensor(
                    name="features",
                    datatype="BYTES",
                    shape=[2],
                    contents=kserve_pb2.InferTensorContents(bytes_contents=[FAMILY.encode(), SSN.encode()]),
                )
            ],
        )
        model_infer = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=kserve_pb2.ModelInferRequest.SerializeToString,
            response_deserializer=kserve_pb2.ModelInferResponse.FromString,
        )
        seen.append(await _capture(model_infer(infer, metadata=auth, timeout=30)))
        return seen


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run the whole sweep once against a fresh server; return every surface it produced."""
    tmp_path = tmp_path_factory.mktemp("phi")
    key, entry = new_key("ehr-north", ["ingest", "score", "forecast", "inference", "admin"])
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps({"keys": [entry]}))
    sec = SecuritySettings(api_keys_file=keys_file)
    audit_file = tmp_path / "audit.log"
    (tmp_path / "models").mkdir()
    settings = Settings(
        port=free_port(),
        store_uri=str(tmp_path / "store"),
        dev_mode=True,
        serving=ServingSettings(model_repository=tmp_path / "models", reload_poll_s=0.0),
    )
    logs = _Collect()
    logs.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(logs)
    root.setLevel(logging.DEBUG)

    async def scenario() -> tuple[list[dict[str, str]], str]:
        obs = observability.setup(ObservabilitySettings(audit_log_file=audit_file, metrics_port=0))
        ingest = IngestPlugin(settings)
        running = build_server(
            settings,
            [ingest, serving_plugin(settings=settings, surveillance=ingest.surveillance)],
            interceptors=[*obs.interceptors, *security.interceptors(sec)],
            add_port=lambda server, address: security.add_port(server, address, sec),
        )
        await running.start()
        try:
            seen = await _sweep(f"127.0.0.1:{running.port}", key)
            assert obs.metrics_server is not None
            url = obs.metrics_server.url
            metrics_text = await asyncio.to_thread(
                lambda: urllib.request.urlopen(url, timeout=10).read().decode()
            )
        finally:
            await running.stop(grace=0.5)
            obs.close()
        return seen, metrics_text

    try:
        seen, metrics_text = asyncio.run(scenario())
    finally:
        root.removeHandler(logs)
        root.setLevel(old_level)
    return {
        "seen": seen,
        "metrics": metrics_text,
        "audit": audit_file.read_text(),
        "logs": "\n".join(logs.lines),
    }


def _leaks(surfaces: dict[str, str]) -> list[tuple[str, str]]:
    return [(where, value) for where, text in surfaces.items() for value in PHI if value in text]


@pytest.mark.slow
def test_sweep_reached_every_rpc(sweep: dict) -> None:
    seen, audit = sweep["seen"], [json.loads(line) for line in sweep["audit"].splitlines()]
    assert len(audit) == len(seen) + 1  # one line per call, + the Echo call
    rpcs = {line["rpc"] for line in audit}
    assert rpcs == {
        "healthai.v1.Ingest/IngestBatch",
        "healthai.v1.Ingest/IngestStream",
        "healthai.v1.Risk/Score",
        "healthai.v1.Forecast/Forecast",
        "healthai.v1.Diagnostics/Echo",
        "inference.GRPCInferenceService/ModelInfer",
    }
    assert audit[5]["status"] == "UNAUTHENTICATED" and audit[0]["caller"] == "ehr-north"
    assert "accepted: 2" in seen[0]["reply"]  # the valid bundle (Patient + Condition) went in
    assert seen[4]["status"].startswith("INVALID_ARGUMENT")  # empty source
    assert 'grpc_service="healthai.v1.Ingest"' in sweep["metrics"]


@pytest.mark.slow
def test_no_patient_data_in_logs_audit_metrics_or_statuses(sweep: dict) -> None:
    surfaces = {
        "server logs": sweep["logs"],
        "audit lines": sweep["audit"],
        "metrics": sweep["metrics"],
        "status details and trailing metadata": "\n".join(s["status"] for s in sweep["seen"]),
    }
    assert _leaks(surfaces) == []


@pytest.mark.slow
def test_no_patient_data_in_record_issue_messages(sweep: dict) -> None:
    assert _leaks({"record outcomes": "\n".join(s["reply"] for s in sweep["seen"])}) == []
