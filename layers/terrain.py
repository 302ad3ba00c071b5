"""Terrain: a ground elevation model (DEM) in the data base, and elevations sampled from it.

rasterio reads any raster GDAL knows and warps it into the storage CRS; the result is cut
into tiles stored as PostGIS rasters (written in PostGIS's raster WKB, so no GDAL driver
needs enabling in the server). Buildings, pipe nodes and sensors that lack an elevation get
the ground elevation under them.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import rasterio
from psycopg import sql
from rasterio.errors import RasterioIOError
from rasterio.warp import Resampling, calculate_default_transform, reproject

from twin import changes, registry
from twin.bulk import copy_table
from twin.crs import resolve_crs
from twin.errors import InvalidInput
from twin.schema import SRID

TILE = 256
NODATA = -9999.0
LAYER = "terrain"
Progress = Callable[[str, int, int], None]


def import_dem(
    conn: psycopg.Connection,
    path: Path | str,
    *,
    crs: str | None = None,
    dataset: str | None = None,
    provider: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Load a DEM (replacing the same dataset's tiles) and sample missing elevations."""
    path = Path(path)
    dataset = dataset or path.stem
    elevation, transform = _read_in_storage_crs(path, crs)
    finite = elevation[elevation != NODATA]
    if finite.size == 0:
        raise InvalidInput(f"{path.name} holds no elevation values (all no-data)")
    if finite.min() < -500 or finite.max() > 9000:
        raise InvalidInput(
            f"{path.name}: elevations from {finite.min():.0f} to {finite.max():.0f} are not "
            "metres of ground height (is it a DEM, in metres?)"
        )
    tiles = list(_tiles(elevation, transform))
    with conn.transaction():
        replaced = changes.box_of(
            conn, sql.SQL("SELECT ST_Envelope(rast) FROM terrain_tiles WHERE dataset = %s"),
            (dataset,),
        )  # fmt: skip
        conn.execute("DELETE FROM terrain_tiles WHERE dataset = %s", (dataset,))
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress("load terrain tiles", done, len(tiles))

        copy_table(
            conn,
            "terrain_tiles",
            {"dataset": [dataset] * len(tiles), "rast": tiles},
            progress=advance,
        )
        _register(conn, provider, crs or "from file")
        loaded = changes.box_of(
            conn, sql.SQL("SELECT ST_Envelope(rast) FROM terrain_tiles WHERE dataset = %s"),
            (dataset,),
        )  # fmt: skip
        changes.record(
            conn, LAYER, "import", box=changes.union(replaced, loaded), dataset=dataset,
            features=len(tiles), table="terrain_tiles", geometry=sql.SQL("ST_Envelope(rast)"),
        )  # fmt: skip
        sampled = sample_elevations(conn)
    height, width = elevation.shape
    return {
        "dataset": dataset,
        "tiles": len(tiles),
        "size": [width, height],
        "min_m": float(finite.min()),
        "max_m": float(finite.max()),
        "sampled": sampled,
    }


def _read_in_storage_crs(path: Path, crs: str | None) -> tuple[np.ndarray, Any]:
    try:
        with rasterio.open(path) as source:
            source_crs = source.crs
            if crs:
                given = resolve_crs(crs, "crs")
                if given.crs is None:
                    raise InvalidInput(
                        "a DEM in GCJ-02 or BD-09 is not supported: give it in an EPSG CRS"
                    )
                source_crs = rasterio.crs.CRS.from_wkt(given.crs.to_wkt())
            if source_crs is None:
                raise InvalidInput(
                    f"{path.name} does not say its CRS: give it, e.g. EPSG:4549", option="crs"
                )
            band = source.read(1, masked=True).astype("float32").filled(NODATA)
            dst_crs = rasterio.crs.CRS.from_epsg(SRID)
            transform, width, height = calculate_default_transform(
                source_crs, dst_crs, source.width, source.height, *source.bounds
            )
            out = np.full((height, width), NODATA, dtype="float32")
            reproject(
                band,
                out,
                src_transform=source.transform,
                src_crs=source_crs,
                src_nodata=NODATA,
                dst_transform=transform,
                dst_crs=dst_crs,
                dst_nodata=NODATA,
                resampling=Resampling.bilinear,
            )
    except RasterioIOError as exc:
        raise InvalidInput(f"cannot read {path.name} as a raster: {exc}") from exc
    return out, transform


