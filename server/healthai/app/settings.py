"""One typed settings object built from flags, environment and a config file.

Precedence: command-line flags > environment (``HEALTHAI_<FIELD>``, nested with ``__``, e.g.
``HEALTHAI_SERVING__ENABLED=false``) > config file (TOML, or YAML when PyYAML is installed;
``--config`` or ``HEALTHAI_CONFIG``) > defaults.

The pseudonym key comes from ``pseudonym_key_file`` or the ``HEALTHAI_PSEUDONYM_KEY`` environment
variable (hex or raw text, at least 16 bytes). Without one the server refuses to start unless
``dev_mode`` is set, which uses a random per-process key (pseudonyms then differ between runs).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from healthai.errors import InvalidInput
from healthai.ingest.kafka.settings import KafkaSettings
from healthai.observability.settings import ObservabilitySettings
from healthai.scenario.settings import ScenarioSettings
from healthai.security.settings import SecuritySettings
from healthai.serving.settings import ServingSettings

log = logging.getLogger(__name__)

ENV_PREFIX = "HEALTHAI_"
KEY_ENV = "HEALTHAI_PSEUDONYM_KEY"
MIN_KEY_BYTES = 16


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    host: str = "127.0.0.1"
    port: int = Field(50051, ge=0, le=65535)  # 0 = pick a free port
    health_port: int | None = Field(None, ge=0, le=65535)  # plaintext health-only port (probes; 0: free)
    max_message_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    max_records_per_request: int = Field(1_000_000, ge=1)
    store_uri: str = "./var/store"  # a local directory or any pyarrow filesystem URI
    pseudonym_key_file: Path | None = None
    dev_mode: bool = False
    snomed_map_nlm: Path | None = None  # NLM SNOMED CT -> ICD-10-CM map release file
    omop_concept: Path | None = None  # OMOP CONCEPT.csv (with omop_concept_relationship)
    omop_concept_relationship: Path | None = None
    # How event dates are stored: "full" (as sent; a limited data set) or "shift" (keyed per-patient
    # offset); under both no stored date equals a full birth date (healthai.normalize.dates).
    date_policy: Literal["full", "shift"] = "full"
    # Births and events after this date are impossible (rejected); None = today (UTC). Set it for a
    # date-shifted research extract, e.g. MIMIC-IV on FHIR, whose dates lie in 2100-2200.
    latest_event_date: dt.date | None = None
    # A sender's own coding system URIs declared as ICD10CM, ICD9CM, SNOMED or LOINC (TOML table
    # [code_systems], "uri" = "ICD10CM"; flag --code-system URI=ICD10CM).
    code_systems: dict[str, Literal["ICD10CM", "ICD9CM", "SNOMED", "LOINC"]] = Field(default_factory=dict)
    shutdown_grace_s: float = Field(10.0, ge=0)
    # Admission control: RPCs in progress at once; beyond it a call is answered RESOURCE_EXHAUSTED at
    # once instead of queueing without bound. None = no limit.
    max_concurrent_rpcs: int | None = Field(None, ge=1)  # calls being handled (health, reflection exempt)
    # Calls that arrived but that the server has not yet picked up (gRPC core's pending queue);
    # beyond it a new call is refused RESOURCE_EXHAUSTED by gRPC core itself. None = gRPC's default.
    max_pending_rpcs: int | None = Field(None, ge=1)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # What Forecast --stored and Scenario's stored calibration read: the store's exact surveillance
    # counts, or only the counts released from it under epsilon-DP per patient (the newest matching
    # `healthai counts --epsilon --store` release; healthai.surveillance.released). The server spends
    # no privacy itself: every release is made, and recorded in the ledger, by the operator.
    stored_counts: Literal["exact", "private"] = "exact"
    # An agency's own case definitions beside the built-in syndromes (TOML [syndromes.NAME] tables:
    # healthai.surveillance.syndrome_file), for Forecast --stored's StoredHistory.syndrome.
    syndromes_file: Path | None = None
    serving: ServingSettings = Field(default_factory=ServingSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
    scenario: ScenarioSettings = Field(default_factory=ScenarioSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)  # `healthai ingest-kafka` only

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v

    @model_validator(mode="after")
    def _one_map(self) -> Settings:
        if (self.omop_concept is None) != (self.omop_concept_relationship is None):
            raise ValueError("omop_concept and omop_concept_relationship must be given together")
        if self.snomed_map_nlm is not None and self.omop_concept is not None:
            raise ValueError("give one SNOMED map: snomed_map_nlm or the OMOP files, not both")
        return self

    def random_key(self, environ: Mapping[str, str] | None = None) -> bool:
        """Whether ``pseudonym_key`` makes up a per-process key (dev mode without a key)."""
        environ = os.environ if environ is None else environ
        return self.pseudonym_key_file is None and not environ.get(KEY_ENV)

    def pseudonym_key(self, environ: Mapping[str, str] | None = None) -> bytes:
        """The HMAC key: file, then env; a random key in dev mode; otherwise InvalidInput."""
        environ = os.environ if environ is None else environ
        raw: bytes | None = None
        if self.pseudonym_key_file is not None:
            try:
                raw = self.pseudonym_key_file.read_bytes().strip()
            except OSError as e:
                raise InvalidInput(f"pseudonym_key_file {str(self.pseudonym_key_file)!r}: {e.strerror}",
                                   field="pseudonym_key_file") from e
        elif environ.get(KEY_ENV):
            raw = environ[KEY_ENV].strip().encode()
        if raw is None:
            if not self.dev_mode:
                raise InvalidInput(
                    f"no pseudonym key: set pseudonym_key_file or {KEY_ENV} (or --dev for a random key)",
                    field="pseudonym_key_file")
            log.warning("dev mode: random per-process pseudonym key; pseudonyms change on restart")
            return secrets.token_bytes(32)
        key = _decode_key(raw)
        if len(key) < MIN_KEY_BYTES:
            raise InvalidInput(f"pseudonym key has {len(key)} bytes; at least {MIN_KEY_BYTES} required",
                               field="pseudonym_key_file")
        return key


def _decode_key(raw: bytes) -> bytes:
    try:
        return bytes.fromhex(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return raw


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse a TOML (``.toml``) or YAML (``.yaml``/``.yml``) settings file into a dict."""
    try:
        text = path.read_text()
    except OSError as e:
        raise InvalidInput(f"config file {str(path)!r}: {e.strerror}", field="config") from e
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml  # type: ignore[import-untyped]
        except ImportError as e:
            raise InvalidInput("YAML config needs PyYAML installed; use TOML instead", field="config") from e
        data = yaml.safe_load(text) or {}
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise InvalidInput(f"config file {str(path)!r}: {e}", field="config") from e
    if not isinstance(data, dict):
        raise InvalidInput(f"config file {str(path)!r} must hold a table of settings", field="config")
    return data


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """``HEALTHAI_PORT=1`` -> {"port": "1"}; ``HEALTHAI_SERVING__ENABLED=0`` -> {"serving": {...}}."""
    names = set(Settings.model_fields)
    skip = {KEY_ENV, "HEALTHAI_CONFIG"}
    out: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or key in skip:
            continue
        path = key[len(ENV_PREFIX):].lower().split("__")
        if path[0] not in names:
            continue
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in top.items():
        if isinstance(v, Mapping) and isinstance(merged.get(k), Mapping):
            merged[k] = _merge(dict(merged[k]), v)
        else:
            merged[k] = v
    return merged


def load_settings(*, config: Path | None = None, environ: Mapping[str, str] | None = None,
                  flags: Mapping[str, Any] | None = None) -> Settings:
    """Build Settings with precedence flags > env > file > defaults. ``flags`` holds only the flags
    the user gave (None values are ignored); nested keys may be dicts (``{"serving": {...}}``)."""
    environ = os.environ if environ is None else environ
    if config is None and environ.get("HEALTHAI_CONFIG"):
        config = Path(environ["HEALTHAI_CONFIG"])
    data: dict[str, Any] = read_config_file(config) if config is not None else {}
    data = _merge(data, env_overrides(environ))
    data = _merge(data, {k: v for k, v in (flags or {}).items() if v is not None})
    return Settings.model_validate(data)
