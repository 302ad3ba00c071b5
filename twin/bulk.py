"""Bulk loading through COPY: the one way features go into the data base in quantity.

Tables arrive column-oriented (a dict of column name -> sequence, geometries as shapely
arrays in the storage CRS, or as hex EWKB already), which is how generators and readers
produce them fastest. Whole columns become COPY text in Arrow's C++ kernels rather than
value by value in Python: at a million features that is the difference between the
server waiting on Python and Python waiting on the server.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any

import numpy as np
import orjson
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import shapely
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

from twin.schema import SRID

Columns = Mapping[str, Sequence[Any] | np.ndarray | pa.Array]
BATCH = 50_000
NULL = "\\N"
# COPY's text format gives these four a meaning; in values they are written escaped.
_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))
_NEEDS_ESCAPE = r"[\\\t\n\r]"


def table_length(columns: Columns) -> int:
    """Rows in a column-oriented table; all columns must agree."""
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"columns of unequal length: {lengths}")
    return next(iter(lengths.values()), 0)


def _escaped(text: pa.Array) -> pa.Array:
    if pc.any(pc.match_substring_regex(text, _NEEDS_ESCAPE)).as_py():
        for raw, escaped in _ESCAPES:
            text = pc.replace_substring(text, raw, escaped)
    return text


def _text_column(values: Sequence[Any] | np.ndarray | pa.Array, name: str) -> pa.Array:
    """One column as COPY text-format fields (an Arrow string array), NULL as ``\\N``."""
    if name == "geom":
        return pc.fill_null(_geometry_text(values), NULL)
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiub":
        values = pa.array(values, from_pandas=True)  # NaN is NULL
    if not isinstance(values, pa.Array):
        values = _python_column(values)
    if pa.types.is_boolean(values.type):
        text = pc.if_else(values, "t", "f")
    elif pa.types.is_floating(values.type):
        text = pc.cast(pc.if_else(pc.is_nan(values), None, values), pa.string())
    elif pa.types.is_integer(values.type):
        text = pc.cast(values, pa.string())
    else:
        text = _escaped(pc.cast(values, pa.string()))
    return pc.fill_null(text, NULL)


def _python_column(values: Sequence[Any] | np.ndarray) -> pa.Array:
    """Python values as an Arrow array: text as text, dicts and lists as JSON, NaN as null."""
    first = next((v for v in values if v is not None), None)
    if not isinstance(first, dict | list):
        # Arrow converts in C (told that text is text, several times faster than when it
        # infers it). A column it cannot take whole is done value by value.
        try:
            converted = pa.array(
                values, pa.string() if isinstance(first, str) else None, from_pandas=True
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
            converted = None
        if converted is not None and _plain_type(converted.type):
            return converted
    # What Arrow could not take whole: JSON, or each value as text (mixed types, ints
    # beyond 64 bits, dates).
    values = list(values)
    kinds = {type(v) for v in values} - {type(None)}
    if kinds <= {dict, list}:
        if kinds == {dict} and not any(v is None or v for v in values):  # none, as usual
            return pa.array(["{}"], pa.string()).take(np.zeros(len(values), dtype=np.int64))
        return pa.array([None if v is None else _json(v) for v in values], pa.string())
    return pa.array([_text_field(v) for v in values], pa.string())


def _plain_type(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_integer(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_null(kind)
    )


def ewkb_hex(geoms: np.ndarray) -> np.ndarray:
    """Shapely geometries as the hex EWKB COPY takes, with the storage SRID written in."""
    return shapely.to_wkb(shapely.set_srid(geoms, SRID), hex=True, include_srid=True)


def arrow_offsets(array: pa.Array) -> np.ndarray:
    """Where each value of a (32-bit offset) string or binary Arrow array starts and ends
    in its data buffer: ``len(array) + 1`` offsets."""
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int32)
    return offsets[array.offset : array.offset + len(array) + 1]


def _geometry_text(values: Sequence[Any] | np.ndarray | pa.Array) -> pa.Array:
    """Geometries as hex EWKB: shapely objects are encoded, hex text passes as it is."""
    if isinstance(values, pa.Array):
        return values  # hex EWKB already (an import passing a file's WKB through)
    column = np.asarray(values, dtype=object)
    encoded = np.fromiter((isinstance(g, str) for g in column), dtype=bool, count=len(column))
    if encoded.all():
        return pa.array(column, pa.string())
    out = column.copy()
    out[~encoded] = ewkb_hex(column[~encoded])
    return pa.array(out, pa.string())


def _text_field(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, float):
        return None if value != value else repr(value)
    if isinstance(value, dict | list):
        return _json(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _json(value: dict[str, Any] | list[Any]) -> str:
    """JSON text for a jsonb field; orjson is several times faster than json at volume."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    except TypeError:  # a value orjson does not know: the standard library says it as text
        return json.dumps(value, ensure_ascii=False, default=str)


