"""The tile matrix sets the one map serves, and the checks of a tile's address.

morecantile holds the OGC Two Dimensional Tile Matrix Set definitions and their arithmetic
(bounds of a tile, the tiles under a box), so none of that is written here again; this
module names the sets we serve, says which addresses are possible, and answers the
OGC API Tiles documents that describe them. Vector and terrain tiles, the cache and the
view all take their addresses from here.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import cache, lru_cache
from typing import Any

import morecantile

from twin.errors import InvalidInput, NotFound

# WebMercatorQuad is what every web map client reads (deck.gl, MapLibre, QGIS's XYZ).
SERVED = ("WebMercatorQuad",)
# Deepest zoom served: a level finer than any feature of a city needs (z22 is ~4 cm/px).
MAX_ZOOM = 22
Tile = morecantile.Tile
WEB_MERCATOR_RADIUS = 6378137.0  # EPSG:3857's sphere, metres


def matrix_set(tms_id: str) -> morecantile.TileMatrixSet:
    """The tile matrix set called ``tms_id``; NotFound for one we do not serve."""
    if tms_id not in SERVED:
        shown = tms_id.replace("\x00", "")[:40]
        raise NotFound(f"unknown tile matrix set {shown!r}; served: {', '.join(SERVED)}")
    return _matrix_set(tms_id)


@cache
def _matrix_set(tms_id: str) -> morecantile.TileMatrixSet:
    # morecantile builds the set anew on each get (a millisecond: as long as a tile's query)
    return morecantile.tms.get(tms_id)


def tile_at(tms_id: str, z: int, y: int, x: int) -> Tile:
    """The tile at zoom ``z``, row ``y``, column ``x`` of ``tms_id``, checked to exist.

    NotFound for an unknown matrix set; InvalidInput (saying which index and its range)
    for a zoom past MAX_ZOOM or a row or column outside the zoom's matrix."""
    tms = matrix_set(tms_id)
    if not 0 <= z <= MAX_ZOOM:
        raise InvalidInput(f"zoom {z} is outside 0..{MAX_ZOOM}", option="z")
    matrix = tms.matrix(z)
    if not 0 <= y < matrix.matrixHeight:
        raise InvalidInput(
            f"tile row {y} is outside 0..{matrix.matrixHeight - 1} at zoom {z}", option="y"
        )
    if not 0 <= x < matrix.matrixWidth:
        raise InvalidInput(
            f"tile column {x} is outside 0..{matrix.matrixWidth - 1} at zoom {z}", option="x"
        )
    return Tile(x=x, y=y, z=z)


@lru_cache(maxsize=16_384)  # a tile's bounds are asked by its render, its cache entry…
def lonlat_bounds(
    tms_id: str, tile: Tile, margin: float = 0.0
) -> tuple[float, float, float, float]:
    """The tile's west, south, east, north in degrees (WGS 84, the storage CRS), grown by
    ``margin`` (a fraction of the tile's width, as a vector tile's buffer) within the set's
    bounds: past them lies no feature, and longitudes would wrap."""
    tms = matrix_set(tms_id)
    xy = tms.xy_bounds(tile)
    grow = (xy.right - xy.left) * margin
    world = tms.xy_bbox
    left, bottom = max(xy.left - grow, world.left), max(xy.bottom - grow, world.bottom)
    right, top = min(xy.right + grow, world.right), min(xy.top + grow, world.top)
    west, south = _lonlat(tms_id, left, bottom)
    east, north = _lonlat(tms_id, right, top)
    return (west, south, east, north)


@cache
def _epsg(tms_id: str) -> int | None:
    return _matrix_set(tms_id).crs.to_epsg()


def _lonlat(tms_id: str, x: float, y: float) -> tuple[float, float]:
    """A point of the set's CRS in lon/lat. Web Mercator's inverse in closed form: the same
    numbers as pyproj's (to 1e-9 degrees), in a hundredth of the time (pyproj's call is
    0.2 ms, as long as a small tile's query)."""
    if _epsg(tms_id) == 3857:
        radius = WEB_MERCATOR_RADIUS
        return (math.degrees(x / radius), math.degrees(math.atan(math.sinh(y / radius))))
    return _matrix_set(tms_id).lnglat(x, y)


def tiles_under(
    tms_id: str, box: tuple[float, float, float, float], zooms: range
) -> Iterator[Tile]:
    """Every tile of ``zooms`` that touches ``box`` (west, south, east, north, degrees)."""
    west, south, east, north = box
    yield from matrix_set(tms_id).tiles(west, south, east, north, list(zooms))


