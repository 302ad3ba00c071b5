"""Bulk loading through COPY: the one way features go into the data base in quantity.

Tables arrive column-oriented (a dict of column name -> sequence, geometries as shapely
arrays in the storage CRS), which is how generators and readers produce them fastest.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import psycopg
import shapely
from psycopg import sql

from twin.schema import SRID

Columns = Mapping[str, Sequence[Any] | np.ndarray]
BATCH = 20_000


def table_length(columns: Columns) -> int:
    """Rows in a column-oriented table; all columns must agree."""
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"columns of unequal length: {lengths}")
    return next(iter(lengths.values()), 0)


def _text_column(values: Sequence[Any] | np.ndarray, name: str) -> list[Any]:
    """Turn one column into values COPY's text format takes."""
    if name == "geom":
        geoms = shapely.set_srid(np.asarray(values, dtype=object), SRID)
        return list(shapely.to_wkb(geoms, hex=True, include_srid=True))
    if isinstance(values, np.ndarray) and values.dtype != object:
        return values.tolist()
    out: list[Any] = []
    for value in values:
        if isinstance(value, dict | list):
            out.append(json.dumps(value, ensure_ascii=False))
        elif isinstance(value, datetime):
            out.append(value.isoformat())
        elif isinstance(value, np.generic):
            out.append(value.item())
        else:
            out.append(value)
    return out


def copy_table(
    conn: psycopg.Connection,
    table: str,
    columns: Columns,
    *,
    progress: Callable[[int], None] | None = None,
) -> int:
    """COPY a column-oriented table into ``table``; returns the number of rows written.

    ``table`` and the column names must come from the schema (an allow-list), never input.
    """
    n = table_length(columns)
    names = list(columns)
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in names)
    )
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for start in range(0, n, BATCH):
            stop = min(start + BATCH, n)
            batch = [_text_column(columns[c][start:stop], c) for c in names]
            for row in zip(*batch, strict=True):
                copy.write_row(row)
            if progress is not None:
                progress(stop - start)
    return n
