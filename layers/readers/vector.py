"""Vector files GDAL reads (through pyogrio's Arrow stream), a batch at a time: layers
chosen, a shapefile's text encoding guessed, GDAL's messages put in the reader's words.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyogrio
import shapely

from layers.readers.frames import FeatureFrame, FeatureReader
from layers.readers.json_text import NulFeatures
from twin.errors import InvalidInput

BATCH_ROWS = 50_000  # features per batch when a file is read a batch at a time
FIRST_ROWS = 10_000  # the first batch is cut to this, so the data base starts sooner


def dbf_encoding(read: Any, names: list[str], shp: str) -> str | None:
    """The text encoding of a shapefile's .dbf when no .cpg says it.

    Without a .cpg GDAL assumes ISO-8859-1, which turns the GBK that Chinese providers
    write into mojibake. Bytes that are not UTF-8 are read as GB18030 (a superset of GBK).
    """
    stem = shp[: -len(Path(shp).suffix)]
    by_lower = {n.lower(): n for n in names}
    if by_lower.get(f"{stem}.cpg".lower()):
        return None  # GDAL reads the .cpg itself
    dbf = by_lower.get(f"{stem}.dbf".lower())
    if dbf is None:
        return None
    sample = read(dbf)[:262_144]
    if all(b < 128 for b in sample):
        return None
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(sample) - 4:  # not just a character cut at the sample's end
            return "GB18030"
    return "UTF-8"


@contextmanager
def open_gdal(
    location: str,
    name: str,
    *,
    layer: str | None,
    encoding: str | None,
    nul: NulFeatures | None = None,
) -> Iterator[FeatureReader]:
    """A GDAL dataset's layer open as an Arrow stream; ``nul`` the features GDAL will cut at
    a NUL (see ``json_text``), refused when GDAL counts the features otherwise."""
    with ExitStack() as opened:
        try:
            layers = pyogrio.list_layers(location)
            names = ", ".join(str(row[0]) for row in layers)
            if layer is None and len(layers) > 1:
                raise InvalidInput(
                    f"{name} has several layers ({names}): choose one as the layer",
                    option="layer",
                )
            if layer is not None and layer not in {str(row[0]) for row in layers}:
                raise InvalidInput(
                    f"{name} has no layer {layer!r} (its layers: {names})", option="layer"
                )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # GDAL's notes about the file come as errors
                count = pyogrio.read_info(location, layer=layer, encoding=encoding)["features"]
                meta, stream = opened.enter_context(
                    pyogrio.raw.open_arrow(
                        location, layer=layer, encoding=encoding, return_fids=True,
                        batch_size=BATCH_ROWS, use_pyarrow=True,
                    )
                )  # fmt: skip
        # pyogrio's own errors (DataSourceError …) and GDAL's come as these.
        except (ValueError, OSError, RuntimeError) as exc:
            message = _gdal_message(exc, location, name)
            raise InvalidInput(f"cannot read {name}: {message}") from exc
        written_nul = nul[1] if nul else {}
        if written_nul and count >= 0 and count != nul[0]:
            # GDAL read the features otherwise than they are written: no place to name.
            raise InvalidInput(
                f"{name} holds NUL characters (\\u0000), which cannot be stored, in "
                f"{len(written_nul):,} features: remove them and import it again"
            )
        geometry = meta.get("geometry_name") or "wkb_geometry"
        if geometry not in stream.schema.names:
            raise InvalidInput(f"{name} has no geometry column")
        fid = meta.get("fid_column") or "OGC_FID"
        crs = meta.get("crs")
        yield FeatureReader(
            name,
            crs,
            count if count >= 0 else None,
            _gdal_batches(stream, location, name, crs, fid, geometry, written_nul),
        )


def _gdal_batches(
    stream: Any,
    location: str,
    name: str,
    crs: str | None,
    fid: str,
    geometry: str,
    written_nul: dict[int, tuple[Any, dict[str, Any]]],
) -> Iterator[FeatureFrame]:
    first = True
    start = 0  # the place in the file of the batch's first feature

    def frame(batch: pa.RecordBatch) -> FeatureFrame:
        nonlocal start
        made = _frame(batch, name, crs, fid, geometry)
        if written_nul:
            end = start + batch.num_rows
            made.written_nul = {
                i - start: v for i, v in written_nul.items() if start <= i < end
            } or None
        start += batch.num_rows
        return made

    while True:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                batch = stream.read_next_batch()
        except StopIteration:
            return
        # pyogrio's own errors (DataSourceError …) are RuntimeErrors.
        except (pa.ArrowException, ValueError, OSError, RuntimeError) as exc:
            raise InvalidInput(f"cannot read {name}: {_gdal_message(exc, location, name)}") from exc
        if first and batch.num_rows > FIRST_ROWS:
            # A small first batch: the data base starts storing sooner.
            yield frame(batch.slice(0, FIRST_ROWS))
            batch = batch.slice(FIRST_ROWS)
        first = False
        yield frame(batch)


def _frame(
    batch: pa.RecordBatch, name: str, crs: str | None, fid: str, geometry: str
) -> FeatureFrame:
    wkb = batch.column(geometry)
    if pa.types.is_large_binary(wkb.type):
        wkb = wkb.cast(pa.binary())
    fields = {
        column: _plain(batch.column(column))
        for column in batch.schema.names
        if column not in (fid, geometry)
    }
    return FeatureFrame(
        fields=fields,
        geoms=shapely.from_wkb(wkb.to_numpy(zero_copy_only=False), on_invalid="ignore"),
        fids=np.asarray(pc.cast(batch.column(fid), pa.string()).to_numpy(zero_copy_only=False)),
        crs=crs,
        source=name,
        wkb=wkb,
    )


def _plain(column: pa.Array) -> pa.Array:
    """Dates and times as ISO text (parsers read years from it); other types as they are."""
    if pa.types.is_temporal(column.type):
        return pc.cast(column, pa.string())
    return column


def _gdal_message(exc: Exception, location: str, name: str) -> str:
    """GDAL's first line, naming the file as the person knows it (not where we put it)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "SHAPE_RESTORE_SHX" in text or ".shx" in text:
        return (
            "a shapefile is several files (.shp, .shx, .dbf, .prj): keep them together, "
            "or send them as one zip"
        )
    if "Too many nested objects" in text:  # GDAL's JSON reader has a depth limit
        return (
            "it nests lists or objects too deeply to read; a feature's properties and "
            "coordinates nest a few levels at most"
        )
    if "disk image is malformed" in text or "file is not a database" in text:
        return "not a readable GeoPackage (is the file complete? it looks truncated or damaged)"
    text = text.replace(location, name).replace(str(Path(location).parent) + "/", "")
    # GDAL's advice to prefix the path with a driver name is not something twin takes.
    text = re.sub(r"[;,]?\s*It might help to specify the correct driver.*$", "", text)
    text = re.sub(r"\s*\(?[Pp]refix.*driver.*$", "", text)
    if "not recognized as" in text or "not a supported file format" in text:
        text += " (is the file complete, and its extension right?)"
    return text
