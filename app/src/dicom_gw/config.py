"""The gateway's one settings object.

Settings come from a TOML file (default ``/etc/dicom-gw/gateway.toml``; the ``--config`` flag or
``DICOM_GW_CONFIG`` choose another) and ``DICOM_GW_*`` environment variables, which win over the
file. Nested keys use a double underscore: ``DICOM_GW_DICOM__PORT=104`` sets ``dicom.port``.
Every field is documented in ``docs/configuration.md``.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

DEFAULT_CONFIG_PATH = Path("/etc/dicom-gw/gateway.toml")
CONFIG_ENV_VAR = "DICOM_GW_CONFIG"

AETitle = Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[\x20-\x5b\x5d-\x7e]+$")]
"""PS3.5 AE VR: at most 16 characters of the default repertoire, no backslash."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AllowedCaller(_Section):
    """A calling AE title allowed to associate, optionally only from given networks."""

    ae_title: AETitle
    networks: list[str] = Field(default_factory=list)

    @field_validator("ae_title")
    @classmethod
    def _strip(cls, value: str) -> str:
        # PS3.8 9.3.2: leading and trailing spaces of an AE title are not significant.
        stripped = value.strip()
        if not stripped:
            raise ValueError("AE title must not be blank")
        return stripped

    @field_validator("networks")
    @classmethod
    def _networks_parse(cls, value: list[str]) -> list[str]:
        for network in value:
            ipaddress.ip_network(network, strict=False)
        return value


class DicomTLS(_Section):
    """DICOM over TLS per PS3.15 Annex B.12 (BCP 195): TLS 1.2 minimum, 1.3 preferred."""

    enabled: bool = False
    port: int = Field(default=2762, ge=1, le=65535)
    certificate: Path | None = None
    private_key: Path | None = None
    ca_certificate: Path | None = None
    require_client_certificate: bool = False

    @model_validator(mode="after")
    def _files_when_enabled(self) -> DicomTLS:
        if self.enabled and (self.certificate is None or self.private_key is None):
            raise ValueError("certificate and private_key are required when TLS is enabled")
        if self.require_client_certificate and self.ca_certificate is None:
            raise ValueError("ca_certificate is required to verify client certificates")
        return self


class DicomSettings(_Section):
    ae_title: AETitle = "DICOM_GW"
    bind_address: str = "0.0.0.0"
    port: int = Field(default=11112, ge=1, le=65535)
    processes: int = Field(default=0, ge=0, le=64)
    max_associations: int = Field(default=16, ge=1, le=1000)
    require_called_ae_title: bool = True
    allow_any_caller: bool = False
    allowed_callers: list[AllowedCaller] = Field(default_factory=list)
    acse_timeout_seconds: float = Field(default=30, gt=0)
    dimse_timeout_seconds: float = Field(default=120, gt=0)
    network_timeout_seconds: float = Field(default=120, gt=0)
    tls: DicomTLS = Field(default_factory=DicomTLS)

    @field_validator("bind_address")
    @classmethod
    def _address(cls, value: str) -> str:
        ipaddress.ip_address(value)
        return value

    def receiver_processes(self) -> int:
        return self.processes or (os.cpu_count() or 1)


class StorageSettings(_Section):
    root: Path = Path("/var/lib/dicom-gw/storage")
    disk_watermark_percent: float = Field(default=90.0, gt=0, le=100)
    fsync: bool = True

    @field_validator("root")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError("must be an absolute path")
        return value


class DatabaseSettings(_Section):
    url: str = ""
    password_file: Path | None = None
    pool_size: int = Field(default=8, ge=1, le=200)
    connect_timeout_seconds: float = Field(default=5, gt=0)

    @field_validator("url")
    @classmethod
    def _postgres_only(cls, value: str) -> str:
        if value and not value.startswith(("postgresql://", "postgresql+psycopg://")):
            raise ValueError("must be a postgresql:// URL")
        return value


class IngestSettings(_Section):
    workers: int = Field(default=1, ge=1, le=64)
    batch_size: int = Field(default=32, ge=1, le=1000)
    # Added to the ingest process's nice value: with the CPU saturated, answering the senders
    # (the receivers) comes first and indexing catches up, as the files are already durable.
    nice: int = Field(default=10, ge=0, le=19)
    lease_seconds: float = Field(default=60, gt=0)
    max_attempts: int = Field(default=5, ge=1, le=100)
    poll_interval_seconds: float = Field(default=5, gt=0)
    recovery_grace_seconds: float = Field(default=300, ge=0)
    reconcile_interval_seconds: float = Field(default=300, gt=0)


