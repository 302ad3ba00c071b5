"""Terrain tiles: the DEM under a tile, warped onto the tile's grid and encoded as a PNG.

Two images per tile address. The *coverage* tile holds the elevations in Terrarium
encoding (``R * 256 + G + B / 256 - 32768`` metres), what deck.gl's TerrainLayer and
MapLibre's raster-dem source decode into a ground mesh. The *map* tile is the DEM to look
at: elevation colours (stretched over the DEM's own range, the same for every tile) shaded
by the slope, transparent where there is no DEM; the TerrainLayer drapes it as its texture.

A tile is the WebMercatorQuad matrix's own 256 x 256 pixels: what the OGC set declares,
what Terrarium tiles have always been (AWS's open elevation tiles) and a quarter of the
work of 512 (clients overzoom past the TileJSON's maxzoom).

The blocks of the DEM under a tile are read in one query (blocks much finer than the tile
are decimated in PostGIS first, so a low zoom never reads a whole fine DEM), pasted into
one array per grid and warped into EPSG:3857 with rasterio (bilinear). Inside the tile,
where the DEM has no value, the coverage tile takes the nearest DEM value (so a mesh
ends in flat ground at the DEM's edge, not a wall down to -32768 or to sea level) and
the map tile is transparent; a tile with no DEM under it at all is empty (b"").
"""

from __future__ import annotations

import io
import math
import struct
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from PIL import Image
from rasterio.crs import CRS
from rasterio.transform import Affine, from_bounds
from rasterio.warp import Resampling, calculate_default_transform, reproject
from scipy import ndimage

from tiles import matrix
from twin import registry
from twin.errors import NotFound
from twin.schema import SRID

NODATA = -9999.0  # what a warped pixel with no DEM under it holds, before encoding
COVERAGE = "coverage"
MAP = "map"
KINDS = (COVERAGE, MAP)
# The terrain's name in the catalogue (layers.terrain registers it), its collection's id.
NAME = "terrain"
# What each kind of tile holds, for the documents that describe them (TileJSON, OGC).
DESCRIPTIONS = {
    COVERAGE: "Ground elevation (DEM), metres, Terrarium-encoded: R * 256 + G + B / 256 - 32768",
    MAP: "Ground elevation (DEM), coloured by height and shaded by slope",
}
TERRARIUM_OFFSET = 32768.0
# Bumped when the images drawn from the same DEM change (colours, shading, encoding),
# so clients holding an ETag of the old drawing fetch the new one.
DRAWING = 1
# Keep source pixels at least this much finer than the tile's before warping: bilinear
# from a source at twice the tile's resolution loses nothing a tile can show.
OVERSAMPLE = 2.0
# At the TileJSON's minzoom the DEM spans at least this many pixels: below it the
# relief is a smudge, and a tile would read the whole DEM for it.
MIN_SPAN_PX = 64
# The light of the shading: from the north-west, 45 degrees up (the cartographic habit),
# as a unit vector east, north, up.
_AZIMUTH, _ALTITUDE = math.radians(315.0), math.radians(45.0)
_SUN = (
    math.cos(_ALTITUDE) * math.sin(_AZIMUTH),
    math.cos(_ALTITUDE) * math.cos(_AZIMUTH),
    math.sin(_ALTITUDE),
)
# Elevation colours from the lowest ground of the DEM to the highest (hypsometric tints).
RAMP = np.array(
    [
        (0.00, 46, 117, 82),
        (0.25, 120, 170, 95),
        (0.50, 222, 214, 140),
        (0.75, 186, 141, 88),
        (1.00, 240, 236, 230),
    ]
)
# The ramp as 256 colours, looked up by the elevation's share of the DEM's range.
_COLOURS = np.stack(
    [np.interp(np.linspace(0, 1, 256), RAMP[:, 0], RAMP[:, c]) for c in (1, 2, 3)], axis=-1
).astype("float32")
_STORAGE = CRS.from_epsg(SRID)
# One warp at a time per process. rasterio wraps the in-memory dataset it makes for an
# array in warnings.catch_warnings(), and before Python 3.14 that swaps the process's one
# warnings filter list: two tiles warped at once in the API's threads undo each other's
# silencing, and its NotGeoreferencedWarning reaches the log (a 500 under -W error).
# A warp of a tile is about a millisecond; the read and the PNG stay parallel.
_WARP = threading.Lock()
_NO_TERRAIN = "no terrain is loaded: load a DEM with `twin terrain import DEM.tif`"
# PostGIS raster pixel types (1BB, 2BUI, 4BUI take a byte each) as numpy's.
_PIXEL_TYPES = {0: "u1", 1: "u1", 2: "u1", 3: "i1", 4: "u1", 5: "i2", 6: "u2", 7: "i4",
                8: "u4", 10: "f4", 11: "f8"}  # fmt: skip


