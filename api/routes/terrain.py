"""Terrain tiles over HTTP (OGC API Tiles paths). Public: a DEM is open map data.

``/collections/terrain/coverage/tiles/{tms}/{z}/{y}/{x}`` is the elevation in Terrarium
PNG (deck.gl's TerrainLayer, MapLibre's raster-dem source), ``.../map/tiles/...`` the
shaded, coloured DEM to drape on it; each has a TileJSON 3.0 document beside its tiles.
tiles.terrain draws them. A tile with no DEM under it is 204 (as an empty vector tile is),
and the TileJSON's bounds keep clients from asking for those; 404 when no terrain is
loaded. The ETag follows the terrain's version in the change log, so a tile changes with a
re-import, and a client's revalidation (304) costs one small query, no drawing.
"""

from __future__ import annotations

from typing import Annotated

import psycopg
from fastapi import APIRouter, Path, Request, Response
from fastapi import status as http

from api.access import Public
from api.deps import (
    FastJSON,
    IfNoneMatch,
    KnownParameters,
    Plain,
    base_url,
    etag_matches,
    with_connection,
)
from api.routes.tiles import CORS
from tiles import matrix
from tiles import terrain as terrain_tiles

router = APIRouter(tags=["Terrain tiles"])
TmsId = Annotated[str, Path(max_length=63)]
Zoom = Annotated[int, Path(), Plain]
# Clients keep tiles but ask again each time (a 304 is cheap): a re-import shows at once.
CACHE = "public, no-cache"
PNG = "image/png"
PNG_ANSWER = {200: {"content": {PNG: {}}, "description": "The tile (PNG)"},
              204: {"description": "No DEM under this tile"},
              304: {"description": "Unchanged since the ETag given"}}  # fmt: skip


def _tile_url(request: Request, kind: str, tms_id: str) -> str:
    return f"{base_url(request)}/collections/terrain/{kind}/tiles/{tms_id}/{{z}}/{{y}}/{{x}}"


async def _tile(
    request: Request, kind: str, tms_id: str, z: int, y: int, x: int, if_none_match: str | None
) -> Response:
    tile = matrix.tile_at(tms_id, z, y, x)

    def draw(conn: psycopg.Connection) -> tuple[str, bytes | None]:
        found = terrain_tiles.terrain(conn)
        tag = terrain_tiles.etag(found, kind, tile)
        if etag_matches(if_none_match, {tag}):
            return tag, None
        return tag, terrain_tiles.render(conn, found, kind, tile, tms_id)

    tag, png = await with_connection(request, draw)
    headers = {"ETag": tag, "Cache-Control": CACHE, **CORS}
    if png is None:
        return Response(status_code=http.HTTP_304_NOT_MODIFIED, headers=headers)
    if not png:
        return Response(status_code=http.HTTP_204_NO_CONTENT, headers=headers)
    return Response(png, media_type=PNG, headers=headers)


async def _tilejson(request: Request, kind: str, tms_id: str) -> FastJSON:
    matrix.matrix_set(tms_id)
    found = await with_connection(request, terrain_tiles.terrain)
    document = terrain_tiles.tilejson(found, kind, _tile_url(request, kind, tms_id), tms_id)
    return FastJSON(document, headers={"Cache-Control": CACHE, **CORS})


@router.get("/collections/terrain/coverage/tiles/{tms}/{z}/{y}/{x}",
            dependencies=[Public, KnownParameters], response_class=Response,
            responses=PNG_ANSWER,  # type: ignore[arg-type]
            summary="A terrain tile, elevations in Terrarium PNG (public)")  # fmt: skip
async def coverage_tile(
    request: Request, tms: TmsId, z: Zoom, y: Zoom, x: Zoom, if_none_match: IfNoneMatch = None
) -> Response:
    """The DEM on the tile's 256 x 256 grid, metres = R * 256 + G + B / 256 - 32768;
    outside the DEM within the tile, the nearest DEM value. 204 when no DEM lies under
    the tile, 404 when no terrain is loaded, 400 for a tile that does not exist."""
    return await _tile(request, terrain_tiles.COVERAGE, tms, z, y, x, if_none_match)


@router.get("/collections/terrain/map/tiles/{tms}/{z}/{y}/{x}",
            dependencies=[Public, KnownParameters], response_class=Response,
            responses=PNG_ANSWER,  # type: ignore[arg-type]
            summary="A terrain tile to look at: elevation colours, shaded (public)")  # fmt: skip
async def map_tile(
    request: Request, tms: TmsId, z: Zoom, y: Zoom, x: Zoom, if_none_match: IfNoneMatch = None
) -> Response:
    """The DEM coloured from its lowest to its highest ground and shaded by slope, RGBA,
    transparent where there is no DEM. 204 when no DEM lies under the tile, 404 when no
    terrain is loaded, 400 for a tile that does not exist."""
    return await _tile(request, terrain_tiles.MAP, tms, z, y, x, if_none_match)


@router.get("/collections/terrain/coverage/tiles/{tms}/tilejson.json",
            dependencies=[Public, KnownParameters],
            summary="TileJSON of the Terrarium terrain tiles (public)")  # fmt: skip
async def coverage_tilejson(request: Request, tms: TmsId) -> FastJSON:
    """TileJSON 3.0 with ``encoding: terrarium``, the DEM's bounds and the zooms worth
    asking for (to the DEM's resolution; clients overzoom past it)."""
    return await _tilejson(request, terrain_tiles.COVERAGE, tms)


@router.get("/collections/terrain/map/tiles/{tms}/tilejson.json",
            dependencies=[Public, KnownParameters],
            summary="TileJSON of the shaded terrain tiles (public)")  # fmt: skip
async def map_tilejson(request: Request, tms: TmsId) -> FastJSON:
    """TileJSON 3.0 of the map tiles: the DEM's bounds and zooms."""
    return await _tilejson(request, terrain_tiles.MAP, tms)
