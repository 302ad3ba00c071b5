"""The one shape every reader gives: a FeatureFrame (fields, geometries, source ids and the
file's CRS, column-oriented) and a FeatureReader that yields them a batch at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

Column = np.ndarray | pa.Array  # object arrays (None or NaN = blank) or Arrow arrays


@dataclass
class FeatureFrame:
    """Features read from one file (or one batch of it), column-oriented."""

    fields: dict[str, Column]  # source field -> values
    geoms: np.ndarray  # shapely geometries, None where a feature has none or it is unreadable
    fids: np.ndarray  # the file's own feature ids, as text
    crs: str | None  # the CRS the file declares, if any
    source: str  # what was read, for messages
    wkb: pa.Array | None = None  # the file's own WKB, when GDAL read it (see ingest)
    # Why a feature's coordinates could not be read (None where they could, or were absent).
    geometry_reasons: np.ndarray | None = None
    labels: list[str] | None = None  # how a request body's features are named in errors
    plain_table: bool = False  # a table without coordinate columns: no feature has a place
    # Features whose values as the file writes them hold a NUL character (\u0000), which
    # GDAL's C strings cut off: their row in this frame -> (id, properties) as written.
    written_nul: dict[int, tuple[Any, dict[str, Any]]] | None = None
    ids_given: bool = False  # fids are the features' own ids (GeoJSON "id"), not row numbers

    def __len__(self) -> int:
        return len(self.geoms)


@dataclass
class FeatureReader:
    """A file open for reading, a batch of features at a time (see ``open_features``)."""

    source: str
    crs: str | None
    count: int | None  # features in the file, when the format says so cheaply
    batches: Iterator[FeatureFrame] = field(repr=False)

    def __iter__(self) -> Iterator[FeatureFrame]:
        return self.batches


def concat_frames(frames: list[FeatureFrame], reader: FeatureReader) -> FeatureFrame:
    """A file's batches as one frame (``read_features``), NUL rows renumbered to match."""
    if not frames:
        return FeatureFrame({}, np.empty(0, dtype=object), np.empty(0, dtype=object),
                            reader.crs, reader.source)  # fmt: skip
    names = list(frames[0].fields)
    wkbs = [f.wkb for f in frames]
    nul: dict[int, tuple[Any, dict[str, Any]]] = {}
    start = 0
    for f in frames:
        nul.update({start + i: v for i, v in (f.written_nul or {}).items()})
        start += len(f)
    return FeatureFrame(
        fields={n: pa.concat_arrays([f.fields[n] for f in frames]) for n in names},  # type: ignore[misc]
        geoms=np.concatenate([f.geoms for f in frames]),
        fids=np.concatenate([f.fids for f in frames]),
        crs=reader.crs,
        source=reader.source,
        wkb=None if any(w is None for w in wkbs) else pa.concat_arrays(wkbs),  # type: ignore[arg-type]
        written_nul=nul or None,
    )


def no_coordinates(frame: FeatureFrame) -> str:
    """The message for a plain table imported into a layer whose features need a place."""
    return (
        f"{frame.source} has no coordinate columns: expected lon/lat, x/y or WKT "
        f"(its columns are {', '.join(frame.fields)})"
    )


def is_none(values: np.ndarray) -> np.ndarray:
    """Where an object array holds None, in C rather than a Python loop."""
    return np.equal(values, None)
