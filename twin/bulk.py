"""Bulk loading through COPY: the one way features go into the data base in quantity.

Tables arrive column-oriented (a dict of column name -> sequence, geometries as shapely
arrays in the storage CRS, or as EWKB already: an Arrow array of bytes or hex), which is
how generators and readers produce them fastest. Whole columns become COPY data in Arrow's C++ kernels rather than
value by value in Python: at a million features that is the difference between the
server waiting on Python and Python waiting on the server.

A table whose columns are all text, numbers, booleans, JSON or geometry is sent in
COPY's binary format: the server then reads numbers and geometries as they are instead
of parsing their text (a quarter less of its time at a million buildings). Any other
column type (rasters, timestamps) sends the table as text, which the server parses by
the column's own type.
"""

from __future__ import annotations

import binascii
import json
import struct
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

from twin import catalogue
from twin.schema import SRID

Columns = Mapping[str, Sequence[Any] | np.ndarray | pa.Array]
BATCH = 50_000
NULL = "\\N"
# Column types written in COPY's binary format (typname -> how the value is laid out).
_BINARY_FIXED = {
    "float8": (pa.float64(), ">f8"),
    "float4": (pa.float32(), ">f4"),
    "int8": (pa.int64(), ">i8"),
    "int4": (pa.int32(), ">i4"),
    "int2": (pa.int16(), ">i2"),
    "bool": (pa.bool_(), "u1"),
}
_BINARY_VARYING = {"text", "varchar", "jsonb", "geometry"}
BINARY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, no extension
BINARY_TRAILER = b"\xff\xff"
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


def _text_column(values: Sequence[Any] | np.ndarray | pa.Array, kind: str) -> pa.Array:
    """One column (of type ``kind``) as COPY text-format fields (an Arrow string array),
    NULL as ``\\N``."""
    if kind == "geometry":
        return pc.fill_null(_geometry_text(values), NULL)
    text, plain = _as_text(values)
    return pc.fill_null(text if plain else _escaped(text), NULL)


def _as_text(values: Sequence[Any] | np.ndarray | pa.Array) -> tuple[pa.Array, bool]:
    """One column's values as text (an Arrow string array, nulls kept), and whether it
    is plainly numbers or booleans (which never need escaping)."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiub":
        values = pa.array(values, from_pandas=True)  # NaN is NULL
    if not isinstance(values, pa.Array):
        values = _python_column(values)
    if pa.types.is_boolean(values.type):
        return pc.if_else(values, "t", "f"), True
    if pa.types.is_floating(values.type):
        return pc.cast(pc.if_else(pc.is_nan(values), None, values), pa.string()), True
    if pa.types.is_integer(values.type):
        return pc.cast(values, pa.string()), True
    return pc.cast(values, pa.string()), False


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


def ewkb(geoms: np.ndarray, *, as_hex: bool = False) -> np.ndarray:
    """Shapely geometries as the EWKB COPY takes (bytes, or hex for the text format),
    with the storage SRID written in."""
    return shapely.to_wkb(shapely.set_srid(geoms, SRID), hex=as_hex, include_srid=True)


def arrow_offsets(array: pa.Array) -> np.ndarray:
    """Where each value of a (32-bit offset) string or binary Arrow array starts and ends
    in its data buffer: ``len(array) + 1`` offsets."""
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int32)
    return offsets[array.offset : array.offset + len(array) + 1]


def _geometry_text(values: Sequence[Any] | np.ndarray | pa.Array) -> pa.Array:
    """Geometries as hex EWKB: shapely objects are encoded, EWKB bytes turned to hex, hex
    text passes as it is."""
    if isinstance(values, pa.Array):  # an import passing a file's WKB through, as EWKB
        return _hex(values) if pa.types.is_binary(values.type) else values
    column = np.asarray(values, dtype=object)
    encoded = np.fromiter((isinstance(g, str) for g in column), dtype=bool, count=len(column))
    if encoded.all():
        return pa.array(column, pa.string())
    out = column.copy()
    out[~encoded] = ewkb(column[~encoded], as_hex=True)
    return pa.array(out, pa.string())


def _geometry_bytes(values: Sequence[Any] | np.ndarray | pa.Array) -> pa.Array:
    """Geometries as EWKB bytes: shapely objects are encoded, hex text read, bytes pass."""
    if isinstance(values, pa.Array):
        return values if pa.types.is_binary(values.type) else _unhex(values)
    column = np.asarray(values, dtype=object)
    hexed = np.fromiter((isinstance(g, str) for g in column), dtype=bool, count=len(column))
    out = column.copy()
    out[~hexed] = ewkb(column[~hexed])
    out[hexed] = [bytes.fromhex(g) for g in column[hexed]]
    return pa.array(out, pa.binary())


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


def copy_text(columns: Columns, names: Sequence[str], types: Mapping[str, str]) -> memoryview:
    """The COPY text-format lines of a column-oriented table, ready to send."""
    fields = [_text_column(columns[c], types[c]) for c in names]
    lines = pc.binary_join_element_wise(*fields, "\t") if len(fields) > 1 else fields[0]
    lines = pc.binary_join_element_wise(lines, "", "\n")  # each line ends with a newline
    return _data_of(lines)


def _data_of(rows: pa.Array) -> memoryview:
    """The values of a string or binary array end to end, as they lie in its data buffer:
    what COPY is sent, without a copy."""
    offsets = arrow_offsets(rows)
    data = rows.buffers()[2]
    return memoryview(data)[int(offsets[0]) : int(offsets[-1])] if data else memoryview(b"")


def binary_writable(types: Mapping[str, str], names: Sequence[str]) -> bool:
    """Whether these columns can all be sent in COPY's binary format."""
    return all(types.get(c) in _BINARY_FIXED or types.get(c) in _BINARY_VARYING for c in names)