@dataclass(frozen=True)
class Terrain:
    """What is loaded: the version of its last import (the tiles' ETag follows it), its
    extent in degrees, its elevation range and its finest pixel in degrees."""

    version: int
    bounds: tuple[float, float, float, float]
    min_m: float
    max_m: float
    pixel_deg: tuple[float, float]


_STATS: dict[tuple[str, str, int], Terrain] = {}  # one per data base and version


def terrain(conn: psycopg.Connection) -> Terrain:
    """The loaded terrain, read at its current version; NotFound (saying how to load one)
    when there is none. The range and pixel size are read once per version."""
    row = conn.execute(
        "SELECT version, ST_XMin(extent), ST_YMin(extent), ST_XMax(extent), ST_YMax(extent)"
        " FROM layer_catalogue WHERE name = 'terrain' AND feature_count > 0"
    ).fetchone()
    if row is None or row[1] is None:
        raise NotFound(_NO_TERRAIN)
    key = (conn.info.host, conn.info.dbname, int(row[0]))
    known = _STATS.get(key)
    if known is not None:
        return known
    stats = conn.execute(
        """
        SELECT min((s).min), max((s).max), min(abs(ST_ScaleX(rast))), min(abs(ST_ScaleY(rast)))
        FROM (SELECT rast, ST_SummaryStats(rast, 1, true) AS s FROM terrain_tiles) AS t
        """
    ).fetchone()
    if stats is None or stats[0] is None:
        raise NotFound(_NO_TERRAIN)
    found = Terrain(
        version=int(row[0]),
        bounds=(float(row[1]), float(row[2]), float(row[3]), float(row[4])),
        min_m=float(stats[0]),
        max_m=float(stats[1]),
        pixel_deg=(float(stats[2]), float(stats[3])),
    )
    if len(_STATS) > 64:  # old versions are never asked again
        _STATS.clear()
    _STATS[key] = found
    return found


def catalogued(catalogue: registry.Catalogue) -> dict[str, Any]:
    """The terrain's catalogue entry (title, description, extent) when a DEM is loaded;
    NotFound saying how to load one otherwise. Read from the catalogue as the process
    holds it, so listing the terrain beside the feature layers costs no query."""
    layer = catalogue.layers.get(NAME)
    entry = catalogue.entries.get(NAME) or {}
    raster = layer is not None and not layer.has_features
    if not (raster and entry.get("feature_count") and entry.get("bbox")):
        raise NotFound(_NO_TERRAIN)
    return entry


def etag(found: Terrain, kind: str, tile: matrix.Tile) -> str:
    """The ETag of a tile of ``kind`` drawn from the terrain at its version."""
    return f'"terrain-{kind}-{found.version}-{DRAWING}-{tile.z}-{tile.y}-{tile.x}"'


def render(conn: psycopg.Connection, found: Terrain, kind: str, tile: matrix.Tile,
           tms_id: str = "WebMercatorQuad") -> bytes:  # fmt: skip
    """The PNG of ``tile``: Terrarium elevations (``coverage``) or the coloured, shaded
    DEM (``map``); b"" when no DEM lies under the tile."""
    elevation = elevations(conn, tile, tms_id)
    if elevation is None:
        return b""
    if kind == COVERAGE:
        return _png(terrarium(_filled(elevation[1:-1, 1:-1])), "RGB")
    return _png(shaded(elevation, found, _pixel_metres(tile, tms_id, elevation.shape[0])), "RGBA")