def _tiles(elevation: np.ndarray, transform: Any) -> Any:
    """PostGIS raster WKB (hex) of each TILE x TILE block that holds any value."""
    height, width = elevation.shape
    for row in range(0, height, TILE):
        for col in range(0, width, TILE):
            block = elevation[row : row + TILE, col : col + TILE]
            if not (block != NODATA).any():
                continue
            x, y = transform @ (col, row)
            yield raster_wkb(block, x, y, transform.a, transform.e).hex()


def raster_wkb(block: np.ndarray, upper_left_x: float, upper_left_y: float,
               scale_x: float, scale_y: float) -> bytes:  # fmt: skip
    """One band of 32-bit floats in PostGIS's raster WKB (little endian, version 0)."""
    rows, cols = block.shape
    header = struct.pack(
        "<BHHddddddiHH", 1, 0, 1, scale_x, scale_y, upper_left_x, upper_left_y, 0.0, 0.0,
        SRID, cols, rows,
    )  # fmt: skip
    band = struct.pack("<Bf", 64 | 10, NODATA)  # has-nodata flag | 32BF pixel type
    return header + band + np.ascontiguousarray(block, dtype="<f4").tobytes()


def sample_elevations(
    conn: psycopg.Connection, layers: Iterable[registry.Layer] | None = None
) -> dict[str, int]:
    """Fill missing elevations of ``layers`` (by default every layer that takes them) from
    the terrain; returns how many were filled per layer, each recorded as a change."""
    counts = {}
    chosen = layers if layers is not None else registry.BUILTIN_LAYERS
    for layer in chosen:
        if layer.elevation is None:
            continue
        # Table, column and point expression come from the registry, never from input.
        query = sql.SQL(
            """
            WITH filled AS (
                UPDATE {table} f SET {column} = round(v.z::numeric, 2)
                FROM (
                    -- Where DEMs overlap, the latest import's value (as the tiles draw it).
                    SELECT DISTINCT ON (f.id) f.id, v.z
                    FROM {table} f JOIN terrain_tiles t ON ST_Intersects(t.rast, {point})
                    CROSS JOIN LATERAL (SELECT ST_Value(t.rast, 1, {point}) AS z) v
                    WHERE f.{column} IS NULL AND v.z IS NOT NULL
                    ORDER BY f.id, t.id DESC
                ) v
                WHERE f.id = v.id
                RETURNING f.geom
            )
            SELECT n, ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e)
            FROM (SELECT count(*) AS n, ST_Extent(geom) AS e FROM filled) AS x
            """
        ).format(
            table=sql.Identifier(layer.table),
            column=sql.Identifier(layer.elevation.column),
            point=sql.SQL(layer.elevation.point),
        )
        row = conn.execute(query).fetchone()
        filled = int(row[0]) if row is not None else 0
        if filled and row is not None:
            changes.record(
                conn, layer.name, "elevation", box=(row[1], row[2], row[3], row[4]),
                features=filled, table=layer.table,
            )  # fmt: skip
        counts[layer.name] = filled
    return counts


def terrain_loaded(conn: psycopg.Connection) -> bool:
    """Whether any terrain tile is stored."""
    return bool(conn.execute("SELECT EXISTS (SELECT 1 FROM terrain_tiles)").fetchone()[0])  # type: ignore[index]


def _register(conn: psycopg.Connection, provider: str | None, source_crs: str) -> None:
    conn.execute(
        """
        INSERT INTO layer_catalogue (name, title, description, kind, table_name, geometry_type)
        VALUES ('terrain', 'Terrain 地形', 'Ground elevation model (DEM), metres.', 'terrain',
                'terrain_tiles', 'Raster')
        ON CONFLICT (name) DO NOTHING
        """
    )
    # The count and extent follow from the change log (import_dem records the change).
    conn.execute(
        "UPDATE layer_catalogue SET provider = COALESCE(%s, provider), source_crs = %s"
        " WHERE name = 'terrain'",
        (provider, source_crs),
    )
