"""One typed Settings for every service (DESIGN §2).

Read from the environment once, validated at start-up. `NOCTISPRO_ENV=production`
refuses unsafe defaults instead of running with them.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Self

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

GiB = 1024**3
MiB = 1024**2


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class DuplicatePolicy(StrEnum):
    """What to do when a SOP Instance UID arrives again with different bytes."""

    KEEP_FIRST = "keep-first"
    OVERWRITE = "overwrite"
    REJECT = "reject"


class UnsafeConfiguration(ValueError):
    """Raised when production would start with a development default."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NOCTISPRO_", extra="ignore")

    env: Environment = Environment.DEVELOPMENT
    debug: bool = False
    data_dir: Path = Path("./noctispro-data")
    database_url: str = Field(
        default="", validation_alias=AliasChoices("DATABASE_URL", "NOCTISPRO_DATABASE_URL")
    )
    storage_url: str = ""
    broker_url: str = ""
    s3_endpoint_url: str = ""

    bind: str = "127.0.0.1"
    web_port: int = 8000
    api_port: int = 8001
    dicom_port: int = 11112
    ae_title: str = "NOCTISPRO"

    secret_key: str = ""
    admin_password: str = ""
    cors_origins: Annotated[list[str], NoDecode] = []
    # Host names the web service answers to (Django ALLOWED_HOSTS); loopback always works.
    allowed_hosts: Annotated[list[str], NoDecode] = []

    # Ingest bounds (DESIGN §5).
    max_instance_bytes: int = 4 * GiB
    max_sequence_depth: int = 32
    duplicate_policy: DuplicatePolicy = DuplicatePolicy.KEEP_FIRST
    default_facility: str = "DEFAULT"

    # HTTP bounds.
    max_request_bytes: int = 4 * GiB + 64 * MiB
    max_upload_files: int = 1000
    zip_max_entries: int = 100_000
    zip_max_total_bytes: int = 64 * GiB
    zip_max_ratio: int = 100

    # Authentication.
    token_ttl_seconds: int = 8 * 3600
    login_max_failures: int = 5
    login_failure_window_seconds: int = 900

    # Change log listeners and jobs.
    stable_age_seconds: int = 60
    worker_heartbeat_seconds: float = 5.0
    worker_poll_seconds: float = 1.0
    job_lease_seconds: int = 300

    # DICOM networking.
    dicom_max_pdu: int = 262_144
    dicom_network_timeout: float = 60.0
    dicom_acse_timeout: float = 30.0
    dicom_dimse_timeout: float = 60.0
    # Across every SCP process and both ports (PS3.8 9.3.4 local limit exceeded).
    dicom_max_associations: int = Field(default=32, ge=1)
    # Default: one per core, at most 4 (each process runs one Python thread at a time).
    dicom_processes: int = Field(default_factory=lambda: min(os.cpu_count() or 1, 4), ge=1, le=64)
    # None: on in development, off in production (see dimse/access.py).
    dicom_accept_unknown: bool | None = None
    dicom_check_called_ae: bool = False
    # A node's associations must come from an address its host name resolves to.
    dicom_check_peer_host: bool = False
    # DICOM TLS (PS3.15 B.9, BCP 195) on a second port when a certificate and key are set;
    # with a CA, peers must present a certificate it signed (and outgoing TLS trusts it).
    dicom_tls_port: int = 2762
    dicom_tls_cert: Path | None = None
    dicom_tls_key: Path | None = None
    dicom_tls_ca: Path | None = None
    query_case_insensitive_names: bool = True
    # Query/retrieve of remote nodes (dimse/qr_scu.py): one deadline per C-FIND, a cap on
    # its matches, and the longest wait for the next C-MOVE response.
    remote_query_timeout: float = Field(default=30.0, gt=0)
    remote_query_max_matches: int = Field(default=500, ge=1)
    remote_move_timeout: float = Field(default=600.0, gt=0)

    # DICOMweb (PS3.18).
    # Root of RetrieveURL and BulkDataURI values, e.g. https://pacs.example.org/dicom-web;
    # empty: from each request's scheme and Host header.
    dicomweb_base_url: str = ""
    # Binary values longer than this many bytes are BulkDataURIs in metadata, not inline.
    dicomweb_inline_binary_max: int = Field(default=1024, ge=0)
    # QIDO-RS answers at most this many matches per request (limit/offset page further).
    qido_max_results: int = Field(default=1000, ge=1)
    # STOW-RS: parts in one request.
    stow_max_parts: int = Field(default=5000, ge=1)
    # WADO-RS rendered / thumbnail: Cache-Control max-age, and the per-process cache of
    # encoded images (keyed by storage key + parameters, as the ETag is).
    dicomweb_image_max_age: int = Field(default=86400, ge=0)
    dicomweb_image_cache_bytes: int = Field(default=64 * MiB, ge=0)

    # Health check.
    health_worker_max_age_seconds: float = 30.0

    # Imaging (imaging/): decode bounds, rendering, decoded-frame cache.
    imaging_max_frame_bytes: int = Field(default=256 * MiB, ge=1)
    imaging_max_pixel_bytes: int = Field(default=4 * GiB, ge=1)
    imaging_cache_bytes: int = Field(default=512 * MiB, ge=0)
    imaging_jpeg_quality: int = Field(default=90, ge=1, le=100)

    @field_validator("cors_origins", "allowed_hosts", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("dicom_tls_cert", "dicom_tls_key", "dicom_tls_ca", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("ae_title")
    @classmethod
    def _check_ae_title(cls, value: str) -> str:
        value = value.strip()
        if not value or len(value) > 16 or "\\" in value:
            raise ValueError("AE title must be 1-16 characters without a backslash (PS3.5 6.2)")
        return value

    @model_validator(mode="after")
    def _resolve(self) -> Self:
        self.data_dir = self.data_dir.expanduser().resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'noctispro.sqlite3'}"
        if self.dicom_accept_unknown is None:
            self.dicom_accept_unknown = self.env is not Environment.PRODUCTION
        if (self.dicom_tls_cert is None) != (self.dicom_tls_key is None):
            raise ValueError("NOCTISPRO_DICOM_TLS_CERT and NOCTISPRO_DICOM_TLS_KEY go together")
        if self.dicom_tls_enabled and self.dicom_tls_port == self.dicom_port:
            raise ValueError("NOCTISPRO_DICOM_TLS_PORT must differ from NOCTISPRO_DICOM_PORT")
        if not self.storage_url:
            self.storage_url = f"file://{self.data_dir / 'storage'}"
        if self.env is Environment.PRODUCTION:
            problems = []
            if self.debug:
                problems.append("NOCTISPRO_DEBUG is on")
            if "*" in self.cors_origins:
                problems.append("NOCTISPRO_CORS_ORIGINS allows every origin")
            if len(self.secret_key) < 32:
                # A per-host generated key would not be shared by several api hosts.
                problems.append("NOCTISPRO_SECRET_KEY must be set to at least 32 characters")
            if problems:
                raise UnsafeConfiguration("refusing to start in production: " + "; ".join(problems))
        return self

    @property
    def is_production(self) -> bool:
        return self.env is Environment.PRODUCTION

    @property
    def dicom_tls_enabled(self) -> bool:
        return self.dicom_tls_cert is not None and self.dicom_tls_key is not None

    @property
    def secrets_dir(self) -> Path:
        return self.data_dir / "secrets"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def tmp_dir(self) -> Path:
        """Spool area on the data disk, so large uploads never fill /tmp."""
        return self.data_dir / "tmp"

    def effective_secret_key(self) -> str:
        """The configured key, or one generated once into the secrets dir (mode 0600)."""
        if self.secret_key:
            return self.secret_key
        return read_or_create_secret(
            self.secrets_dir / "secret_key", lambda: secrets.token_urlsafe(48)
        )


def read_or_create_secret(path: Path, make: Callable[[], str]) -> str:
    """Read a secret file, creating it atomically with mode 0600 if it does not exist."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    value = make()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{value}\n")
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)  # fails if another process won the race; theirs is kept
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_text().strip()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    """Forget the cached Settings (tests change the environment between cases)."""
    get_settings.cache_clear()