def elevations(
    conn: psycopg.Connection, tile: matrix.Tile, tms_id: str = "WebMercatorQuad"
) -> np.ndarray | None:
    """The DEM on the tile's grid with one pixel more on each side (for the slope at its
    edges), NODATA where there is none; None when no DEM lies under the tile."""
    tms = matrix.matrix_set(tms_id)
    size = tms.matrix(tile.z).tileWidth
    left, bottom, right, top = tms.xy_bounds(tile)
    step = (right - left) / size
    transform = from_bounds(
        left - step, bottom - step, right + step, top + step, size + 2, size + 2
    )
    west, south, east, north = matrix.lonlat_bounds(tms_id, tile)
    # The finest the source need be, in degrees (a pixel's height in latitude is the
    # smaller side in Web Mercator), and a margin for the kernel and the border pixel.
    pixel = (north - south) / size
    margin = 3 * (east - west) / size
    rows = conn.execute(
        """
        SELECT ST_AsBinary(CASE WHEN f > 1
                   THEN ST_Rescale(rast, ST_ScaleX(rast) * f, ST_ScaleY(rast) * f, 'Bilinear')
                   ELSE rast END)
        FROM (
            SELECT id, rast, power(2, least(8, greatest(0, floor(ln(%(pixel)s
                       / (%(oversample)s * greatest(abs(ST_ScaleX(rast)), abs(ST_ScaleY(rast)))))
                       / ln(2)))))::int AS f
            FROM terrain_tiles
            WHERE ST_ConvexHull(rast) && ST_MakeEnvelope(%(w)s, %(s)s, %(e)s, %(n)s, %(srid)s)
        ) AS under
        ORDER BY id
        """,
        {"pixel": pixel, "oversample": OVERSAMPLE, "w": west - margin, "s": south - margin,
         "e": east + margin, "n": north + margin, "srid": SRID},
    ).fetchall()  # fmt: skip
    blocks = [b for b in (_block(bytes(r[0])) for r in rows) if b is not None]
    if not blocks:
        return None
    out = np.full((size + 2, size + 2), NODATA, dtype="float32")
    for mosaic, mosaic_transform in _mosaics(blocks):
        # Only the part under the tile: rasterio copies the whole source for GDAL.
        source, source_transform = _window(
            mosaic, mosaic_transform, (west - margin, south - margin, east + margin, north + margin)
        )
        if source.size == 0:
            continue
        # Contiguous: rasterio copies a strided array into a GDAL MEM dataset it makes
        # without a geotransform first, and warns (NotGeoreferencedWarning) in the log.
        source = np.ascontiguousarray(source)
        with _WARP:
            reproject(
                source, out, src_transform=source_transform, src_crs=_STORAGE,
                src_nodata=NODATA, dst_transform=transform, dst_crs=tms.rasterio_crs,
                dst_nodata=NODATA, init_dest_nodata=False, resampling=Resampling.bilinear,
            )  # fmt: skip
    if not (out[1:-1, 1:-1] != NODATA).any():
        return None
    return out


def _block(wkb: bytes) -> tuple[np.ndarray, Affine] | None:
    """A PostGIS raster's first band (as float32, NODATA for its no-data) and its
    geotransform; None for a band that is all no-data."""
    order = "<" if wkb[0] == 1 else ">"
    _, _, bands, sx, sy, ulx, uly, kx, ky, _, width, height = struct.unpack_from(
        order + "BHHddddddiHH", wkb
    )
    if bands == 0:
        return None
    flags = wkb[61]
    dtype = np.dtype(_PIXEL_TYPES[flags & 0x0F]).newbyteorder(order)
    if flags & 0x20 or flags & 0x80:  # all no-data, or out-of-db (we store none)
        return None
    nodata = np.frombuffer(wkb, dtype, count=1, offset=62)[0]
    start = 62 + dtype.itemsize
    band = np.frombuffer(wkb, dtype, count=width * height, offset=start).reshape(height, width)
    values = band.astype("float32")
    if flags & 0x40:
        values[band == nodata] = NODATA
    return values, Affine(sx, kx, ulx, ky, sy, uly)


