"""CSV (and TSV) files read here rather than by GDAL: coordinate or WKT columns found by
their names, in English or Chinese, and a file without them named by the columns it has.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any

import numpy as np
import shapely

from layers.readers.frames import FeatureFrame, is_none
from twin.errors import InvalidInput

CSV_SUFFIXES = {".csv", ".tsv", ".txt"}
X_COLUMNS = (
    "lon",
    "lng",
    "long",
    "longitude",
    "x",
    "经度",
    "x坐标",
    "东坐标",
    "easting",
    "point_x",
)
Y_COLUMNS = ("lat", "latitude", "y", "纬度", "y坐标", "北坐标", "northing", "point_y")
WKT_COLUMNS = ("wkt", "geometry", "geom", "the_geom", "shape", "几何", "坐标串")


def read_csv(raw: bytes, name: str) -> FeatureFrame:
    """A CSV's rows (UTF-8 or GB18030, its delimiter sniffed) with points from its coordinate
    columns or geometries from its WKT column; a plain table when it has neither."""
    text = _decode(raw, name)
    sample = text[:20_000]
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    try:
        header = next(reader)
    except StopIteration as exc:
        raise InvalidInput(f"{name} is empty") from exc
    header = [h.strip() for h in header]
    rows = list(reader)
    columns: dict[str, list[Any]] = {h: [] for h in header}
    for number, row in enumerate(rows, start=2):
        if len(row) != len(header) and any(cell.strip() for cell in row):
            if len(row) < len(header):
                row = row + [""] * (len(header) - len(row))
            else:
                raise InvalidInput(
                    f"{name} line {number}: {len(row)} values for {len(header)} columns"
                )
        for h, cell in zip(header, row, strict=False):
            columns[h].append(cell.strip() or None)
    lowered = {h.lower(): h for h in header}
    x_col = next((lowered[c] for c in X_COLUMNS if c in lowered), None)
    y_col = next((lowered[c] for c in Y_COLUMNS if c in lowered), None)
    wkt_col = next((lowered[c] for c in WKT_COLUMNS if c in lowered), None)
    n = len(rows)
    reasons = None
    plain = False
    if x_col and y_col:
        xs, x_why = _coordinates(columns[x_col], x_col)
        ys, y_why = _coordinates(columns[y_col], y_col)
        ok = is_none(x_why) & is_none(y_why) & ~np.isnan(xs) & ~np.isnan(ys)
        geoms = np.full(n, None, dtype=object)
        geoms[ok] = shapely.points(xs[ok], ys[ok])
        reasons = np.where(is_none(x_why), y_why, x_why)
        used = {x_col, y_col}
    elif wkt_col:
        geoms = np.array([_wkt(v) for v in columns[wkt_col]], dtype=object)
        used = {wkt_col}
    else:
        # A plain table (a list of units, say): the importer refuses it for layers whose
        # features need a place, naming the columns it has (see NO_COORDINATES).
        geoms, used, plain = np.full(n, None, dtype=object), set(), True
    fields = {h: np.array(v, dtype=object) for h, v in columns.items() if h not in used}
    return FeatureFrame(
        fields=fields,
        geoms=geoms,
        fids=np.array([str(i) for i in range(1, n + 1)], dtype=object),
        crs=None,
        source=name,
        geometry_reasons=reasons,
        plain_table=plain,
    )


def decoded(raw: bytes, encodings: tuple[str, ...]) -> str | None:
    """``raw`` as text in the first of ``encodings`` it is valid in; None if in none."""
    for encoding in encodings:
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return None


def _decode(raw: bytes, name: str) -> str:
    text = decoded(raw, ("utf-8-sig", "gb18030"))
    if text is None:
        raise InvalidInput(f"{name} is neither UTF-8 nor GB18030 text")
    return text


def _coordinates(values: list[str | None], column: str) -> tuple[np.ndarray, np.ndarray]:
    """A coordinate column's numbers (NaN where empty) and why each given value that is
    not a finite number cannot be one (None where it is, or the cell is empty)."""
    numbers = np.full(len(values), np.nan)
    reasons = np.full(len(values), None, dtype=object)
    for i, value in enumerate(values):
        if value is None:
            continue
        try:
            number = float(value.replace(",", "."))
        except ValueError:
            reasons[i] = f"{column} {value!r} is not a number"
            continue
        if math.isnan(number):
            reasons[i] = f"{column} {value!r} is not a number"
        elif math.isinf(number):
            reasons[i] = f"{column} {value!r} is not a finite number"
        else:
            numbers[i] = number
    return numbers, reasons


def _wkt(value: str | None) -> Any:
    if value is None:
        return None
    try:
        # NaN in WKT: the import names it, not a warning. errstate, not catch_warnings:
        # it is the calling thread's alone, the warnings filters are the whole process's.
        with np.errstate(invalid="ignore"):
            return shapely.from_wkt(value)
    except shapely.errors.GEOSException:
        return None
