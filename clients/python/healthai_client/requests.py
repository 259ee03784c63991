"""Request builders: Python values -> ``healthai.v1`` request messages (shared by the SDK, the CLI and
the load harness). Bad arguments raise ValueError naming the argument and the value."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from healthai.v1 import common_pb2, forecast_pb2, ingest_pb2, risk_pb2

KINDS = ("patient", "encounter", "condition", "observation")
RAW_FEATURES_FROM = 256  # score_request: values from which features travel as raw bytes
_FLAT_TYPES = {
    "patients": ingest_pb2.PatientRecord,
    "encounters": ingest_pb2.EncounterRecord,
    "conditions": ingest_pb2.ConditionRecord,
    "observations": ingest_pb2.ObservationRecord,
}


def record_kind(kind: str) -> int:
    k = kind.strip().lower().removesuffix("s")
    if k not in KINDS:
        raise ValueError(f"kind {kind!r} must be one of {', '.join(KINDS)}")
    return int(common_pb2.RecordKind.Value(f"RECORD_KIND_{k.upper()}"))


def outcome_detail(detail: str) -> int:
    """"all" (a RecordOutcome for every record) or "issues" (only records with warnings/rejections)."""
    if detail not in ("all", "issues"):
        raise ValueError(f"outcome_detail {detail!r} must be 'all' or 'issues'")
    return int(ingest_pb2.OutcomeDetail.Value(f"OUTCOME_DETAIL_{detail.upper()}"))


def fhir_request(data: bytes | str | Path, source: str, detail: str = "all") -> ingest_pb2.IngestRequest:
    """``data``: FHIR JSON as bytes, as text (a str starting with ``{`` or ``[``), or a file path
    (``.ndjson``: one resource per line). Errors never repeat the payload (patient data)."""
    if isinstance(data, str) and not data.strip():
        raise ValueError("data: empty (give FHIR JSON text, bytes or a file path)")
    if isinstance(data, str) and data.lstrip("\ufeff \t\r\n")[:1] in ("{", "["):
        data = data.lstrip("\ufeff").encode()
    elif isinstance(data, str) and data.lstrip()[:1] == "<":
        raise ValueError("data: FHIR XML is not supported (send FHIR JSON)")
    elif isinstance(data, str | Path):
        path = Path(data)
        try:
            data = path.read_bytes()
        except (OSError, ValueError) as e:  # ValueError: a NUL in the text
            text = str(path)  # echoed only when it looks like a path, never like a record
            shown = repr(text) if len(text) <= 256 and not set(text) & set('\n<>{}"=') else \
                f"(a str of {len(text)} characters that is neither a path nor JSON text)"
            raise ValueError(f"FHIR file {shown}: {getattr(e, 'strerror', None) or 'not a path'}") from None
        if path.suffix == ".ndjson":  # FHIR bulk export: one resource per line -> a JSON array
            lines = [ln for ln in data.splitlines() if ln.strip()]
            _check_lines(path, data)
            data = b"[" + b",".join(lines) + b"]"
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValueError(f"data must be bytes or a path, got {type(data).__name__}")
    return ingest_pb2.IngestRequest(source=source, fhir=ingest_pb2.FhirPayload(json=bytes(data)),
                                    outcome_detail=outcome_detail(detail))  # type: ignore[arg-type]


def _check_lines(path: Path, data: bytes) -> None:
    """Each line of an NDJSON file is one JSON value: a malformed one is named by its line in the file
    (joined into one array, the server could only name a column of one long line)."""
    bad = []
    for number, line in enumerate(data.splitlines(), 1):
        if line.strip():
            try:
                json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                why = f"{e.msg} at column {e.colno}" if isinstance(e, json.JSONDecodeError) else "not UTF-8"
                bad.append(f"line {number}: malformed JSON ({why})")
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise ValueError(f"FHIR file {str(path)!r}: {'; '.join(bad[:3])}{more}; nothing from this file was "
                         "sent: fix or remove those lines")


def _missing(value: Any) -> bool:
    """None, NaN, pandas' NA / NaT and numpy's NaT: a value that is absent (without importing pandas)."""
    if value is None or type(value).__name__ in ("NAType", "NaTType"):
        return True
    if isinstance(value, float | np.floating):
        return bool(np.isnan(value))
    return isinstance(value, np.datetime64 | np.timedelta64) and bool(np.isnat(value))


_ID_LIKE = ("county", "postal_code")  # with every *_id field: an integral float 25025.0 is "25025"
_BOOL_TEXT = {"true": True, "false": False, "1": True, "0": False}


def _text(key: str, value: Any) -> str:
    """A flat string field: datetimes in ISO 8601 (a tz offset kept; naive as given), integral floats of
    id-like fields (county, postal_code, *_id: what pandas makes of an id column with gaps) as integers."""
    if isinstance(value, np.datetime64):
        return str(np.datetime_as_string(value))
    if isinstance(value, dt.date):  # datetime.date, datetime.datetime and pandas.Timestamp
        return value.isoformat()
    if (isinstance(value, float | np.floating) and float(value).is_integer()
            and (key.endswith("_id") or key in _ID_LIKE)):
        return str(int(value))
    return str(value)


def _typed(field: Any, key: str, value: Any, where: str) -> Any:
    """``value`` as the proto field wants it; a value of the wrong type is a ValueError naming the field
    and the type (never the value: it may be patient data)."""
    if field.type == field.TYPE_BOOL:
        if isinstance(value, bool | np.bool_):
            return bool(value)
        if isinstance(value, int | np.integer) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _BOOL_TEXT:
            return _BOOL_TEXT[value.strip().lower()]
        raise ValueError(f"{where}.{key} must be a bool (or 'true'/'false'), got a {type(value).__name__}")
    if field.type == field.TYPE_DOUBLE:
        if isinstance(value, bool | np.bool_):
            raise ValueError(f"{where}.{key} must be a number, got a {type(value).__name__}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where}.{key} must be a number, got a {type(value).__name__} that is "
                             "not one") from None
    return _text(key, value)


def _record(cls: Any, item: Mapping[str, Any] | Any, where: str) -> Any:
    """One flat record from a dict (e.g. a row of ``DataFrame.to_dict("records")``): missing values
    (None, NaN, pd.NA, NaT) are left out — except a NaN ``value``, which the server reports."""
    if isinstance(item, cls):
        return item
    if not isinstance(item, Mapping):
        raise ValueError(f"{where} must be a dict or {cls.__name__}, got {type(item).__name__}")
    fields = cls.DESCRIPTOR.fields_by_name
    clean = {}
    for key, value in item.items():
        if key not in fields:
            raise ValueError(f"{where}.{key}: not a field of {cls.__name__} ({', '.join(fields)})")
        if _missing(value) and not (key == "value" and isinstance(value, float | np.floating)):
            continue
        clean[key] = _typed(fields[key], key, value, where)
    return cls(**clean)


def flat_request(source: str, detail: str = "all",
                 **lists: Sequence[Mapping[str, Any] | Any]) -> ingest_pb2.IngestRequest:
    flat = ingest_pb2.FlatRecords()
    for name, items in lists.items():
        cls = _FLAT_TYPES[name]
        getattr(flat, name).extend(_record(cls, it, f"{name}[{i}]") for i, it in enumerate(items))
    if not any(len(getattr(flat, n)) for n in _FLAT_TYPES):
        raise ValueError("no records: give patients, encounters, conditions or observations")
    return ingest_pb2.IngestRequest(source=source, flat=flat,
                                    outcome_detail=outcome_detail(detail))  # type: ignore[arg-type]


ARROW_PART_BYTES = 16 * 1024 * 1024  # a message well under the server's (and proxies') size limits
ARROW_PART_ROWS = 1_000_000  # the server's default max_records_per_request (a limit per message)


def arrow_parts(table: Any, max_bytes: int | None = None, max_rows: int | None = None) -> list[Any]:
    """``table`` as slices of at most about ``max_bytes`` (``ARROW_PART_BYTES``) and at most ``max_rows``
    (``ARROW_PART_ROWS``) rows each; itself when it fits."""
    import pyarrow as pa

    max_bytes = max_bytes or ARROW_PART_BYTES
    max_rows = max_rows or ARROW_PART_ROWS
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    if not isinstance(table, pa.Table) or table.num_rows < 2 or (
            table.nbytes <= max_bytes and table.num_rows <= max_rows):
        return [table]
    rows = min(max_rows, max(1, int(table.num_rows * max_bytes / max(table.nbytes, 1))))
    return [table.slice(start, rows) for start in range(0, table.num_rows, rows)]


def arrow_request(table: Any, kind: str, source: str, detail: str = "all") -> ingest_pb2.IngestRequest:
    import pyarrow as pa

    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    if not isinstance(table, pa.Table):
        raise ValueError(f"table must be a pyarrow Table or RecordBatch, got {type(table).__name__}")
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    payload = ingest_pb2.ArrowRecords(kind=record_kind(kind), ipc_stream=sink.getvalue().to_pybytes())  # type: ignore[arg-type]
    return ingest_pb2.IngestRequest(source=source, arrow=payload,
                                    outcome_detail=outcome_detail(detail))  # type: ignore[arg-type]


def stream_item_request(item: Any, source: str, detail: str) -> ingest_pb2.IngestRequest:
    """One IngestStream item: FHIR bytes/path, a (pyarrow table, kind) pair, or flat-record lists."""
    if isinstance(item, bytes | str | Path):
        return fhir_request(item, source, detail)
    if isinstance(item, tuple) and len(item) == 2:
        return arrow_request(item[0], item[1], source, detail)
    if isinstance(item, Mapping):
        unknown = set(item) - set(_FLAT_TYPES)
        if unknown:
            raise ValueError(f"flat item keys {sorted(unknown)} must be among {list(_FLAT_TYPES)}")
        return flat_request(source, detail, **item)
    raise ValueError(f"stream item must be FHIR bytes/path, (table, kind) or a flat-record dict, "
                     f"got {type(item).__name__}")


def stream_requests(items: Any, source: str,
                    detail: str) -> tuple[list[ingest_pb2.IngestRequest], list[tuple[int, int]]]:
    """IngestStream messages for ``items``, with each message's (item index, first row): a
    (table, kind) item over ``ARROW_PART_BYTES`` / ``ARROW_PART_ROWS`` travels as several messages."""
    requests: list[ingest_pb2.IngestRequest] = []
    origin: list[tuple[int, int]] = []
    for i, item in enumerate(items):
        if isinstance(item, tuple) and len(item) == 2:
            start = 0
            for part in arrow_parts(item[0]):
                requests.append(arrow_request(part, item[1], source, detail))
                origin.append((i, start))
                start += getattr(part, "num_rows", 0)
        else:
            requests.append(stream_item_request(item, source, detail))
            origin.append((i, 0))
    return requests, origin


def _diagnoses(items: Sequence[Sequence[str] | Mapping[str, Any]],
               patients: int) -> list[risk_pb2.DiagnosisCodes]:
    if len(items) != patients:
        raise ValueError(f"diagnoses has {len(items)} entries; one per patient ({patients}) is required")
    out = []
    for i, d in enumerate(items):
        if isinstance(d, Mapping):
            out.append(risk_pb2.DiagnosisCodes(codes=list(d.get("codes", ())),
                                               system=str(d.get("system", ""))))
        elif isinstance(d, str):
            raise ValueError(f"diagnoses[{i}] must be a list of codes, got the string {d!r}")
        else:
            out.append(risk_pb2.DiagnosisCodes(codes=list(d)))
    return out


def _number(value: Any, where: str) -> float:
    """A feature value as a float: a missing one (None, NaN, pd.NA, NaT) is NaN, which the model card
    fills (its ``imputation``) or refuses; anything else that is no number is a ValueError naming it."""
    if _missing(value):
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be a number, got a {type(value).__name__} that is not one") from None


def _matrix(features: Any, what: str) -> np.ndarray:
    try:
        return np.asarray(features, dtype=np.float32)
    except (TypeError, ValueError):  # None / pd.NA / numeric text in an object array: value by value
        rows = np.asarray(features, dtype=object)
        if rows.ndim == 1:
            rows = rows[None, :]
        if rows.ndim != 2:
            raise ValueError(f"{what} must be [patients x features], got shape {list(rows.shape)}") from None
        return np.array([[_number(v, f"{what}[{i}][{j}]") for j, v in enumerate(row)]
                         for i, row in enumerate(rows)], dtype=np.float32)


def _is_frame(features: Any) -> bool:
    """A pandas DataFrame (or anything with named columns that converts to numpy), without pandas."""
    return hasattr(features, "columns") and hasattr(features, "to_numpy") and hasattr(features, "__getitem__")


def score_request(model: str, features: Any, *, feature_names: Sequence[str] | None = None,
                  diagnoses: Sequence[Sequence[str] | Mapping[str, Any]] | None = None,
                  top_features: int | None = None, model_version: int = 0,
                  raw: bool | None = None) -> risk_pb2.ScoreRequest:
    """``features``: a list of {feature: value} dicts, a pandas DataFrame (its column names are the
    feature names: any column order), or a 2-D array whose columns are ``feature_names`` — without
    names, the model card's order, which a positional array must then match. Missing values (None,
    NaN, pd.NA) travel as NaN: the card fills or refuses them.

    ``raw``: send ``features_raw`` (little-endian float32 bytes) instead of the packed ``features``
    list; None = raw from RAW_FEATURES_FROM values on (it is much cheaper to build for big batches)."""
    if not model or not isinstance(model, str):
        raise ValueError("model: required (e.g. 'risk_readmission')")
    if isinstance(feature_names, str):
        raise ValueError("feature_names must be a list of names, not one string")
    names = [str(n) for n in (feature_names or ())]
    if _is_frame(features):
        columns = [str(c) for c in features.columns]
        if len(set(columns)) != len(columns):
            raise ValueError("features: the DataFrame has duplicate column names")
        if names:  # the named columns, in that order (other columns are left out)
            missing = [n for n in names if n not in columns]
            if missing:
                raise ValueError(f"feature_names {missing} are not columns of the DataFrame")
            order = [columns.index(n) for n in names]
        else:
            names, order = columns, list(range(len(columns)))
        labels = [list(features.columns)[j] for j in order]
        chosen = features[labels]  # other columns (a patient id) are never converted
        try:
            matrix = np.asarray(chosen.to_numpy(dtype=np.float32, na_value=np.nan), dtype=np.float32)
        except (TypeError, ValueError):  # object columns holding None / pd.NA / text: named per column
            matrix = np.column_stack([_matrix(features[[label]].to_numpy(dtype=object), f"features.{name}")
                                      for label, name in zip(labels, names, strict=True)])
    elif isinstance(features, Sequence) and features and isinstance(features[0], Mapping):
        names = names or [str(k) for k in features[0]]
        rows = []
        for i, row in enumerate(features):
            if not isinstance(row, Mapping):
                raise ValueError(f"features[{i}] must be a dict like features[0], got {type(row).__name__}")
            missing = [n for n in names if n not in row]
            extra = [k for k in row if k not in names]
            if missing or extra:
                raise ValueError(f"features[{i}]: missing {missing} / unexpected {extra} "
                                 f"(every patient needs the same features)")
            rows.append([_number(row[n], f"features[{i}].{n}") for n in names])
        matrix = np.asarray(rows, dtype=np.float32)
    else:
        matrix = _matrix(features, "features")
        if matrix.ndim == 1:
            matrix = matrix[None, :]
    if matrix.ndim != 2 or matrix.shape[0] == 0:
        raise ValueError(f"features must be [patients x features] with at least one patient, got shape "
                         f"{list(matrix.shape)}")
    if names and len(names) != matrix.shape[1]:
        raise ValueError(f"feature_names has {len(names)} names but features have {matrix.shape[1]} columns")
    request = risk_pb2.ScoreRequest(model_name=model, model_version=_count(model_version, "model_version"),
                                    feature_names=names)
    if raw if raw is not None else matrix.size >= RAW_FEATURES_FROM:
        request.features_raw = np.ascontiguousarray(matrix, dtype="<f4").tobytes()
    else:
        request.features.extend(matrix.ravel().tolist())
    if diagnoses is not None:
        request.diagnoses.extend(_diagnoses(diagnoses, matrix.shape[0]))
    if top_features is not None:
        request.top_features = _count(top_features, "top_features")
    return request


def _count(value: Any, name: str) -> int:
    """A whole number >= 0 (bools refused), else a ValueError naming ``name``."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
    return int(value)


HISTORY_FORMS = ("{region: counts oldest first}, (region_ids, [steps x regions]), a read_history() file "
                 "or a pandas DataFrame")


def _series(region: Any, values: Any) -> np.ndarray:
    """One region's counts as float32 [steps]; ValueError naming history and the region otherwise."""
    where = f"history[{region!r}]"
    if isinstance(values, str | bytes | Mapping) or not hasattr(values, "__len__"):
        raise ValueError(f"{where}: counts must be a sequence of numbers oldest first, not a "
                         f"{type(values).__name__}")
    try:
        out = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: counts must be numbers (one is not)") from None
    if out.ndim != 1:
        raise ValueError(f"{where}: counts must be one number per step, got shape {list(out.shape)}")
    return out


def history_counts(history: Any) -> tuple[list[str], np.ndarray]:
    """(region ids, float32 [steps x regions]) of an explicit forecast history; ValueError naming
    ``history`` (and the region) for any other shape."""
    if isinstance(history, Mapping):
        ids = list(history)
        series = [_series(r, history[r]) for r in ids]
        if len({len(s) for s in series}) > 1:
            raise ValueError("history: every region needs the same number of steps")
        counts = np.stack(series, axis=1) if series else np.zeros((0, 0), np.float32)
    elif isinstance(history, tuple | list) and len(history) == 2 and not isinstance(history[0], str | bytes):
        try:
            ids = list(history[0])
        except TypeError:
            raise ValueError(f"history: region_ids must be a sequence, not a {type(history[0]).__name__}") \
                from None
        try:
            counts = np.asarray(history[1], dtype=np.float32)
        except (TypeError, ValueError):
            raise ValueError("history: counts must be numbers [steps x regions] (one is not)") from None
    else:
        raise ValueError(f"history: a {type(history).__name__} is not a history; give {HISTORY_FORMS}")
    bad = [r for r in ids if not isinstance(r, str)]
    if bad:
        raise ValueError(f"history: region ids must be strings, got a {type(bad[0]).__name__}")
    if counts.ndim != 2 or counts.shape[1] != len(ids):
        raise ValueError(f"history counts must be [steps x {len(ids)} regions], got {list(counts.shape)}")
    return ids, counts


def forecast_request(graph: str | None, *, model: str | None = None,
                     history: Mapping[str, Sequence[float]] | tuple[Sequence[str], Any] | None = None,
                     stored: str | bool | None = None, end_date: str | None = None,
                     regions: Sequence[str] = (), horizons: Sequence[int] = (),
                     quantile_levels: Sequence[float] = (),
                     model_version: int = 0,
                     allow_missing_regions: bool = False,
                     nowcast: bool = False) -> forecast_pb2.ForecastRequest:
    if not graph and not model:
        raise ValueError("give graph (e.g. 'japan') or model")
    if (history is None) == (not stored):
        raise ValueError("give exactly one of history (explicit counts) or stored (stored counts)")
    if nowcast and not stored:
        raise ValueError("nowcast corrects stored counts for reporting delay: it needs stored")
    request = forecast_pb2.ForecastRequest(graph=graph or "", model_name=model or "",
                                           model_version=model_version, region_ids=list(regions),
                                           horizons=[int(h) for h in horizons],
                                           quantile_levels=[float(q) for q in quantile_levels])
    if history is not None:
        ids, counts = history_counts(history)
        request.history.CopyFrom(forecast_pb2.History(region_ids=ids, counts=counts.ravel().tolist()))
    else:
        syndrome = stored if isinstance(stored, str) else ""
        request.stored.CopyFrom(forecast_pb2.StoredHistory(syndrome=syndrome, end_date=end_date or "",
                                                           allow_missing_regions=allow_missing_regions,
                                                           nowcast=nowcast))
    return request


def load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as e:
        raise ValueError(f"{str(path)!r}: {e.strerror}") from e
    except json.JSONDecodeError as e:
        raise ValueError(f"{str(path)!r} is not JSON: {e}") from e