def _mosaics(blocks: list[tuple[np.ndarray, Affine]]) -> list[tuple[np.ndarray, Affine]]:
    """The blocks pasted into one array per grid (one per DEM's resolution and alignment;
    later imports over earlier ones), so the warp sees no seams between blocks."""
    grids: dict[tuple[float, ...], list[tuple[np.ndarray, Affine]]] = {}
    for values, t in blocks:
        key = (round(t.a, 12), round(t.e, 12), round(t.c / t.a % 1, 6), round(t.f / t.e % 1, 6))
        grids.setdefault(key, []).append((values, t))
    mosaics = []
    for members in grids.values():
        first = members[0][1]
        ulx = min(t.c for _, t in members)
        uly = max(t.f for _, t in members) if first.e < 0 else min(t.f for _, t in members)
        places = [
            (values, round((t.c - ulx) / first.a), round((t.f - uly) / first.e))
            for values, t in members
        ]
        height = max(row + v.shape[0] for v, _, row in places)
        width = max(col + v.shape[1] for v, col, _ in places)
        mosaic = np.full((height, width), NODATA, dtype="float32")
        for values, col, row in places:
            target = mosaic[row : row + values.shape[0], col : col + values.shape[1]]
            np.copyto(target, values, where=values != NODATA)
        mosaics.append((mosaic, Affine(first.a, 0.0, ulx, 0.0, first.e, uly)))
    return mosaics


def _window(
    values: np.ndarray, transform: Affine, box: tuple[float, float, float, float]
) -> tuple[np.ndarray, Affine]:
    """The part of ``values`` (north up) that covers ``box`` (west, south, east, north in
    its CRS), and that part's geotransform."""
    west, south, east, north = box
    height, width = values.shape
    first_column = max(0, math.floor((west - transform.c) / transform.a))
    last_column = min(width, math.ceil((east - transform.c) / transform.a))
    first_row = max(0, math.floor((north - transform.f) / transform.e))
    last_row = min(height, math.ceil((south - transform.f) / transform.e))
    part = values[
        first_row : max(first_row, last_row), first_column : max(first_column, last_column)
    ]
    return part, transform @ Affine.translation(first_column, first_row)


def _filled(elevation: np.ndarray) -> np.ndarray:
    """``elevation`` with each no-data pixel given the value of the nearest DEM pixel."""
    missing = elevation == NODATA
    if not missing.any():
        return elevation
    nearest = ndimage.distance_transform_edt(missing, return_distances=False, return_indices=True)
    return elevation[tuple(nearest)]  # type: ignore[index]


def terrarium(elevation: np.ndarray) -> np.ndarray:
    """RGB bytes encoding ``elevation`` in metres: R * 256 + G + B / 256 - 32768."""
    # In 1/256 m, R, G and B are the three bytes of one 24-bit number (rounded, so a
    # decoded value is within 1/512 m of the DEM's).
    steps = np.rint((elevation.astype("float64") + TERRARIUM_OFFSET) * 256)
    steps = np.clip(steps, 0, 2**24 - 1).astype("uint32")
    rgb = np.empty((*elevation.shape, 3), dtype="uint8")
    rgb[..., 0] = steps >> 16
    rgb[..., 1] = (steps >> 8) & 0xFF
    rgb[..., 2] = steps & 0xFF
    return rgb


def decode_terrarium(rgb: np.ndarray) -> np.ndarray:
    """Elevations in metres from Terrarium RGB bytes (what a client computes)."""
    r, g, b = (rgb[..., i].astype("float64") for i in range(3))
    return r * 256 + g + b / 256 - TERRARIUM_OFFSET


def shaded(elevation: np.ndarray, found: Terrain, pixel_m: np.ndarray) -> np.ndarray:
    """RGBA of the tile (``elevation`` minus its border): elevation colours from the DEM's
    lowest to its highest ground, shaded by the slope, transparent where there is no DEM.
    ``pixel_m`` is a pixel's ground size in metres, per row (Web Mercator stretches it)."""
    missing = elevation == NODATA
    ground = _filled(elevation)
    # Slopes east and north by central differences (the border gives the edge pixels theirs).
    east = (ground[1:-1, 2:] - ground[1:-1, :-2]) / (2 * pixel_m[1:-1, None])
    north = (ground[:-2, 1:-1] - ground[2:, 1:-1]) / (2 * pixel_m[1:-1, None])
    # The light on the ground: its normal (-east, -north, 1), normalised, against the sun.
    light = (_SUN[2] - east * _SUN[0] - north * _SUN[1]) / np.sqrt(1 + east**2 + north**2)
    # Flat ground keeps its colour; slopes to the light brighten, away from it darken.
    shade = np.clip(0.35 + 0.65 * light / _SUN[2], 0.0, 1.25)
    span = found.max_m - found.min_m
    level = (ground[1:-1, 1:-1] - found.min_m) * (255 / span if span > 0 else 0.0)
    colours = _COLOURS[np.clip(level, 0, 255).astype("uint8")]
    rgba = np.empty((*shade.shape, 4), dtype="uint8")
    rgba[..., :3] = np.clip(colours * shade[..., None], 0, 255)
    rgba[..., 3] = np.where(missing[1:-1, 1:-1], 0, 255)
    return rgba