def matrix_set_summaries(base_url: str) -> list[dict[str, Any]]:
    """The entries of ``/tileMatrixSets``: id, title and links of each set served."""
    return [
        {
            "id": tms_id,
            "title": matrix_set(tms_id).title or tms_id,
            "uri": matrix_set(tms_id).uri,
            "links": [
                {
                    "rel": "self",
                    "type": "application/json",
                    "title": f"The {tms_id} tile matrix set",
                    "href": f"{base_url}/tileMatrixSets/{tms_id}",
                }
            ],
        }
        for tms_id in SERVED
    ]


@cache
def matrix_set_document(tms_id: str) -> dict[str, Any]:
    """The OGC Two Dimensional Tile Matrix Set document of ``tms_id``: v2.0 JSON, with the
    members of v1.0 beside them (``identifier``, ``supportedCRS``, ``boundingBox``,
    ``tileMatrix``), which clients of the 1.0 era read (GDAL before 3.7, Debian 12's)."""
    tms = matrix_set(tms_id)
    document = tms.model_dump(mode="json", exclude_none=True, by_alias=True)
    crs = str(tms.crs.root)
    world = tms.xy_bbox
    document.update({
        "type": "TileMatrixSetType",
        "identifier": tms_id,
        "supportedCRS": crs,
        # One member in both versions: 2.0's corners (its schema requires them) and 1.0's.
        "boundingBox": {"lowerLeft": [world.left, world.bottom],
                        "upperRight": [world.right, world.top], "crs": crs,
                        "type": "BoundingBoxType", "lowerCorner": [world.left, world.bottom],
                        "upperCorner": [world.right, world.top]},
        "tileMatrix": [
            {"type": "TileMatrixType", "identifier": m["id"],
             "scaleDenominator": m["scaleDenominator"], "topLeftCorner": m["pointOfOrigin"],
             "tileWidth": m["tileWidth"], "tileHeight": m["tileHeight"],
             "matrixWidth": m["matrixWidth"], "matrixHeight": m["matrixHeight"]}
            for m in document["tileMatrices"]
        ],
    })  # fmt: skip
    return document


def crs_uri(tms_id: str) -> str:
    """The URI of the CRS of ``tms_id``'s tiles."""
    return str(matrix_set(tms_id).crs.root)


def matrix_set_limits(
    tms_id: str, box: tuple[float, float, float, float] | None, zooms: range
) -> list[dict[str, Any]]:
    """OGC ``tileMatrixSetLimits``: for each zoom, the first and last rows and columns of
    the tiles that touch ``box`` (west, south, east, north, degrees; None: the world)."""
    tms = matrix_set(tms_id)
    limits = []
    for z in zooms:
        matrix = tms.matrix(z)
        if box is None:
            first, last = Tile(0, 0, z), Tile(matrix.matrixWidth - 1, matrix.matrixHeight - 1, z)
        else:
            west, south, east, north = _inside(tms, box)
            first, last = tms.tile(west, north, z), tms.tile(east, south, z)
        limits.append({
            "tileMatrix": str(z),
            "minTileRow": max(first.y, 0), "maxTileRow": min(last.y, matrix.matrixHeight - 1),
            "minTileCol": max(first.x, 0), "maxTileCol": min(last.x, matrix.matrixWidth - 1),
        })  # fmt: skip
    return limits


def within_limits(tms_id: str, box: tuple[float, float, float, float] | None, tile: Tile) -> bool:
    """Whether ``tile`` is one of the tiles ``matrix_set_limits`` gives for ``box`` (OGC
    API - Tiles answers any other 404)."""
    first_row, last_row, first_col, last_col = _limit(tms_id, box, tile.z)
    return first_row <= tile.y <= last_row and first_col <= tile.x <= last_col


@lru_cache(maxsize=4096)
def _limit(
    tms_id: str, box: tuple[float, float, float, float] | None, z: int
) -> tuple[int, int, int, int]:
    # Kept: a tile miss asks it (150 µs through morecantile), the box changes with data only.
    [limit] = matrix_set_limits(tms_id, box, range(z, z + 1))
    return (limit["minTileRow"], limit["maxTileRow"], limit["minTileCol"], limit["maxTileCol"])


def _inside(
    tms: morecantile.TileMatrixSet, box: tuple[float, float, float, float]
) -> tuple[float, float, float, float]:
    """``box`` held within the set's own bounds (WebMercatorQuad stops at ±85.05°)."""
    west, south, east, north = tms.bbox
    return (max(box[0], west), max(box[1], south), min(box[2], east), min(box[3], north))
