"""Where the data base is, and bringing its schema up to date.

``database_url(settings)`` is the one place that decides between a configured server
(``TWIN_DATABASE_URL``) and the embedded cluster in ``settings.database.data_dir``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import psycopg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from twin.catalogue import register_builtin_layers
from twin.embedded import EmbeddedCluster
from twin.errors import DatabaseUnavailable, SetupError
from twin.settings import Settings

MIGRATIONS = Path(__file__).parent / "migrations"


def embedded_cluster(settings: Settings) -> EmbeddedCluster:
    """The embedded cluster that ``settings`` describe (not started)."""
    return EmbeddedCluster(
        settings.database.data_dir,
        port=settings.database.pg_port,
        bin_dir=settings.database.pg_bin_dir,
        server_user=settings.database.pg_server_user,
    )


def database_url(settings: Settings) -> str:
    """The libpq URL to use: the configured one, checked, or the embedded cluster's (started)."""
    if settings.database.database_url:
        url = libpq_url(settings.database.database_url)
        check_reachable(url, create_postgis=True)
        return url
    return embedded_cluster(settings).ensure_running()


def libpq_url(url: str) -> str:
    """A plain ``postgresql://`` URL for psycopg from any SQLAlchemy-style PostgreSQL URL."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise SetupError(f"TWIN_DATABASE_URL is not a data base URL: {url!r}") from exc
    if parsed.get_backend_name() not in ("postgresql", "postgres"):
        raise SetupError(
            f"TWIN_DATABASE_URL must be a postgresql:// URL, not {parsed.get_backend_name()}://"
        )
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def sqlalchemy_url(url: str) -> str:
    """The SQLAlchemy URL (psycopg 3 driver) for a libpq URL."""
    return make_url(url).set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def make_engine(url: str) -> Engine:
    """A SQLAlchemy engine on psycopg 3, for schema work, the ORM and notebooks."""
    return create_engine(sqlalchemy_url(url), pool_pre_ping=True)


def check_reachable(url: str, *, create_postgis: bool = False) -> None:
    """Connect once and check PostGIS is there (or create it); a one-line error otherwise."""
    safe = make_url(url).render_as_string(hide_password=True)
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'postgis'"
            ).fetchone()
            if row is None:
                available = conn.execute(
                    "SELECT 1 FROM pg_available_extensions WHERE name = 'postgis'"
                ).fetchone()
                if available is None:
                    raise SetupError(f"PostGIS is not installed on the server at {safe}")
                if not create_postgis:
                    raise SetupError(f"the data base at {safe} has no postgis extension yet")
                conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
                conn.commit()
    except psycopg.Error as exc:
        raise DatabaseUnavailable(
            f"cannot use the data base at {safe}: {_first_line(exc)}"
        ) from exc


def prepare(settings: Settings) -> str:
    """Find or start the data base, bring its schema up to date, register the layers.

    Every entry point (CLI, API, tests, notebooks) starts here; returns the libpq URL.
    """
    url = database_url(settings)
    migrate(url)
    with connect(url) as conn:
        register_builtin_layers(conn)
    return url


def connect(url: str, **kwargs: Any) -> psycopg.Connection:
    """A psycopg 3 connection to the one map's data base."""
    try:
        return psycopg.connect(url, **kwargs)
    except psycopg.OperationalError as exc:
        safe = make_url(url).render_as_string(hide_password=True)
        raise DatabaseUnavailable(f"cannot connect to {safe}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def alembic_config(url: str) -> Config:
    """Alembic configured in code: the migrations ship inside the package."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = sqlalchemy_url(url)
    return config


def migrate(url: str) -> None:
    """Bring the schema to the newest migration (idempotent; run on every start)."""
    command.upgrade(alembic_config(url), "head")


def schema_revision(url: str) -> str | None:
    """The data base's current migration, or None before the first."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


@functools.cache
def head_revision() -> str | None:
    """The newest migration shipped with this code."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config).get_current_head()