def copy_text(columns: Columns, names: Sequence[str]) -> memoryview:
    """The COPY text-format lines of a column-oriented table, ready to send."""
    fields = [_text_column(columns[c], c) for c in names]
    lines = pc.binary_join_element_wise(*fields, "\t") if len(fields) > 1 else fields[0]
    lines = pc.binary_join_element_wise(lines, "", "\n")  # each line ends with a newline
    # The joined lines lie end to end in the array's data buffer: send that, no copy.
    offsets = arrow_offsets(lines)
    data = lines.buffers()[2]
    return memoryview(data)[int(offsets[0]) : int(offsets[-1])] if data else memoryview(b"")


class CopyStream:
    """An open ``COPY table (columns) FROM STDIN``; batches are written as they come.

    Each batch becomes COPY text in a thread of its own (Arrow's kernels let go of the
    GIL), and psycopg's writer thread sends it, while the caller prepares the next batch:
    the server, the formatting and the caller's work all run at once.
    """

    def __init__(self, copy: psycopg.Copy, names: list[str]) -> None:
        self._copy = copy
        self.names = names
        self._formatter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="copy-text")
        self._pending: deque[Future[None]] = deque()

    def write(self, columns: Columns) -> int:
        """Queue a batch (its columns include at least ``names``); returns its row count.

        At most two batches wait at once, which bounds memory; an error formatting an
        earlier batch is raised here.
        """
        part = {c: columns[c] for c in self.names}
        n = table_length(part)
        while len(self._pending) >= 2:
            self._pending.popleft().result()
        self._pending.append(self._formatter.submit(self._send, part, n))
        return n

    def _send(self, part: Columns, n: int) -> None:
        for start in range(0, n, BATCH):
            chunk = {c: values[start : start + BATCH] for c, values in part.items()}
            self._copy.write(copy_text(chunk, self.names))

    def finish(self) -> None:
        """Wait until every batch has been handed to the writer; raise the first error."""
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self.abandon()

    def abandon(self) -> None:
        """Drop the batches not yet formatted and stop the formatting thread."""
        for future in self._pending:
            future.cancel()
        self._formatter.shutdown(wait=True)


@contextmanager
def copy_stream(conn: psycopg.Connection, table: str, names: list[str]) -> Iterator[CopyStream]:
    """Open a COPY into ``table``; it ends (and the server finishes) when the block does.

    ``table`` and the column names must come from the schema (an allow-list), never input.
    """
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in names)
    )
    with conn.cursor() as cur, cur.copy(statement, writer=QueuedLibpqWriter(cur)) as copy:
        stream = CopyStream(copy, names)
        try:
            yield stream
        except BaseException:
            stream.abandon()
            raise
        stream.finish()


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
    with copy_stream(conn, table, list(columns)) as stream:
        for start in range(0, n, BATCH):
            written = stream.write({c: v[start : start + BATCH] for c, v in columns.items()})
            if progress is not None:
                progress(written)
    return n
