"""``healthai serve``: parse settings (flags > env > file > defaults) and run the server."""

from __future__ import annotations

import argparse
import difflib
import logging
import sys
from pathlib import Path
from typing import Any

from healthai.errors import HealthAIError

log = logging.getLogger(__name__)


def _uri_equals_name(value: str) -> tuple[str, str]:
    uri, sep, name = value.rpartition("=")
    if not sep or not uri or not name:
        raise argparse.ArgumentTypeError(f"{value!r}: expected URI=NAME, e.g. urn:oid:1.2.3=ICD10CM")
    return uri, name.strip().upper()


def add_normalize_flags(p: argparse.ArgumentParser) -> None:
    """Flags of the normalizer shared by ``serve`` and ``ingest-kafka``."""
    p.add_argument("--latest-event-date", help="births and events after this date (YYYY-MM-DD) are rejected "
                   "as impossible (default: today, UTC); for date-shifted extracts such as MIMIC-IV on FHIR")
    p.add_argument("--code-system", action="append", metavar="URI=NAME", type=_uri_equals_name,
                   help="declare a sender's coding system URI as ICD10CM, ICD9CM, SNOMED or LOINC "
                   "(repeatable)")


def normalize_flags(args: argparse.Namespace) -> dict[str, Any]:
    flags: dict[str, Any] = {}
    if args.latest_event_date is not None:
        flags["latest_event_date"] = args.latest_event_date
    if args.code_system:
        flags["code_systems"] = dict(args.code_system)
    return flags


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    """Only the flags the user gave (argparse defaults are None), as Settings fields."""
    names = ("host", "port", "health_port", "max_message_bytes", "max_records_per_request", "store_uri",
             "pseudonym_key_file", "snomed_map_nlm", "omop_concept", "omop_concept_relationship",
             "shutdown_grace_s", "max_concurrent_rpcs", "max_pending_rpcs", "log_level", "date_policy",
             "stored_counts", "syndromes_file")
    flags: dict[str, Any] = {name: getattr(args, name) for name in names}
    flags.update(normalize_flags(args))
    if args.dev:
        flags["dev_mode"] = True
    security = {k: v for k, v in (("tls_cert_file", args.tls_cert), ("tls_key_file", args.tls_key),
                                  ("tls_client_ca_file", args.tls_client_ca),
                                  ("api_keys_file", args.api_keys)) if v is not None}
    if args.require_client_cert:
        security["require_client_cert"] = True
    if security:
        flags["security"] = security
    observability = {k: v for k, v in (("metrics_port", args.metrics_port),
                                       ("audit_log_file", args.audit_log_file)) if v is not None}
    if observability:
        flags["observability"] = observability
    serving: dict[str, Any] = {}
    if args.serving is not None:
        serving["enabled"] = args.serving
    if args.model_repository is not None:
        serving["model_repository"] = args.model_repository
    if serving:
        flags["serving"] = serving
    return flags


