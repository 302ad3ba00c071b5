"""COPY loading keeps every value as it was: text with tabs and newlines, NULLs, JSON."""

from __future__ import annotations

import math

import numpy as np
import psycopg
import pyarrow as pa
import shapely

from twin.bulk import copy_table


def test_copy_keeps_awkward_values_intact(conn: psycopg.Connection):
    conn.execute(
        "CREATE TEMP TABLE awkward (name text, height double precision, floors integer,"
        " open boolean, props jsonb, geom geometry(Point, 4326))"
    )
    names = ["tab\there", "new\nline", "back\\slash \\N", "上海市 普陀区", None]
    written = copy_table(
        conn,
        "awkward",
        {
            "name": names,
            "height": np.array([12.5, math.nan, 0.1 + 0.2, -3.0, 1e300]),
            "floors": np.array([1, 2, 3, 4, 5]),
            "open": np.array([True, False, True, False, True]),
            "props": [{"note": "a\tb"}, {}, {"层数": 3}, {"list": [1, 2]}, None],
            "geom": shapely.points([[121.4, 31.2]] * 4 + [[0, 0]]),
        },
    )
    assert written == 5
    rows = conn.execute(
        "SELECT name, height, floors, open, props, ST_AsText(geom) FROM awkward"
    ).fetchall()
    assert [r[0] for r in rows] == names
    assert rows[0][1] == 12.5 and rows[1][1] is None and rows[2][1] == 0.1 + 0.2
    assert rows[4][1] == 1e300
    assert [r[2] for r in rows] == [1, 2, 3, 4, 5]
    assert [r[3] for r in rows] == [True, False, True, False, True]
    assert rows[0][4] == {"note": "a\tb"} and rows[2][4] == {"层数": 3} and rows[4][4] is None
    assert rows[0][5] == "POINT(121.4 31.2)"


def test_copy_keeps_mixed_columns_exact(conn: psycopg.Connection):
    conn.execute(
        "CREATE TEMP TABLE mixed (n double precision, code text, props jsonb, big numeric)"
    )
    copy_table(
        conn,
        "mixed",
        {
            "n": [1, 2.5, None],  # ints and floats in one column: nothing truncated
            "code": ["a", 3, None],  # text and a number: the number as text
            "props": [{}, None, {}],  # no properties, and no value at all
            "big": [2**70, 1, None],  # beyond 64 bits
        },
    )
    rows = conn.execute("SELECT n, code, props, big FROM mixed").fetchall()
    assert [r[0] for r in rows] == [1.0, 2.5, None]
    assert [r[1] for r in rows] == ["a", "3", None]
    assert [r[2] for r in rows] == [{}, None, {}]
    assert [r[3] for r in rows] == [2**70, 1, None]


def test_binary_copy_keeps_nulls_and_converts_numbers(conn: psycopg.Connection):
    """A table of plain types goes in COPY's binary format: every type's NULL, numbers
    given as text or as the other kind of number, and geometries given every way."""
    conn.execute(
        "CREATE TEMP TABLE plain (id bigint, floors integer, small smallint, height double"
        " precision, ratio real, open boolean, name varchar, props jsonb,"
        " geom geometry(Geometry, 4326))"
    )
    point = shapely.Point(121.4, 31.2)
    copy_table(
        conn,
        "plain",
        {
            "id": [1, None, 3],
            "floors": ["4", None, 6],  # text and numbers: read as integers
            "small": np.array([1.0, 2.0, 3.0]),  # whole floats
            "height": [12, None, math.nan],  # an integer as a float; NaN is NULL
            "ratio": [0.5, None, 0.25],
            "open": [True, None, False],
            "name": ["上海", None, "tab\there"],
            "props": [{"a": 1}, None, {}],
            "geom": [
                point,
                None,
                shapely.to_wkb(shapely.set_srid(point, 4326), hex=True, include_srid=True),
            ],
        },
    )
    rows = conn.execute(
        "SELECT id, floors, small, height, ratio, open, name, props, ST_AsText(geom) FROM plain"
    ).fetchall()
    assert rows[0] == (1, 4, 1, 12.0, 0.5, True, "上海", {"a": 1}, "POINT(121.4 31.2)")
    assert rows[1] == (None, None, 2, None, None, None, None, None, None)
    assert rows[2] == (3, 6, 3, None, 0.25, False, "tab\there", {}, "POINT(121.4 31.2)")


def test_binary_copy_names_the_column_it_cannot_write(conn: psycopg.Connection):
    """A value that is not a number, bound for a number column, is refused naming the
    column, and the table is left as it was."""
    conn.execute("CREATE TEMP TABLE counted (name text, floors integer)")
    copy_table(conn, "counted", {"name": ["kept"], "floors": [3]})
    conn.commit()
    try:
        copy_table(conn, "counted", {"name": ["a", "b"], "floors": [1, "three"]})
    except ValueError as exc:
        assert "floors" in str(exc)
        conn.rollback()
    else:
        raise AssertionError("a word in an integer column was accepted")
    assert conn.execute("SELECT name, floors FROM counted").fetchall() == [("kept", 3)]


def test_text_copy_takes_ewkb_bytes_as_imports_pass_them(conn: psycopg.Connection):
    """A table COPY must send as text (a timestamp column) still takes geometries as the
    EWKB bytes an import passes through from the file, NULL included."""
    conn.execute("CREATE TEMP TABLE stamped (seen timestamptz, geom geometry(Point, 4326))")
    point = shapely.set_srid(shapely.Point(121.4, 31.2), 4326)
    ewkb = pa.array([shapely.to_wkb(point, include_srid=True), None], pa.binary())
    copy_table(conn, "stamped", {"seen": ["2026-11-25T08:00:00+08:00", None], "geom": ewkb})
    rows = conn.execute("SELECT seen IS NOT NULL, ST_AsText(geom) FROM stamped").fetchall()
    assert rows == [(True, "POINT(121.4 31.2)"), (False, None)]