class ForwardSettings(_Section):
    workers: int = Field(default=1, ge=1, le=64)
    lease_seconds: float = Field(default=120, gt=0)
    poll_interval_seconds: float = Field(default=5, gt=0)
    acse_timeout_seconds: float = Field(default=30, gt=0)
    dimse_timeout_seconds: float = Field(default=120, gt=0)
    network_timeout_seconds: float = Field(default=60, gt=0)


class DbPoolSettings(_Section):
    batch_max_rows: int = Field(default=1000, ge=1, le=100_000)
    flush_interval_seconds: float = Field(default=1.0, gt=0, le=3600)
    segment_max_records: int = Field(default=500, ge=1, le=100_000)


class CleanupSettings(_Section):
    enabled: bool = True
    retention_hours: float = Field(default=168, ge=0)
    interval_seconds: float = Field(default=60, gt=0)
    emergency_start_percent: float = Field(default=85, gt=0, le=100)
    emergency_target_percent: float = Field(default=80, gt=0, le=100)
    batch_size: int = Field(default=500, ge=1, le=100_000)

    @model_validator(mode="after")
    def _target_below_start(self) -> CleanupSettings:
        if self.emergency_target_percent >= self.emergency_start_percent:
            raise ValueError("emergency_target_percent must be below emergency_start_percent")
        return self


class ApiSettings(_Section):
    bind_address: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    socket: Path | None = None  # a Unix socket instead of bind_address:port (behind nginx)
    workers: int = Field(default=2, ge=1, le=64)
    ui_dir: Path | None = None  # built UI served at / (make run); nginx serves it in production
    max_body_bytes: int = Field(default=600 * 1024 * 1024, ge=1024)


class AuthSettings(_Section):
    jwt_key_file: Path = Path("/etc/dicom-gw/secrets/jwt.key")
    access_token_minutes: float = Field(default=15, gt=0, le=24 * 60)
    refresh_token_hours: float = Field(default=12, gt=0, le=90 * 24)
    max_failed_logins: int = Field(default=5, ge=1, le=100)
    lockout_minutes: float = Field(default=15, gt=0)
    password_min_length: int = Field(default=12, ge=8, le=256)


class AuditSettings(_Section):
    syslog_host: str | None = None  # forward each entry as RFC 5424 syslog when set
    syslog_port: int = Field(default=514, ge=1, le=65535)
    syslog_protocol: Literal["udp", "tcp"] = "udp"


class SecuritySettings(_Section):
    phi_key_file: Path = Path("/etc/dicom-gw/secrets/phi.key")


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = "json"


class RunSettings(_Section):
    """Only for ``dicom-gw run``: where the all-in-one mode keeps its private state."""

    state_dir: Path = Path("var")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DICOM_GW_", env_nested_delimiter="__", extra="forbid"
    )

    dicom: DicomSettings = Field(default_factory=DicomSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    forward: ForwardSettings = Field(default_factory=ForwardSettings)
    dbpool: DbPoolSettings = Field(default_factory=DbPoolSettings)
    cleanup: CleanupSettings = Field(default_factory=CleanupSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    run: RunSettings = Field(default_factory=RunSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file arrives as init values; the environment must win over it.
        return (env_settings, init_settings)

    def database_password(self) -> str | None:
        path = self.database.password_file
        return path.read_text().strip() if path else None


@dataclass(frozen=True)
class ConfigError:
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


class ConfigInvalid(Exception):
    def __init__(self, path: Path, errors: list[ConfigError]) -> None:
        super().__init__(f"{path}: {len(errors)} error(s)")
        self.path = path
        self.errors = errors


def config_path(explicit: Path | None = None) -> Path:
    if explicit is not None:
        return explicit
    from_env = os.environ.get(CONFIG_ENV_VAR)
    return Path(from_env) if from_env else DEFAULT_CONFIG_PATH


def load_settings(path: Path | None = None) -> Settings:
    """Read and validate the configuration, raising ConfigInvalid with every error and its key.

    A missing default file is not an error (every field has a default); a missing explicit file is.
    """
    resolved = config_path(path)
    data: dict[str, Any] = {}
    if resolved.exists():
        try:
            data = tomllib.loads(resolved.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigInvalid(
                resolved, [ConfigError("(file)", f"not valid TOML: {exc}")]
            ) from exc
    elif path is not None or os.environ.get(CONFIG_ENV_VAR):
        raise ConfigInvalid(resolved, [ConfigError("(file)", "no such file")])
    try:
        return Settings(**data)
    except ValidationError as exc:
        errors = [
            ConfigError(".".join(str(part) for part in err["loc"]) or "(root)", err["msg"])
            for err in exc.errors()
        ]
        raise ConfigInvalid(resolved, errors) from exc


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, loaded once (services call this; tests call load_settings)."""
    return load_settings()
