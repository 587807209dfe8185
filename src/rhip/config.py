"""Settings for every RHIP component, read from the environment (``RHIP_*``) or a ``.env`` file.

One place decides where data lives and which database is used, so that the same code runs on the
embedded defaults (SQLite + DuckDB under one data directory) and on PostgreSQL in production by
configuration alone.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rhip.errors import ConfigurationError


class Settings(BaseSettings):
    """Platform settings. Every field can be set as ``RHIP_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="RHIP_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default=Path("./rhip-data"), description="Where embedded data lives.")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the operational store; default: SQLite file in data_dir.",
    )
    base_url: str = Field(default="http://127.0.0.1:8080", description="Public base URL of the API.")
    host: str = Field(default="127.0.0.1", description="Address `rhip serve` binds to.")
    port: int = Field(default=8080, description="Port `rhip serve` listens on.")
    timezone: str = Field(default="Asia/Shanghai", description="Zone used for local timestamps.")
    identifier_base: str = Field(
        default="https://rhip.example.org/fhir",
        description="Base URI for identifier and code systems that have no national OID.",
    )
    auth_enabled: bool = Field(default=True, description="Require authentication on the API.")
    field_encryption: bool = Field(
        default=True,
        description="SM4-encrypt citizen IDs and phone numbers of persons in the store (keys in data_dir).",
    )
    page_size: int = Field(default=50, description="Default search page size (_count).")
    max_page_size: int = Field(default=1000, description="Largest _count a client may ask for.")
    mllp_port: int = Field(default=2575, description="Port `rhip mllp-listen` listens on.")
    mllp_batch_max: int = Field(
        default=500, ge=1, description="Most HL7 v2 messages the MLLP listener commits in one batch."
    )
    mllp_batch_wait_ms: float = Field(
        default=2.0,
        ge=0,
        description="How long the MLLP listener gathers more messages into a batch after the first.",
    )
    mllp_prepare_process: bool = Field(
        default=False,
        description="Parse and map HL7 v2 messages in a second process while the MLLP listener writes.",
    )
    ingest_wal_autocheckpoint: int = Field(
        default=10_000,
        ge=0,
        description="WAL pages between SQLite checkpoints while a bulk load writes; 0: SQLite's default.",
    )
    recognition_windows_file: Path | None = Field(
        default=None,
        description="CSV of recognition windows (LOINC tests, DICOM modalities) replacing or adding "
        "to the shipped ones.",
    )
    mllp_uvloop: bool = Field(
        default=True,
        description="Run the MLLP listener on uvloop's event loop (asyncio's own where uvloop is missing).",
    )
    ingest_producer_min_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=0,
        description="NDJSON files of at least this size are read and prepared in a second process "
        "(hosts with two or more cores); 0: never.",
    )

    mqtt_username: str | None = Field(
        default=None,
        description="User name `rhip mqtt-subscribe` gives the broker (a user in the --broker URL wins).",
    )
    mqtt_password: SecretStr | None = Field(
        default=None,
        description="Password `rhip mqtt-subscribe` gives the broker (a password in the --broker URL wins).",
    )
    mqtt_session_expiry: int = Field(
        default=7 * 24 * 3600,
        ge=1,
        le=0xFFFFFFFF,
        description="Seconds the broker keeps the subscriber's session (its queued readings) after "
        "it disconnects; 4294967295: for ever.",
    )

    backup_passphrase: SecretStr | None = Field(
        default=None,
        description="Passphrase that seals the keys in `rhip backup create` and opens them in "
        "verify and restore (--passphrase-file takes precedence).",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)  # what every user of the setting builds from it
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError("not a time zone name such as Asia/Shanghai or UTC") from None
        return value

    @property
    def resolved_database_url(self) -> str:
        """The database URL in force: the configured one or the SQLite file in the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'rhip.sqlite').resolve()}"

    @property
    def lake_dir(self) -> Path:
        """Root of the Parquet lake."""
        return self.data_dir / "lake"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests build their own ``Settings``).

    Raises ConfigurationError naming each ``RHIP_*`` variable whose value cannot be used.
    """
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigurationError(settings_problem(exc)) from None


def settings_problem(exc: ValidationError) -> str:
    """One line per unusable setting: its variable, the value given and what it expects."""
    lines = []
    for error in exc.errors():
        name = "RHIP_" + "_".join(str(part) for part in error["loc"]).upper()
        lines.append(f"{name}={error.get('input')!r}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(lines) + " (settings: docs/configuration.md)"