def _pixel_metres(tile: matrix.Tile, tms_id: str, rows: int) -> np.ndarray:
    """A pixel's ground size in metres for each of ``rows`` rows of the bordered tile."""
    tms = matrix.matrix_set(tms_id)
    _, bottom, _, top = tms.xy_bounds(tile)
    size = rows - 2
    step = (top - bottom) / size
    centres = top + step - step * (np.arange(rows) + 0.5)
    # Web Mercator's scale is 1 / cos(latitude); y / R is the isometric latitude.
    return (step / np.cosh(centres / 6378137.0)).astype("float32")


def _png(pixels: np.ndarray, mode: str) -> bytes:
    out = io.BytesIO()
    # Level 1: a tenth of the time of the default for a few per cent more bytes.
    Image.fromarray(pixels, mode).save(out, "PNG", compress_level=1)
    return out.getvalue()


def zoom_range(found: Terrain, tms_id: str = "WebMercatorQuad") -> tuple[int, int]:
    """The zooms a client should ask for: up to the first whose pixels are as fine as the
    DEM's (clients overzoom past it), down to where the DEM spans MIN_SPAN_PX pixels."""
    tms = matrix.matrix_set(tms_id)
    west, south, east, north = found.bounds
    columns = max(1, round((east - west) / found.pixel_deg[0]))
    rows = max(1, round((north - south) / found.pixel_deg[1]))
    transform, width, height = calculate_default_transform(
        _STORAGE, tms.rasterio_crs, columns, rows, west, south, east, north
    )
    resolution = min(abs(transform.a), abs(transform.e))
    span = max(abs(transform.a) * width, abs(transform.e) * height)
    top = tms.zoom_for_res(resolution, max_z=matrix.MAX_ZOOM, zoom_level_strategy="upper")
    bottom = tms.zoom_for_res(span / MIN_SPAN_PX, max_z=top, zoom_level_strategy="lower")
    return bottom, top


def centre(found: Terrain, zooms: tuple[int, int]) -> tuple[float, float, int]:
    """Where a view of the terrain opens: the middle of the DEM, three zooms in from the
    first of ``zooms`` (its zoom_range) worth asking for, at most the last."""
    minzoom, maxzoom = zooms
    west, south, east, north = found.bounds
    return (west + east) / 2, (south + north) / 2, min(maxzoom, minzoom + 3)


def tilejson(
    found: Terrain, kind: str, tiles_url: str, tms_id: str = "WebMercatorQuad"
) -> dict[str, Any]:
    """The TileJSON 3.0 document of the ``kind`` tiles at ``tiles_url`` (a template with
    {z}, {y} and {x}); the coverage's says ``encoding: terrarium`` (MapLibre's raster-dem
    source reads it, and ``tileSize``, from here)."""
    minzoom, maxzoom = zoom_range(found, tms_id)
    west, south, east, north = found.bounds
    document: dict[str, Any] = {
        "tilejson": "3.0.0",
        "name": f"terrain {kind}",
        "description": DESCRIPTIONS[kind],
        "version": f"1.0.{found.version}",
        "scheme": "xyz",
        "tiles": [tiles_url],
        "minzoom": minzoom,
        "maxzoom": maxzoom,
        "bounds": [west, south, east, north],
        "center": list(centre(found, (minzoom, maxzoom))),
        "tileSize": matrix.matrix_set(tms_id).matrix(0).tileWidth,
    }
    if kind == COVERAGE:
        document["encoding"] = "terrarium"
    return document
