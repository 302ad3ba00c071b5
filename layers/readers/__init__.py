"""Reading providers' files into one shape: fields, geometries, source ids and the file's CRS.

GDAL (through pyogrio) reads GeoJSON, GeoPackage, Shapefile (plain or zipped), FlatGeobuf
and every other vector format it knows; CSV with coordinate or WKT columns is read here so
that a file without them gets a message naming the columns it has.

By concern: ``frames`` (FeatureFrame, FeatureReader), ``files`` (the door: ``open_features``,
``read_features``), ``vector`` (GDAL's formats), ``tables`` (CSV), ``archives`` (zip),
``json_text`` (NUL characters in JSON text) and ``geojson`` (GeoJSON already parsed).
"""

from __future__ import annotations

from layers.readers.archives import MAX_UNZIPPED_BYTES, MAX_ZIP_RATIO, VECTOR_SUFFIXES
from layers.readers.files import (
    GDAL_NUMBER_FALLBACK_BYTES,
    READABLE_SUFFIXES,
    check_path,
    open_features,
    read_features,
)
from layers.readers.frames import Column, FeatureFrame, FeatureReader, is_none, no_coordinates
from layers.readers.geojson import MAX_GEOJSON_FEATURES, frame_from_geojson, geojson_geometry
from layers.readers.json_text import JSON_TEXT_SUFFIXES, NUL_ESCAPE, NulFeatures, nul_features
from layers.readers.tables import CSV_SUFFIXES, WKT_COLUMNS, X_COLUMNS, Y_COLUMNS
from layers.readers.vector import BATCH_ROWS, FIRST_ROWS

__all__ = [
    "BATCH_ROWS",
    "CSV_SUFFIXES",
    "FIRST_ROWS",
    "GDAL_NUMBER_FALLBACK_BYTES",
    "JSON_TEXT_SUFFIXES",
    "MAX_GEOJSON_FEATURES",
    "MAX_UNZIPPED_BYTES",
    "MAX_ZIP_RATIO",
    "NUL_ESCAPE",
    "READABLE_SUFFIXES",
    "VECTOR_SUFFIXES",
    "WKT_COLUMNS",
    "X_COLUMNS",
    "Y_COLUMNS",
    "Column",
    "FeatureFrame",
    "FeatureReader",
    "NulFeatures",
    "check_path",
    "frame_from_geojson",
    "geojson_geometry",
    "is_none",
    "no_coordinates",
    "nul_features",
    "open_features",
    "read_features",
]
