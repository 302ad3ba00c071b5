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
import orjson
import psycopg
import shapely
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

from twin.schema import SRID

Columns = Mapping[str, Sequence[Any] | np.ndarray]
BATCH = 20_000


def table_length(columns: Columns) -> int:
    """Rows in a column-oriented table; all columns must agree."""
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"columns of unequal length: {lengths}")
    return next(iter(lengths.values()), 0)


_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
NULL = "\\N"


def _text_column(values: Sequence[Any] | np.ndarray, name: str) -> list[str]:
    """One column as COPY text-format fields, escaped, NULL as ``\\N``.

    Formatting whole columns at once is several times faster than psycopg's per-row
    ``write_row``, which matters at a million features.
    """
    if name == "geom":
        # Geometries come as shapely objects, or as hex EWKB already (an import passing
        # a file's WKB through unchanged).
        column = np.asarray(values, dtype=object)
        encoded = np.array([isinstance(g, str) for g in column], dtype=bool)
        out = column.copy()
        if (~encoded).any():
            geoms = shapely.set_srid(column[~encoded], SRID)
            out[~encoded] = shapely.to_wkb(geoms, hex=True, include_srid=True)
        return [NULL if w is None else w for w in out]
    if isinstance(values, np.ndarray) and values.dtype.kind == "f":
        return [NULL if v != v else repr(v) for v in values.tolist()]  # NaN is NULL
    if isinstance(values, np.ndarray) and values.dtype.kind in "iu":
        return [str(v) for v in values.tolist()]
    if isinstance(values, np.ndarray) and values.dtype.kind == "b":
        return ["t" if v else "f" for v in values.tolist()]
    kinds = {type(v) for v in values}
    if kinds <= {str, type(None)}:  # the common case, without a call per value
        return [NULL if v is None else v.translate(_ESCAPES) for v in values]
    if kinds <= {float, type(None)}:
        return [NULL if v is None or v != v else repr(v) for v in values]
    if kinds <= {int, type(None)}:
        return [NULL if v is None else str(v) for v in values]
    if kinds <= {dict, type(None)}:
        return [NULL if v is None else _json(v) for v in values]
    return [_text_field(v) for v in values]


def _text_field(value: Any) -> str:
    if value is None:
        return NULL
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, float):
        return NULL if value != value else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict | list):
        return _json(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value).translate(_ESCAPES)


def _json(value: dict[str, Any] | list[Any]) -> str:
    """JSON text for a jsonb field; orjson is several times faster than json at volume."""
    try:
        text = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    except TypeError:  # a value orjson does not know: the standard library says it as text
        text = json.dumps(value, ensure_ascii=False, default=str)
    return text.translate(_ESCAPES)


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
    with conn.cursor() as cur, cur.copy(statement, writer=QueuedLibpqWriter(cur)) as copy:
        # The writer thread sends one batch while the next is formatted.
        for start in range(0, n, BATCH):
            stop = min(start + BATCH, n)
            batch = [_text_column(columns[c][start:stop], c) for c in names]
            lines = "\n".join(map("\t".join, zip(*batch, strict=True)))
            copy.write((lines + "\n").encode())
            if progress is not None:
                progress(stop - start)
    return n
