"""Settings, read from the environment (prefix ``TWIN_``) or a ``.env`` file.

Created by the composition root (CLI, app factory, tests), never at import time.
"""

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the one map can be told about where it runs."""

    model_config = SettingsConfigDict(env_prefix="TWIN_", env_file=".env", extra="ignore")

    database_url: str | None = Field(
        default=None,
        description="PostgreSQL+PostGIS URL. Unset: start the embedded cluster in data_dir.",
    )
    data_dir: Path = Field(default=Path(".twin"), description="Folder of the embedded cluster.")
    pg_port: int | None = Field(
        default=None, ge=1, le=65535, description="Port of the embedded cluster; unset: a free one."
    )
    pg_bin_dir: Path | None = Field(
        default=None,
        description="Folder with initdb/pg_ctl; unset: PATH, then the newest Debian one.",
    )
    pg_server_user: str = Field(
        default="postgres",
        description="Unprivileged user that runs the embedded server when twin runs as root.",
    )
    srid: int = Field(default=4326, description="The one CRS every geometry is stored in.")
    metric_srid: int = Field(
        default=4549, description="Metric CRS for lengths and areas (CGCS2000 3-degree GK CM 120E)."
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    statement_timeout_ms: int = Field(default=5000, ge=100)
    pool_min_size: int = Field(default=1, ge=1)
    pool_max_size: int = Field(default=10, ge=1, description="Connections of the shared pool.")
    pool_timeout_s: float = Field(default=10.0, gt=0, description="Wait for a connection.")
    operational_pool_size: int = Field(
        default=4,
        ge=1,
        description="Connections kept apart for dispatch's questions, staff and health.",
    )
    heavy_concurrency: int = Field(
        default=2, ge=1, description="Heavy requests (area questions, big pages) served at once."
    )
    heavy_queue_s: float = Field(
        default=2.0,
        ge=0,
        description="How long a heavy request waits for its turn before 503 and Retry-After.",
    )
    max_upload_mb: int = Field(default=2048, ge=1, description="Largest file an upload may be.")
    api_keys: dict[str, str] = Field(
        default_factory=dict,
        description='API keys of staff and trusted systems, as JSON: {"key": "caller name"}.',
    )
