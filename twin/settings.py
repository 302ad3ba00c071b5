"""Settings, read from the environment (prefix ``TWIN_``) or a ``.env`` file, per concern.

``Settings`` groups one model per concern: ``database`` (where the data base is and how it
is used), ``api`` (where the API listens, who may call it, how much it serves at once),
``imports`` (how big and how long an import may be), ``photos`` (how big a resident's or
a unit's photo may be), ``tiles`` (how much a vector tile may hold) and ``tile_cache``
(how many rendered tiles are kept). A later concern (MQTT) is one more model and one more
field. The variables keep the flat names the README documents
(``TWIN_DATABASE_URL``, ``TWIN_PORT`` …): each concern reads its own from the environment.

Created by the composition root (CLI, app factory, tests), never at import time.
"""

from __future__ import annotations

import re
from ipaddress import IPv6Address
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, ValidationError, field_validator
from pydantic_core import InitErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "TWIN_"  # the README documents every variable by this name


class _Concern(BaseSettings):
    """One concern's settings, each read from ``TWIN_`` + the field's name in capitals
    (``database_url`` from ``TWIN_DATABASE_URL``): field names are the variables' names."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", extra="ignore")


class DatabaseSettings(_Concern):
    """Where the data base is (a configured server or the embedded cluster) and the
    connections the API keeps to it."""

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
    statement_timeout_ms: int = Field(
        default=5000, ge=100, description="Per-statement time limit of the API's queries."
    )
    pool_min_size: int = Field(default=1, ge=1)
    pool_max_size: int = Field(
        default=10, ge=1, description="Connections of the shared pool, and of the tiles' pool."
    )
    pool_timeout_s: float = Field(default=10.0, gt=0, description="Wait for a connection.")
    operational_pool_size: int = Field(
        default=4,
        ge=1,
        description="Connections kept apart for dispatch's questions, staff and health.",
    )


class ApiSettings(_Concern):
    """Where the HTTP API listens, who may call its staff routes, and how much heavy work
    it takes on at once."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    heavy_concurrency: int = Field(
        default=2, ge=1, description="Heavy requests (area questions, big pages) served at once."
    )
    heavy_queue_s: float = Field(
        default=2.0,
        ge=0,
        description="How long a heavy request waits for its turn before 503 and Retry-After.",
    )
    api_keys: dict[str, str] = Field(
        default_factory=dict,
        description='Admin API keys, as JSON: {"key": "caller name"} (others: `twin keys`).',
    )
    workers: int = Field(
        default=1,
        ge=1,
        le=32,
        description="API processes (uvicorn workers) on one port; each has its own pools, "
        "catalogue snapshot and heavy gate.",
    )
    cors_origins: str = Field(
        default="*",
        description="Origins whose pages may read the public routes (tiles, TileJSON, terrain, "
        "the OGC collections) from the browser: * for any, origins separated by commas "
        "(https://map.example.org), or empty for none. Never with credentials; staff routes "
        "and writes are never opened to other origins.",
    )
    public_url: str | None = Field(
        default=None,
        description="The address clients reach the API at (https://map.example.org/twin): "
        "every link and redirect starts with it, whatever Host header a request carries; "
        "unset: the address each request reached, from its Host header.",
    )
    access_log: bool = Field(
        default=False,
        description="A log line per request (uvicorn's access log): off, it was a seventh of "
        "a tile's time; the reverse proxy in front of a deployment logs requests.",
    )
    sweep_interval_s: float = Field(
        default=60,
        ge=0,
        le=86_400,
        description="How often the server runs the SLA sweep (督办); 0: never (`twin incidents "
        "sweep` does it by hand or from cron).",
    )

    @field_validator("public_url")
    @classmethod
    def _an_address(cls, value: str | None) -> str | None:
        """An http(s) address of a host, with a port and a path or not, and nothing else
        (no user, query or fragment), without its trailing slash; empty is unset."""
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        try:
            port_ok = parts.port is None or parts.port > 0
        except ValueError:
            port_ok = False
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or not (_HOST.fullmatch(parts.hostname) or _ipv6(parts.hostname))
            or not port_ok
            or "@" in parts.netloc
            or parts.query
            or parts.fragment
            or not re.fullmatch(r"[A-Za-z0-9._~!$&'()*+,;=:@%/-]*", parts.path)
        ):
            raise ValueError(
                f"public_url {value[:100]!r} is not an address such as "
                "https://map.example.org or https://map.example.org:8443/twin"
            )
        return value.strip().rstrip("/")