def copy_binary(columns: Columns, names: Sequence[str], types: Mapping[str, str]) -> memoryview:
    """The COPY binary-format tuples of a column-oriented table (no signature or trailer):
    for each row, its field count, then each field's length and bytes (-1: NULL)."""
    n = table_length({c: columns[c] for c in names})
    if n == 0:
        return memoryview(b"")
    parts: list[pa.Array | pa.Scalar] = [pa.scalar(struct.pack(">h", len(names)), pa.binary())]
    for c in names:
        try:
            parts.extend(_binary_fields(columns[c], types[c], n))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
            raise ValueError(f"column {c} ({types[c]}): {exc}") from exc
    rows = pc.binary_join_element_wise(*parts, pa.scalar(b"", pa.binary()))
    return _data_of(rows)


def _binary_fields(
    values: Sequence[Any] | np.ndarray | pa.Array, kind: str, n: int
) -> list[pa.Array]:
    """One column as binary COPY fields: arrays to be joined, row by row, in order."""
    if kind in _BINARY_FIXED:
        arrow_type, layout = _BINARY_FIXED[kind]
        array = _typed(values, arrow_type)
        valid = np.asarray(array.is_valid(), dtype=bool)
        value = pc.fill_null(array, False if arrow_type == pa.bool_() else 0)
        width = np.dtype(layout).itemsize
        record = np.empty(n, dtype=[("length", ">i4"), ("value", layout)])
        record["length"] = np.where(valid, width, -1)
        record["value"] = value.to_numpy(zero_copy_only=False)
        return [_records(record.view(np.uint8).reshape(n, 4 + width), valid, 4)]
    if kind == "geometry":
        payload = _geometry_bytes(values)
    else:
        payload = _as_text(values)[0].cast(pa.binary())
    valid = np.asarray(payload.is_valid(), dtype=bool)
    lengths = np.diff(arrow_offsets(payload))
    version = kind == "jsonb"  # jsonb's binary form: a version byte, then the JSON text
    record = np.empty(n, dtype=[("length", ">i4"), ("version", "u1")])
    record["length"] = np.where(valid, lengths + version, -1)
    record["version"] = 1
    head = record.view(np.uint8).reshape(n, 5)
    prefix = _records(head, valid, 4) if version else _records(head[:, :4], valid, 4)
    return [prefix, pc.fill_null(payload, b"")]


