"""Hypothesis strategies for the fuzz pass: FHIR JSON, flat records, Arrow IPC, KServe ModelInfer.

Each strategy mixes plain garbage with structured near-misses (a real Synthea excerpt with one value
replaced, a well-formed Arrow stream with odd column types, a tensor whose byte length disagrees
with its shape), since parsers break on the second kind far more often than on the first.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pyarrow as pa
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2

from healthai.v1 import common_pb2, ingest_pb2

FHIR_KEYS = ["resourceType", "id", "type", "entry", "resource", "fullUrl", "subject", "patient",
             "reference", "code", "coding", "system", "display", "valueQuantity", "value", "unit",
             "component", "birthDate", "gender", "identifier", "status", "category",
             "effectiveDateTime", "onsetDateTime", "period", "start", "class", "address", "state",
             "encounter", "clinicalStatus", "deceasedDateTime", "name", "telecom"]
FHIR_WORDS = ["Bundle", "Patient", "Encounter", "Condition", "Observation", "collection", "transaction",
              "urn:uuid:1", "Patient/1", "#", "http://loinc.org", "http://snomed.info/sct",
              "http://hl7.org/fhir/sid/icd-10-cm", "8480-6", "85354-9", "J10.1", "6142004", "mm[Hg]",
              "mmHg", "Cel", "kg", "2020-01-01", "2020-13-45T99:99", "1900", "male", "final", ""]

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                         st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(FHIR_WORDS),
                         st.text(max_size=12))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(FHIR_KEYS), inner, max_size=5)),
    max_leaves=25)


def synthea_excerpt(fhir_dir: Path, entries: int = 12) -> dict[str, Any]:
    """The first ``entries`` resources of the smallest Synthea bundle: real structure, cheap to send."""
    smallest = min(fhir_dir.glob("*.json"), key=lambda p: p.stat().st_size)
    bundle = json.loads(smallest.read_text())
    return {**bundle, "entry": bundle["entry"][:entries]}


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _replace(node: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy = dict(node) if isinstance(node, dict) else list(node)
    copy[path[0]] = _replace(node[path[0]], path[1:], value)
    return copy


@st.composite
def fhir_payloads(draw: st.DrawFn, excerpt: dict[str, Any]) -> bytes:
    kind = draw(st.sampled_from(["bytes", "json", "mutated", "truncated"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    text = json.dumps(excerpt).encode()
    if kind == "truncated":
        return text[:draw(st.integers(0, len(text) - 1))]
    paths = _paths(excerpt)
    for _ in range(draw(st.integers(1, 3))):  # replace one to three values anywhere in the bundle
        excerpt = _replace(excerpt, draw(st.sampled_from(paths)), draw(json_values))
        paths = _paths(excerpt)
    return json.dumps(excerpt).encode()


short_text = st.one_of(st.text(max_size=20),
                       st.sampled_from([*FHIR_WORDS, "M", "F", "U", "x" * 300]))
any_float = st.one_of(st.floats(), st.sampled_from([0.0, -1.0, 1e308, -1e308, math.nan, math.inf]))


def _fields(message: type) -> dict[str, st.SearchStrategy[Any]]:
    """A strategy per field of a flat record message: text for strings, any float for doubles."""
    out: dict[str, st.SearchStrategy[Any]] = {}
    for f in message.DESCRIPTOR.fields:
        if f.type == f.TYPE_STRING:
            out[f.name] = short_text
        elif f.type == f.TYPE_DOUBLE:
            out[f.name] = any_float
        elif f.type == f.TYPE_BOOL:
            out[f.name] = st.booleans()
    return out


def _record(message: type) -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries({}, optional=_fields(message)).map(lambda kw: message(**kw))


flat_records = st.builds(
    lambda p, e, c, o: ingest_pb2.FlatRecords(patients=p, encounters=e, conditions=c, observations=o),
    st.lists(_record(ingest_pb2.PatientRecord), max_size=4),
    st.lists(_record(ingest_pb2.EncounterRecord), max_size=3),
    st.lists(_record(ingest_pb2.ConditionRecord), max_size=3),
    st.lists(_record(ingest_pb2.ObservationRecord), max_size=4))

FLAT_COLUMNS = sorted({f.name for m in (ingest_pb2.PatientRecord, ingest_pb2.EncounterRecord,
                                        ingest_pb2.ConditionRecord, ingest_pb2.ObservationRecord)
                       for f in m.DESCRIPTOR.fields})
ARROW_TYPES = {
    "string": (pa.string(), short_text), "large_string": (pa.large_string(), short_text),
    "int64": (pa.int64(), st.integers(-(2**63), 2**63 - 1)), "float64": (pa.float64(), any_float),
    "bool": (pa.bool_(), st.booleans()), "date32": (pa.date32(), st.integers(-(2**20), 2**20)),
    "timestamp": (pa.timestamp("us"), st.integers(-(2**50), 2**50)),
    "binary": (pa.binary(), st.binary(max_size=8)),
    "list": (pa.list_(pa.int32()), st.lists(st.integers(0, 9), max_size=2)),
}


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


@st.composite
def arrow_records(draw: st.DrawFn) -> ingest_pb2.ArrowRecords:
    """Patients or observations with plausible columns (some values valid, some not), then maybe one
    column dropped or retyped."""
    rows = draw(st.integers(1, 4))
    tag = draw(st.integers(0, 10**9))
    if draw(st.booleans()):
        kind = common_pb2.RECORD_KIND_PATIENT
        columns: dict[str, pa.Array] = {
            "patient_id": pa.array([f"fz-{tag}-{i}" for i in range(rows)]),
            "sex": pa.array(draw(st.lists(st.sampled_from(["male", "female", "F", "x", ""]), min_size=rows,
                                          max_size=rows))),
            "birth_date": pa.array(draw(st.lists(st.sampled_from(["1960-05", "1960-05-03", "2999-01", "x"]),
                                                 min_size=rows, max_size=rows))),
            "region": pa.array(["US-MA"] * rows)}
    else:
        kind = common_pb2.RECORD_KIND_OBSERVATION
        columns = {
            "observation_id": pa.array([f"fz-{tag}-{i}" for i in range(rows)]),
            "patient_id": pa.array([f"fz-p-{tag}"] * rows),
            "loinc": pa.array(draw(st.lists(st.sampled_from(["8480-6", "8480-5", "29463-7", "2339-0", ""]),
                                            min_size=rows, max_size=rows))),
            "value": pa.array(draw(st.lists(any_float, min_size=rows, max_size=rows)), pa.float64()),
            "unit": pa.array(draw(st.lists(st.sampled_from(["mm[Hg]", "mmHg", "kg", "[lb_av]", "mg/dL", "?"]),
                                           min_size=rows, max_size=rows))),
            "effective": pa.array(["2024-01-02T03:04:05Z"] * rows)}
    mutation = draw(st.sampled_from(["none", "none", "drop", "retype"]))
    name = draw(st.sampled_from(sorted(columns)))
    if mutation == "drop":
        del columns[name]
    elif mutation == "retype":
        arrow_type, values = ARROW_TYPES[draw(st.sampled_from(sorted(ARROW_TYPES)))]
        columns[name] = pa.array(draw(st.lists(values, min_size=rows, max_size=rows)), type=arrow_type)
    return ingest_pb2.ArrowRecords(kind=kind, ipc_stream=_ipc(pa.table(columns)))


@st.composite
def arrow_streams(draw: st.DrawFn) -> ingest_pb2.ArrowRecords:
    kind = draw(st.sampled_from([*common_pb2.RecordKind.values(), 99]))
    shape = draw(st.sampled_from(["bytes", "table", "truncated", "records", "records"]))
    if shape == "bytes":
        return ingest_pb2.ArrowRecords(kind=kind, ipc_stream=draw(st.binary(max_size=400)))
    if shape == "records":
        return draw(arrow_records())
    rows = draw(st.integers(0, 4))
    names = draw(st.lists(st.one_of(st.sampled_from(FLAT_COLUMNS), st.text(max_size=6)), max_size=6,
                          unique=True))
    columns = {}
    for name in names:
        arrow_type, values = ARROW_TYPES[draw(st.sampled_from(sorted(ARROW_TYPES)))]
        columns[name] = pa.array(draw(st.lists(st.one_of(st.none(), values), min_size=rows, max_size=rows)),
                                 type=arrow_type)
    data = _ipc(pa.table(columns) if columns else pa.table({"x": pa.array([], pa.int8())}))
    if shape == "truncated":
        data = data[:draw(st.integers(0, len(data) - 1))]
    return ingest_pb2.ArrowRecords(kind=kind, ipc_stream=data)


MODELS = ["risk_heart", "risk_readmission", "forecast_japan", "forecast_us_states", "no_such_model", ""]
INPUT_NAMES = ["features", "history", "x", ""]
DATATYPES = ["FP32", "FP64", "FP16", "INT64", "INT32", "INT8", "UINT8", "BOOL", "BYTES", "BF16", "TEXT", ""]
dims_strategy = st.one_of(st.integers(-2, 70),
                          st.sampled_from([0, 1, 16, 47, 54, 4096, 4097, 2**31, 2**40, 2**62]))


# The default repository's models: (input name, dims after the batch dim).
VALID_INPUTS = {"risk_heart": ("features", [16]), "risk_readmission": ("features", [55]),
                "forecast_japan": ("history", [106, 47]), "forecast_us_states": ("history", [106, 49])}


@st.composite
def near_valid_infer_requests(draw: st.DrawFn) -> service_pb2.ModelInferRequest:
    """A well-formed FP32 request for a real model, then zero to two mutations."""
    model = draw(st.sampled_from(sorted(VALID_INPUTS)))
    name, dims = VALID_INPUTS[model]
    batch = draw(st.integers(1, 3))
    shape = [batch, *dims]
    count = batch * math.prod(dims)
    value = draw(st.sampled_from([b"\x00\x00\x80\x3f", b"\x00\x00\x00\x00", b"\x00\x00\xc0\x7f",
                                  b"\x00\x00\x80\x7f", b"\xff\xff\x7f\x7f"]))  # 1, 0, NaN, inf, max
    raw = value * count
    datatype = "FP32"
    mutations = st.sampled_from(["shape", "bytes", "dtype", "batch", "nan_one"])
    for mutation in draw(st.lists(mutations, max_size=2)):
        if mutation == "shape":
            shape[draw(st.integers(0, len(shape) - 1))] = draw(dims_strategy)
        elif mutation == "bytes":
            raw = raw[:draw(st.integers(0, max(len(raw) - 1, 0)))] + draw(st.binary(max_size=7))
        elif mutation == "dtype":
            datatype = draw(st.sampled_from(DATATYPES))
        elif mutation == "batch":
            shape[0] = draw(st.sampled_from([0, 65, 4096, 4097, 2**31]))
        else:
            at = 4 * draw(st.integers(0, count - 1))
            raw = raw[:at] + b"\x00\x00\xc0\x7f" + raw[at + 4:]
    request = service_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name=name, datatype=datatype, shape=shape)
    request.raw_input_contents.append(raw)
    return request


@st.composite
def garbage_infer_requests(draw: st.DrawFn) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(
        model_name=draw(st.sampled_from(MODELS)),
        model_version=draw(st.sampled_from(["", "1", "2", "0", "-1", "x"])))
    raw = draw(st.booleans())
    for _ in range(draw(st.integers(0, 3))):
        tensor = request.inputs.add(name=draw(st.sampled_from(INPUT_NAMES)),
                                    datatype=draw(st.sampled_from(DATATYPES)),
                                    shape=draw(st.lists(dims_strategy, max_size=4)))
        if not raw:
            contents = draw(st.sampled_from(["fp32_contents", "fp64_contents", "int64_contents",
                                             "int_contents", "bool_contents", "bytes_contents"]))
            values = {"fp32_contents": st.floats(width=32), "fp64_contents": any_float,
                      "int64_contents": st.integers(-(2**63), 2**63 - 1),
                      "int_contents": st.integers(-(2**31), 2**31 - 1), "bool_contents": st.booleans(),
                      "bytes_contents": st.binary(max_size=8)}[contents]
            getattr(tensor.contents, contents).extend(draw(st.lists(values, max_size=40)))
    if raw:  # any count of byte strings, any lengths: often disagreeing with the shapes
        request.raw_input_contents.extend(draw(st.lists(
            st.one_of(st.binary(max_size=64), st.integers(0, 5000).map(lambda n: b"\x00\x00\x80\x3f" * n)),
            max_size=3)))
    for _ in range(draw(st.integers(0, 2))):
        request.outputs.add(name=draw(st.sampled_from(["probability", "forecast", "y", ""])))
    return request


infer_requests = st.one_of(near_valid_infer_requests(), garbage_infer_requests())