# A host name or IPv4 address (the validator's; api checks Host headers itself).
_HOST = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?")


def _ipv6(text: str) -> bool:
    try:
        IPv6Address(text)
    except ValueError:
        return False
    return True


class ImportSettings(_Concern):
    """How big an uploaded file may be and how long an import over HTTP may run."""

    max_upload_mb: int = Field(default=2048, ge=1, description="Largest file an upload may be.")
    import_time_limit_s: int = Field(
        default=900,
        ge=1,
        description="Time limit of one import over HTTP (in place of the statement timeout).",
    )


class PhotoSettings(_Concern):
    """How big a photo with a report (随手拍) or on an incident's timeline may be."""

    max_photo_mb: int = Field(default=10, ge=1, le=100, description="Largest photo, in MB.")
    max_photo_megapixels: int = Field(
        default=40,
        ge=1,
        le=170,  # Pillow refuses past about 179 megapixels as a decompression bomb
        description="Most pixels a photo may declare, checked before it is decoded.",
    )
    max_photos_per_report: int = Field(default=5, ge=1, le=20, description="Photos per upload.")


class TileCacheSettings(_Concern):
    """How much of the rendered vector tiles is kept, in each API process and shared by
    all of them in the data base (tiles/cache.py says why both)."""

    tile_memory_mb: int = Field(
        default=256,
        ge=0,
        le=65_536,
        description="Tiles kept in each API process's memory (the warm front); 0: none.",
    )
    tile_cache_mb: int = Field(
        default=2048,
        ge=0,
        le=1_048_576,
        description="Tiles kept in the data base for every process and `twin tiles seed`; "
        "0: none. Past it, the least recently used go.",
    )


class TileSettings(_Concern):
    """How much a vector tile may hold and how long it may take (tiles.vector.Limits)."""

    tile_max_features: int = Field(
        default=20_000,
        ge=1,
        description="Features a tile's layer may hold; past it the most important are kept "
        "and the answer says X-Tile-Truncated.",
    )
    tile_max_bytes: int = Field(
        default=2_000_000,
        ge=1000,
        description="Bytes a tile may be (before gzip); past it fewer features are kept.",
    )
    tile_timeout_ms: int = Field(
        default=3000,
        ge=100,
        description="Time limit of one tile's query; past it the answer is 503 with Retry-After.",
    )
    tile_max_age_s: int = Field(
        default=0,
        ge=0,
        le=86_400,
        description="Cache-Control max-age of tiles without incidents; 0: clients revalidate "
        "each time (a 304 when the tile has not changed).",
    )


class NetworkSettings(_Concern):
    """How pipe networks are tied together from their geometry (twin/network)."""

    network_snap_m: float = Field(
        default=0.2,
        gt=0,
        le=10,
        description="Pipe ends closer than this meet at one node, and a node this close to a "
        "pipe lies on it (metres; real pipes can be a metre long, so keep it well under one).",
    )
    network_near_miss_m: float = Field(
        default=2.0,
        gt=0,
        le=100,
        description="A pipe end this close to another pipe that it does not meet is reported "
        "by the connectivity check as a near miss, with the gap.",
    )
    network_service_m: float = Field(
        default=30.0,
        gt=0,
        le=500,
        description="A building with no service connection is taken as served by the nearest "
        "pipe of the network within this distance (metres).",
    )


class Settings(BaseModel):
    """Everything the one map can be told about where it runs, one model per concern.

    ``Settings()`` reads every concern from the environment and ``.env``; a concern given
    (``Settings(database=DatabaseSettings(data_dir=…))``) is taken as it is. Bad values of
    several concerns are refused together, in one ``ValidationError``, as one model would.
    """

    database: DatabaseSettings
    api: ApiSettings
    imports: ImportSettings
    photos: PhotoSettings
    tiles: TileSettings
    tile_cache: TileCacheSettings
    network: NetworkSettings

    def __init__(self, **concerns: _Concern) -> None:
        problems: list[InitErrorDetails] = []
        for name, field in type(self).model_fields.items():
            if name in concerns:
                continue
            try:
                concerns[name] = field.annotation()  # type: ignore[misc]
            except ValidationError as exc:
                problems += [
                    {"type": e["type"], "loc": e["loc"], "input": e["input"], "ctx": e.get("ctx", {})}
                    for e in exc.errors(include_url=False)
                ]  # fmt: skip
        if problems:
            raise ValidationError.from_exception_data(type(self).__name__, problems)
        super().__init__(**concerns)
