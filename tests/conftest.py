"""Test fixtures: one embedded PostGIS cluster per session, the same code the CLI uses.

The session makes a template data base (schema + the small demo city). Read-only tests
share one copy of it (``demo_url``); tests that write get a fresh copy each
(``fresh_url``), made with ``CREATE DATABASE … TEMPLATE`` in well under a second.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql
from sqlalchemy.engine import make_url

from api.app import create_app
from layers.demo.generate import DemoCity, generate_city
from layers.demo.load import load_demo
from tests.helpers import make_data_dir, remove_data_dirs, settings_for
from twin import db
from twin.embedded import EmbeddedCluster
from twin.settings import Settings

TEMPLATE = "twin"  # the embedded cluster's own data base serves as the template
_clone_numbers = itertools.count()


@pytest.fixture(scope="session", autouse=True)
def _leave_no_folders() -> Iterator[None]:
    """Torn down last: every folder the tests made goes (clusters are stopped by then)."""
    yield
    remove_data_dirs()


@pytest.fixture(scope="session")
def cluster_dir() -> Iterator[Path]:
    path = make_data_dir("twin-tests-")
    yield path
    EmbeddedCluster(path).stop()
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def settings(cluster_dir: Path) -> Settings:
    return settings_for(cluster_dir)


@pytest.fixture(scope="session")
def small_city() -> DemoCity:
    return generate_city("small", seed=1)


@pytest.fixture(scope="session")
def template_url(settings: Settings, small_city: DemoCity) -> str:
    """The embedded cluster's data base, migrated, with the small demo city loaded."""
    url = db.prepare(settings)
    with db.connect(url) as conn:
        load_demo(conn, small_city)
    return url


def _clone(template_url: str, name: str) -> str:
    admin = psycopg.conninfo.make_conninfo(template_url, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(TEMPLATE)
            )
        )
    return make_url(template_url).set(database=name).render_as_string(hide_password=False)


def _drop(template_url: str, name: str) -> None:
    admin = psycopg.conninfo.make_conninfo(template_url, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="session")
def demo_url(template_url: str) -> Iterator[str]:
    """A shared copy of the demo data base for tests that only read."""
    name = f"demo_{os.getpid()}"
    url = _clone(template_url, name)
    yield url
    _drop(template_url, name)


@pytest.fixture
def fresh_url(template_url: str) -> Iterator[str]:
    """A private copy of the demo data base for one test that writes."""
    name = f"fresh_{os.getpid()}_{next(_clone_numbers)}"
    url = _clone(template_url, name)
    yield url
    _drop(template_url, name)


@pytest.fixture(scope="module")
def module_url(template_url: str) -> Iterator[str]:
    """A private copy of the demo data base for one test module that writes (its fixtures
    load data once; its tests then read)."""
    name = f"module_{os.getpid()}_{next(_clone_numbers)}"
    url = _clone(template_url, name)
    yield url
    _drop(template_url, name)


@pytest.fixture
def conn(demo_url: str) -> Iterator[psycopg.Connection]:
    """A connection to the shared demo copy, rolled back after the test."""
    with psycopg.connect(demo_url) as connection:
        yield connection
        connection.rollback()


@pytest.fixture(scope="session")
def client(settings: Settings, demo_url: str) -> Iterator[TestClient]:
    """HTTP through the real app, on the shared demo copy."""
    app = create_app(settings, database_url=demo_url)
    with TestClient(app) as test_client:
        yield test_client