def _typed(values: Sequence[Any] | np.ndarray | pa.Array, arrow_type: pa.DataType) -> pa.Array:
    """Values as an Arrow array of ``arrow_type``; NaN is NULL, as in the text format."""
    if not isinstance(values, pa.Array):
        try:
            values = pa.array(
                values if isinstance(values, np.ndarray) else list(values), from_pandas=True
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed (text and numbers): as text
            values = _as_text(values)[0]
    if pa.types.is_floating(values.type):
        values = pc.if_else(pc.is_nan(values), None, values)
    return values if values.type == arrow_type else pc.cast(values, arrow_type)


def _records(record: np.ndarray, valid: np.ndarray, null_width: int) -> pa.Array:
    """Fixed-width byte records (one row each) as a binary array; a NULL row keeps only
    its first ``null_width`` bytes (the -1 length)."""
    n, width = record.shape
    if valid.all():
        data = np.ascontiguousarray(record).reshape(-1)
        offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    else:
        keep = np.ones(record.shape, dtype=bool)
        keep[~valid, null_width:] = False
        data = record[keep]
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(np.where(valid, width, null_width), out=offsets[1:])
    return pa.BinaryArray.from_buffers(
        pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def _hex(binary: pa.Array) -> pa.Array:
    """Bytes (a binary array) as hex text, NULL kept, in one call."""
    return _recoded(binary, binascii.hexlify, 2, pa.string())


def _unhex(text: pa.Array) -> pa.Array:
    """Hex text (a string array) as the bytes it spells, NULL kept, in one call."""
    return _recoded(text, binascii.unhexlify, 0.5, pa.binary())


def _recoded(
    array: pa.Array, convert: Callable[[memoryview], bytes], ratio: float, kind: pa.DataType
) -> pa.Array:
    """Every value of a string or binary array through ``convert`` in one call over the
    whole buffer (each value's length times ``ratio``), as an array of ``kind``; NULL kept."""
    offsets = arrow_offsets(array)
    data = array.buffers()[2]
    raw = convert(memoryview(data)[offsets[0] : offsets[-1]]) if data else b""
    lengths = ((offsets - offsets[0]) * ratio).astype(np.int32)
    made = pa.Array.from_buffers(kind, len(array), [None, pa.py_buffer(lengths), pa.py_buffer(raw)])
    if not array.null_count:
        return made
    return pc.if_else(array.is_valid(), made, pa.scalar(None, kind))


class CopyStream:
    """An open ``COPY table (columns) FROM STDIN``; batches are written as they come.

    Each batch becomes COPY data in a thread of its own (Arrow's kernels let go of the
    GIL), and psycopg's writer thread sends it, while the caller prepares the next batch:
    the server, the formatting and the caller's work all run at once.
    """

    def __init__(
        self, copy: psycopg.Copy, names: list[str], types: Mapping[str, str], *, binary: bool
    ) -> None:
        self._copy = copy
        self.names = names
        self._types = types  # each column's type in the table
        self._format = copy_binary if binary else copy_text
        self._formatter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="copy-data")
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
            self._copy.write(self._format(chunk, self.names, self._types))

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

    Binary when every column's type allows (see the module's docstring), else text.
    ``table`` and the column names must come from the schema (an allow-list), never input.
    """
    types = catalogue.table_columns(conn, table)
    binary = binary_writable(types, names)
    statement = sql.SQL("COPY {} ({}) FROM STDIN" + (" (FORMAT binary)" if binary else "")).format(
        sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in names)
    )
    with conn.cursor() as cur, cur.copy(statement, writer=QueuedLibpqWriter(cur)) as copy:
        if binary:
            copy.write(BINARY_SIGNATURE)
        stream = CopyStream(copy, names, types, binary=binary)
        try:
            yield stream
        except BaseException:
            stream.abandon()
            raise
        stream.finish()
        if binary:
            copy.write(BINARY_TRAILER)


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
