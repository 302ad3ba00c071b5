"""The one schema: migrations, one CRS, a spatial index on every geometry."""

from __future__ import annotations

import psycopg

from twin import db


def test_every_geometry_is_stored_in_one_crs(conn: psycopg.Connection):
    rows = conn.execute(
        "SELECT f_table_name, f_geometry_column, srid FROM geometry_columns"
        " WHERE f_table_schema = 'public'"
    ).fetchall()
    tables = {table for table, _, _ in rows}
    assert {"buildings", "public_spaces", "pipes", "pipe_nodes", "sensors"} <= tables
    assert {"jurisdictions", "units", "layer_catalogue"} <= tables
    assert {srid for _, _, srid in rows} == {4326}


def test_every_feature_geometry_has_a_gist_index(conn: psycopg.Connection):
    unindexed = conn.execute(
        """
        SELECT g.f_table_name FROM geometry_columns g
        WHERE g.f_table_schema = 'public' AND g.f_table_name <> 'layer_catalogue'
          AND NOT EXISTS (
            SELECT 1 FROM pg_indexes i
            WHERE i.tablename = g.f_table_name AND i.indexdef ILIKE '%USING gist%'
              AND i.indexdef LIKE '%(' || g.f_geometry_column || ')%')
        """
    ).fetchall()
    assert unindexed == []


def test_migrate_is_idempotent_and_reaches_head(fresh_url: str):
    db.migrate(fresh_url)
    db.migrate(fresh_url)
    assert db.schema_revision(fresh_url) == db.head_revision() is not None


def test_kinds_outside_the_schema_are_refused(conn: psycopg.Connection):
    try:
        conn.execute(
            "INSERT INTO pipes (network, geom) VALUES ('lemonade',"
            " ST_GeomFromText('LINESTRING(121.4 31.2, 121.41 31.2)', 4326))"
        )
    except psycopg.errors.CheckViolation as exc:
        assert "network" in str(exc)
    else:
        raise AssertionError("a pipe of network 'lemonade' was accepted")