def _describe(error: Any) -> str:
    """One line per problem (``security: tls_client_ca_file (--tls-client-ca) needs TLS: ...``),
    without pydantic's echo of the input values (which may hold file paths of secrets)."""
    lines = []
    for e in error.errors():
        where = ".".join(str(part) for part in e["loc"]) or "settings"
        if e["type"] == "extra_forbidden":  # a misspelt key, at the top or in a [section]: never ignored
            lines.append(f"  {where}: unknown setting{_did_you_mean(e['loc'])}")
            continue
        lines.append(f"  {where}: {e['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)


def _did_you_mean(loc: tuple[Any, ...]) -> str:
    """`` (did you mean 'api_keys_file'?)`` for the settings section a misspelt key sits in."""
    from pydantic import BaseModel

    from healthai.app.settings import Settings

    model: type[BaseModel] = Settings
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def settings_or_none(command: str, config: Path | None, flags: dict[str, Any]) -> Any:
    """The settings of ``healthai <command>``, or None after saying on stderr why they are invalid
    (the caller exits 2)."""
    from pydantic import ValidationError

    from healthai.app.settings import load_settings

    try:
        return load_settings(config=config, flags=flags)
    except ValidationError as e:
        print(f"healthai {command}: invalid settings:\n{_describe(e)}", file=sys.stderr)
    except HealthAIError as e:
        print(f"healthai {command}: {e.message}", file=sys.stderr)
    return None


def _serve(args: argparse.Namespace) -> int:
    from healthai.app.main import serve

    settings = settings_or_none("serve", args.config, _flags(args))
    if settings is None:
        return 2
    try:
        return serve(settings, port_file=args.port_file)
    except HealthAIError as e:  # start-up refused (no pseudonym key, unreadable map, port in use)
        log.error("cannot start: %s", e.message)
        return 2
    except ValueError as e:  # a setting's file refused at start-up (TLS pair, API keys): the message names it
        log.debug("start-up refused", exc_info=True)
        log.error("cannot start: %s", e)
        return 2


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the gRPC server (Ingest + serving plugins, health, reflection)")
    p.add_argument("--config", type=Path, help="settings file (TOML, or YAML with PyYAML)")
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="bind port (default 50051; 0 picks a free one)")
    p.add_argument("--health-port", type=int,
                   help="extra plaintext port serving only grpc.health.v1 (0 picks a free one: logged)")
    p.add_argument("--port-file", type=Path, help="write the bound port here once serving")
    p.add_argument("--max-message-bytes", type=int)
    p.add_argument("--max-records-per-request", type=int)
    p.add_argument("--store-uri", help="store root: a directory or a pyarrow filesystem URI")
    p.add_argument("--pseudonym-key-file", type=Path, help="HMAC key file (or env HEALTHAI_PSEUDONYM_KEY)")
    p.add_argument("--dev", action="store_true", help="development: random pseudonym key if none is set")
    p.add_argument("--snomed-map-nlm", type=Path, help="NLM SNOMED CT -> ICD-10-CM map release file")
    p.add_argument("--omop-concept", type=Path, help="OMOP CONCEPT file")
    p.add_argument("--omop-concept-relationship", type=Path, help="OMOP CONCEPT_RELATIONSHIP file")
    p.add_argument("--shutdown-grace-s", type=float, help="seconds to drain in-flight calls on SIGTERM")
    p.add_argument("--date-policy", choices=("full", "shift"),
                   help="event dates: as sent (full, default) or a keyed per-patient shift")
    p.add_argument("--stored-counts", choices=("exact", "private"),
                   help="what Forecast --stored and Scenario stored calibration read: exact counts "
                        "(default) or only those released under DP (healthai counts --epsilon)")
    p.add_argument("--syndromes-file", type=Path,
                   help="TOML file of your own syndromes ([syndromes.NAME]: icd10, snomed, lab_loinc) beside "
                        "the built-in ones, for Forecast --stored")
    add_normalize_flags(p)
    p.add_argument("--max-concurrent-rpcs", type=int,
                   help="admission control: calls beyond this many in progress get RESOURCE_EXHAUSTED")
    p.add_argument("--max-pending-rpcs", type=int,
                   help="admission control: calls waiting to be picked up beyond this are refused by gRPC "
                   "core (the caller sees CANCELLED)")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    p.add_argument("--serving", action=argparse.BooleanOptionalAction, default=None,
                   help="mount the Risk/Forecast/KServe services (default: settings.serving.enabled)")
    p.add_argument("--model-repository", type=Path, help="model repository (Triton layout) to serve")
    p.add_argument("--tls-cert", type=Path, help="server certificate (PEM); enables TLS")
    p.add_argument("--tls-key", type=Path, help="server private key (PEM)")
    p.add_argument("--tls-client-ca", type=Path, help="CA bundle for client certificates (mTLS)")
    p.add_argument("--require-client-cert", action="store_true", help="mTLS: refuse clients without one")
    p.add_argument("--api-keys", type=Path, help="API key file (hashed; `healthai keys create`)")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port")
    p.add_argument("--audit-log-file", type=Path,
                   help="audit JSON lines to this file (logrotate-safe); default stdout")
    p.set_defaults(func=_serve)
