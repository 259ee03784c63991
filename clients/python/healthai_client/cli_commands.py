"""The handlers of ``healthai-client`` subcommands: build a Client, call, print text or JSON."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as dt
import json
import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from healthai_client.client import Client
from healthai_client.cohort_table import read_cohort_rows, score_rows, write_scores
from healthai_client.history_file import HistoryWeekWarning, numeric_first_row, read_history
from healthai_client.plotting import require_plotting
from healthai_client.requests import KINDS, load_json
from healthai_client.results import ForecastResult, IngestResult, ScoreResult
from healthai_client.retry import RetryPolicy

TABULAR = {".csv", ".parquet", ".arrow", ".arrows", ".ipc", ".feather"}


def make_client(args: argparse.Namespace) -> Client:
    if args.retries < 0:
        raise ValueError(f"--retries must be >= 0, got {args.retries}")
    return Client(args.address, tls=args.tls, root_cert=args.root_cert, client_cert=args.client_cert,
                  client_key=args.client_key, server_name=args.server_name, api_key=args.api_key,
                  timeout=args.timeout, retry=RetryPolicy(max_attempts=args.retries + 1))


def _to_jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not f.name.startswith("_")}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple | list):
        return [_to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_jsonable(v) for k, v in value.items()}
    return value


def print_json(value: Any) -> None:
    print(json.dumps(_to_jsonable(value), indent=2))


# -- health -----------------------------------------------------------------------------------------

def health(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        status = client.health(args.service)
    if args.json:
        print_json({"service": args.service, "status": status})
    else:
        print(f"{args.service or 'server'}: {status}")
    return 0 if status == "SERVING" else 3


# -- ingest -----------------------------------------------------------------------------------------

def _kind_for(path: Path, given: str | None) -> str:
    if given:
        return given
    stem = path.stem.lower()
    for kind in KINDS:
        if stem.startswith(kind) or stem.endswith(kind) or stem.endswith(kind + "s"):
            return kind
    raise ValueError(f"{str(path)!r}: cannot tell the record kind from the name; pass --kind "
                     f"({', '.join(KINDS)})")


def _read_table(path: Path) -> Any:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    suffix = path.suffix.lower()
    if suffix == ".csv":
        # every column as text: the server parses ids, codes and dates itself; an empty cell is no value
        # (null), as in every CSV export, not an empty string the server would judge as one
        with path.open(newline="") as f:
            names = next(csv.reader(f), [])
        types = {n: pa.string() for n in names if n != "value"}
        return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
            column_types=types, strings_can_be_null=True, null_values=[""]))
    if suffix == ".parquet":
        return pq.read_table(path)
    with pa.OSFile(str(path), "rb") as f:
        try:
            return pa.ipc.open_stream(f).read_all()
        except pa.ArrowInvalid:
            f.seek(0)
            return pa.ipc.open_file(f).read_all()


def _stream_item(path: Path, args: argparse.Namespace) -> Path | tuple[Any, str]:
    if not path.is_file():
        raise ValueError(f"{str(path)!r}: no such file")
    if path.suffix.lower() in TABULAR:
        return _read_table(path), _kind_for(path, args.kind)
    return path


def _ingest_one(client: Client, path: Path, args: argparse.Namespace) -> IngestResult:
    detail = "issues" if args.issues_only else "all"
    item = _stream_item(path, args)
    if isinstance(item, tuple):
        return client.ingest_arrow(item[0], item[1], source=args.source, outcome_detail=detail)
    return client.ingest_fhir(item, source=args.source, outcome_detail=detail)


def _print_ingest(path: Path, r: IngestResult, show: int) -> None:
    stored = ", ".join(f"{k}={v}" for k, v in sorted(r.stored.items())) or "nothing new"
    print(f"{path}: {r.accepted} accepted, {r.rejected} rejected; stored {stored}; "
          f"{r.duplicates} duplicates; batch {r.batch_id} seq {r.sequence}")
    again = sum(any(i.code == "ALREADY_STORED" for i in o.issues) for o in r.outcomes)
    if again:
        print(f"  {again} already stored from this source (not stored again)")
    revised = sum(any(i.code == "REVISED" for i in o.issues) for o in r.outcomes)
    if revised:
        print(f"  {revised} stored as a new version of a record already stored (replacing it)")
    warned = sum(s == "accepted_with_warnings" for s in r.statuses)
    if warned:
        codes = Counter(i.code for o in r.outcomes if o.status == "accepted_with_warnings" for i in o.issues
                        if i.code not in ("ALREADY_STORED", "REVISED"))
        top = ", ".join(f"{code} {n}" for code, n in codes.most_common(5))
        print(f"  {warned} accepted with warnings" + (f" ({top})" if top else ""))
    for o in r.rejected_outcomes()[:show]:
        errors = [i for i in o.issues if i.severity == "error"] or list(o.issues)  # the causes first
        for issue in errors:
            print(f"  rejected #{o.index} {o.resource_type}: {issue.code} at {issue.field_path}: "
                  f"{issue.message}")
        if len(o.issues) > len(errors):
            print(f"    (and {len(o.issues) - len(errors)} warning(s) on it; --json for all)")
    if r.rejected > show:
        print(f"  ... {r.rejected - show} more rejected (use --json for all)")


def _ingest_stream(args: argparse.Namespace) -> int:
    items = [_stream_item(path, args) for path in args.files]
    with make_client(args) as client:
        r = client.ingest_stream(items, source=args.source,
                                 outcome_detail="issues" if args.issues_only else "all")
    if args.json:
        print_json(r)
    else:
        _print_ingest(Path(f"{len(items)} files in one stream"), r, args.show)
        rejected = Counter(o.request_index for o in r.rejected_outcomes())
        for i, n in sorted(rejected.items()):
            print(f"  {args.files[i]}: {n} rejected")
    return 1 if r.rejected else 0


def ingest(args: argparse.Namespace) -> int:
    if args.stream:
        return _ingest_stream(args)
    results: dict[str, IngestResult] = {}
    with make_client(args) as client:
        for path in args.files:
            results[str(path)] = r = _ingest_one(client, path, args)
            if not args.json:
                _print_ingest(path, r, args.show)
    if args.json:
        print_json(results)
    return 1 if any(r.rejected for r in results.values()) else 0


# -- score ------------------------------------------------------------------------------------------

def _score_input(args: argparse.Namespace) -> tuple[list[dict[str, float]], list[list[str]] | None]:
    if args.input and args.set:
        raise ValueError("give --input or --set, not both")
    if args.set:
        row = {}
        for item in args.set:
            name, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--set {item!r} must be NAME=VALUE")
            if name.strip() in row:
                raise ValueError(f"--set names {name.strip()!r} twice; give each feature once")
            row[name.strip()] = float(value)
        return [row], None
    if not args.input:
        raise ValueError("give --input FILE or --set NAME=VALUE")
    if args.input.suffix.lower() == ".csv":
        raw = _read_score_csv(args.input)
    else:
        raw = load_json(args.input)
        if isinstance(raw, dict):
            raw = [raw]
    if not isinstance(raw, list) or not raw or not all(isinstance(r, dict) for r in raw):
        raise ValueError(f"{str(args.input)!r} must hold patients: a list of {{feature: value}} objects")
    diagnoses = None
    if any("diagnoses" in r for r in raw):
        diagnoses = [_codes(r.pop("diagnoses", "")) for r in raw]
    missing_cells = {"", "na", "nan", "null"}  # sent as NaN: the server fills it where the card allows
    rows = []
    for i, r in enumerate(raw):
        row = {}
        for k, v in r.items():
            if v is None or (isinstance(v, str) and v.strip().lower() in missing_cells):
                row[k] = float("nan")  # else the server names the feature and how to send it
                continue
            try:
                row[k] = float(v)
            except (TypeError, ValueError):
                raise ValueError(f"{args.input}: patient {i}, feature {k!r}: {v!r} is not a number (a "
                                 "missing value: an empty cell, NA or null)") from None
        rows.append(row)
    return rows, diagnoses


def _read_score_csv(path: Path) -> list[dict[str, Any]]:
    """Patients of a CSV, one per row: ValueError for a header naming a column twice or none, and for a
    row with more or fewer cells than the header (a cell is never dropped or guessed)."""
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        seen: set[str] = set()
        for j, name in enumerate(header):
            if not name.strip():
                raise ValueError(f"{str(path)!r}: header column {j + 1} has no name")
            if name in seen:
                raise ValueError(f"{str(path)!r}: header names column {name!r} twice (columns "
                                 f"{header.index(name) + 1} and {j + 1}); give each feature once")
            seen.add(name)
        rows = []
        for cells in reader:
            if not cells:
                continue  # a blank line
            if len(cells) != len(header):
                raise ValueError(f"{str(path)!r}: line {reader.line_num} has {len(cells)} cells for the "
                                 f"{len(header)} columns of the header")
            rows.append(dict(zip(header, cells, strict=True)))
    return rows


def _codes(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(c) for c in value]
    return [c.strip() for c in str(value or "").split(";") if c.strip()]


def _print_score(r: ScoreResult) -> None:
    print(f"model {r.model_name} v{r.model_version}")
    print(f"{'patient':>7}  {'probability':>11}  {'band':<8} {'charlson':>8}  top features")
    for i, p in enumerate(r.patients):
        charlson = "n/a" if p.charlson_index is None else str(p.charlson_index)
        top = ", ".join(f"{n} {c:+.3f}" for n, c in p.top_features)
        print(f"{i:>7}  {p.probability:>11.4f}  {p.risk_band:<8} {charlson:>8}  {top}")


def score(args: argparse.Namespace) -> int:
    if args.table or args.spec:
        if not (args.table and args.spec) or args.input or args.set:
            raise ValueError("--table needs --spec (and neither goes with --input or --set)")
        cohort = read_cohort_rows(args.table, args.spec)
        with make_client(args) as client:
            r = score_rows(client, args.model, cohort, batch=args.batch, top_features=args.top,
                           model_version=args.model_version)
        ids = cohort.patient_ids
    else:
        rows, diagnoses = _score_input(args)
        with make_client(args) as client:
            r = client.score(args.model, rows, diagnoses=diagnoses, top_features=args.top,
                             model_version=args.model_version)
        ids = None
    if args.out:
        n = write_scores(args.out, r, ids)
        print(f"wrote {n} scores to {args.out}", file=sys.stderr)
    elif args.json:
        print_json(r)
    else:
        _print_score(r)
    return 0


# -- forecast ---------------------------------------------------------------------------------------

def _csv_list(text: str, cast: type) -> list[Any]:
    try:
        return [cast(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise ValueError(f"cannot parse {text!r} as a comma-separated list of {cast.__name__}") from e


def _ended_already(r: ForecastResult) -> str:
    """The last day of horizon 1's period when it is before today (UTC): a stored window that stops
    where the store's data stops, not at the latest period; else ""."""
    if not r.first_forecast_period:
        return ""
    from healthai_client.exchange import STEP_DAYS

    last_day = STEP_DAYS.get(r.step or "W", 7) - 1
    end = dt.date.fromisoformat(r.first_forecast_period) + dt.timedelta(days=last_day)
    return end.isoformat() if end < dt.datetime.now(dt.UTC).date() else ""


