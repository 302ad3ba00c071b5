"""The ``twin`` command as a person uses it, on the test data base."""

from __future__ import annotations

import json
import socket

import psycopg
from sqlalchemy.engine import make_url

from tests.helpers import run_twin


def test_layers_lists_the_catalogue_as_json(demo_url: str):
    result = run_twin("layers", "--json", env={"TWIN_DATABASE_URL": demo_url})
    assert result.returncode == 0, result.stderr
    layers = {layer["name"]: layer for layer in json.loads(result.stdout)}
    assert layers["buildings"]["feature_count"] > 1000
    assert layers["sensors"]["geometry_type"] == "Point"


def test_status_of_a_configured_server_reports_its_schema(demo_url: str):
    result = run_twin("db", "status", env={"TWIN_DATABASE_URL": demo_url})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["kind"] == "configured" and report["running"] is True
    assert report["schema_revision"] == report["schema_head"]
    assert make_url(demo_url).password not in result.stdout and "***" in report["url"]


def test_serving_on_a_port_in_use_is_a_clear_error(demo_url: str):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        result = run_twin("serve", "--port", str(port), env={"TWIN_DATABASE_URL": demo_url})
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_demo_size_is_refused_by_the_command_line():
    result = run_twin("demo", "--size", "huge")
    assert result.returncode == 2
    assert "invalid choice: 'huge'" in result.stderr


def test_status_does_not_change_a_data_base_without_postgis(template_url: str):
    from psycopg import sql

    admin = make_url(template_url).set(database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier("plain"))
        )
    plain = make_url(template_url).set(database="plain").render_as_string(hide_password=False)
    try:
        result = run_twin("db", "status", env={"TWIN_DATABASE_URL": plain})
        assert result.returncode == 1
        assert "has no postgis extension yet" in result.stderr
        with psycopg.connect(plain) as conn:
            assert (
                conn.execute(
                    "SELECT count(*) FROM pg_extension WHERE extname = 'postgis'"
                ).fetchone()[0]
                == 0
            )
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("DROP DATABASE plain WITH (FORCE)")
