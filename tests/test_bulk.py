"""COPY loading keeps every value as it was: text with tabs and newlines, NULLs, JSON."""

from __future__ import annotations

import math

import numpy as np
import psycopg
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