def _print_forecast(r: ForecastResult) -> None:
    start = f"; horizon 1 = {r.first_forecast_period}" if r.first_forecast_period else ""
    print(f"model {r.model_name} v{r.model_version}; step {r.step or '?'}{start}")
    levels = "  ".join(f"q{lvl:g}" for lvl in r.quantile_levels)
    print(f"{'region':<12} {'h':>3} {'point':>10}  {levels}")
    for ri, region in enumerate(r.region_ids):
        for hi, h in enumerate(r.horizons):
            qs = "  ".join(f"{v:.2f}" for v in r.quantiles[hi, ri])
            print(f"{region:<12} {h:>3} {r.point[hi, ri]:>10.2f}  {qs}")


def _region_ids(path: Path) -> tuple[str, ...]:
    from healthai.surveillance.matrix_file import read_region_ids  # errors are ValueErrors

    return read_region_ids(path)[0]


def forecast(args: argparse.Namespace) -> int:
    from healthai_client.exchange import (
        fips_locations,
        plot_forecast,
        plot_regions,
        reference_date,
        write_hubverse,
    )

    if args.plot:
        require_plotting("--plot")
    history = None
    with make_client(args) as client:
        if args.history:
            known = None
            if numeric_first_row(args.history):  # numeric region ids (FIPS) or a headerless matrix?
                regions = client.regions(args.graph, model=args.model, model_version=args.model_version)
                known = [r["id"] for r in regions] + [a for r in regions for a in r["aliases"]]
            ids = _region_ids(args.region_ids) if getattr(args, "region_ids", None) else None
            history = read_history(args.history, negatives=args.negatives, region_ids=ids,
                                   missing=getattr(args, "missing", "refuse"),
                                   columns=getattr(args, "columns", None),
                                   target=getattr(args, "history_target", None),
                                   exclude=getattr(args, "exclude_regions", ()), known_regions=known)
            if history.filled:
                last = (f"; last period filled for {', '.join(history.filled_last)}" if history.filled_last
                        else "")
                print(f"filled {history.filled} missing cells by interpolation in time{last}",
                      file=sys.stderr)
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always", HistoryWeekWarning)
            r = client.forecast(args.graph, model=args.model, history=history,
                                stored=args.stored if history is None else None, end_date=args.end_date,
                                regions=_csv_list(args.regions, str), horizons=_csv_list(args.horizons, int),
                                quantile_levels=_csv_list(args.quantiles, float),
                                model_version=args.model_version,
                                allow_missing_regions=args.allow_missing_regions,
                                nowcast=getattr(args, "nowcast", False))
        for w in said:
            print(f"warning: {w.message}", file=sys.stderr)
        locations = None
        if args.hubverse:
            reference_date(r, args.reference_date)  # fail before writing anything
            if getattr(args, "hubverse_location", "id") == "fips":
                locations = fips_locations(client.regions(model=r.model_name, model_version=r.model_version))
    print_json(r) if args.json else _print_forecast(r)
    for c in r.coverage:
        if not c["first_stored_period"]:
            print(f"warning: {c['region_id']}: no stored counts; its input was zeros", file=sys.stderr)
        elif c["covered_periods"] < c["window_periods"]:
            print(f"warning: {c['region_id']}: stored counts cover {c['covered_periods']} of the "
                  f"{c['window_periods']} window periods (from {c['first_stored_period']})", file=sys.stderr)
    if history is None and not args.end_date and (stale := _ended_already(r)):
        print(f"warning: horizon 1 ({r.first_forecast_period}) ended on {stale}, before today: the store's "
              "latest case is in the period before it. Ingest newer data, or give --end-date to forecast "
              "from a later period (its days with no case count as zeros)", file=sys.stderr)
    added = sum(c.get("nowcast_added", 0.0) for c in r.coverage)
    if getattr(args, "nowcast", False):
        print(f"nowcast: {added:.1f} cases not stored yet added to the window's latest periods",
              file=sys.stderr)
    if args.hubverse:
        n = write_hubverse(r, args.hubverse, target=hubverse_target(args.target, args.stored, history),
                           reference=args.reference_date,
                           locations=locations)
        print(f"wrote {n} hubverse rows to {args.hubverse}", file=sys.stderr)
    if args.plot:
        chosen = [x.strip() for x in args.plot_regions.split(",") if x.strip()]
        regions = plot_regions(r, chosen)
        if len(regions) < len(r.region_ids):
            print(f"--plot draws {len(regions)} of {len(r.region_ids)} regions"
                  + ("" if chosen else " (the busiest; --plot-regions chooses)"), file=sys.stderr)
        plot_forecast(r, args.plot, regions)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def hubverse_target(target: str | None, stored: str | None, history: object) -> str:
    """``--target``, else ``inc <syndrome>`` of the stored counts forecast, else ``inc ili``."""
    if target:
        return target
    return f"inc {stored}" if history is None and stored else "inc ili"


def regions(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        info = client.model_info(args.graph, model=args.model, model_version=args.model_version)
    if args.json:
        print_json(info)
        return 0
    weeks = f" (weeks start {info['week_start']})" if info["week_start"] else ""
    print(f"# {info['model_name']} v{info['model_version']}: step {info['step']}{weeks}, window "
          f"{info['window']}, horizons {', '.join(map(str, info['horizons']))}")
    for r in info["regions"]:
        aliases = f"  ({', '.join(r['aliases'])})" if r["aliases"] else ""
        print(f"{r['id']:<16} {r['name']}{aliases}")
    return 0
