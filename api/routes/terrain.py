"""Terrain tiles over HTTP (OGC API Tiles paths). Public: a DEM is open map data.

The terrain is a collection beside the feature layers (/collections lists it, and
/collections/terrain describes it): no items, its extent, and links to its two tilesets
lists, ``tilesets-map`` and ``tilesets-coverage`` as OGC API Tiles names them. Each lists
one tileset per matrix set, whose metadata gives the tiles' template and the DEM's limits.

``/collections/terrain/coverage/tiles/{tms}/{z}/{y}/{x}`` is the elevation in Terrarium
PNG (deck.gl's TerrainLayer, MapLibre's raster-dem source), ``.../map/tiles/...`` the
shaded, coloured DEM to drape on it; each has a TileJSON 3.0 document beside its tiles.
Both answer at ``.../{x}.png`` too, as raster clients write their templates.
tiles.terrain draws them. A tile with no DEM under it is 204 (as an empty vector tile is),
and the TileJSON's bounds keep clients from asking for those; 404 when no terrain is
loaded. The ETag follows the terrain's version in the change log, so a tile changes with a
re-import, and a client's revalidation (304) costs one small query, no drawing.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi import status as http

from api.access import Public
from api.deps import (
    FastJSON,
    IfNoneMatch,
    JsonFormat,
    KnownParameters,
    TileNumber,
    base_url,
    catalogue_of,
    etag_matches,
    with_connection,
)
from api.routes import tiles as tile_routes
from tiles import matrix
from tiles import terrain as terrain_tiles
from twin import registry
from twin.crs import CRS84
from twin.errors import NotFound

router = APIRouter(tags=["Terrain tiles"])
TmsId = Annotated[str, Path(max_length=63)]
Zoom = Annotated[int, Path(), TileNumber]
# Clients keep tiles but ask again each time (a 304 is cheap): a re-import shows at once.
CACHE = "public, no-cache"
PNG = "image/png"
PNG_ANSWER = {200: {"content": {PNG: {}}, "description": "The tile (PNG)"},
              204: {"description": "No DEM under this tile"},
              304: {"description": "Unchanged since the ETag given"}}  # fmt: skip


async def png_format(
    f: Annotated[
        Literal["png"] | None,
        Query(description="the format: png, the only one of these tiles"),
    ] = None,
) -> None:
    """OGC API's ``f`` on a terrain tile: taken when it asks for PNG."""


# Every route refuses a query parameter it does not take, and takes OGC API's f.
DOCUMENT = [Public, KnownParameters, JsonFormat]
TILE = [Public, KnownParameters, Depends(png_format)]
TILESETS = {terrain_tiles.MAP: "http://www.opengis.net/def/rel/ogc/1.0/tilesets-map",
            terrain_tiles.COVERAGE: "http://www.opengis.net/def/rel/ogc/1.0/tilesets-coverage"}  # fmt: skip
_TILES_TITLES = {terrain_tiles.MAP: "shaded relief to look at",
                 terrain_tiles.COVERAGE: "elevations, Terrarium-encoded"}  # fmt: skip


def _tiles_path(kind: str) -> str:
    return f"/collections/{terrain_tiles.NAME}/{kind}/tiles"


def _tile_url(request: Request, kind: str, tms_id: str) -> str:
    return f"{base_url(request)}{_tiles_path(kind)}/{tms_id}/{{z}}/{{y}}/{{x}}"


# --- the terrain as a collection --------------------------------------------------------


def collection_body(base: str, catalogue: registry.Catalogue) -> dict[str, Any]:
    """The terrain as an OGC API collection (Common Part 2): its extent and links to its
    tilesets; NotFound saying how to load a DEM when none is loaded.

    No itemType (Common Part 2 gives it to collections with items), but ``dataType:
    coverage``, as Part 2 names what a collection holds, and ``layerDataType: Coverage``:
    GDAL's OAPIF driver (3.6 to its current source) leaves a collection out of its vector
    layers on that alone (Ecere's GNOSIS name for it), and would list the terrain as a
    feature layer without it."""
    entry = terrain_tiles.catalogued(catalogue)
    href = f"{base}/collections/{terrain_tiles.NAME}"
    links = [
        {"rel": "self", "href": href, "type": "application/json", "title": "This collection"},
        {"rel": "alternate", "href": f"{href}?f=html", "type": "text/html",
         "title": "This collection as HTML"},
    ]  # fmt: skip
    for kind in (terrain_tiles.MAP, terrain_tiles.COVERAGE):
        links.append({"rel": TILESETS[kind], "href": f"{base}{_tiles_path(kind)}",
                      "type": "application/json",
                      "title": f"The terrain's {kind} tilesets: {_TILES_TITLES[kind]} (PNG)"})  # fmt: skip
    return {
        "id": terrain_tiles.NAME,
        "title": entry["title"],
        "description": entry["description"],
        "dataType": "coverage",
        "layerDataType": "Coverage",
        "extent": {"spatial": {"bbox": [list(entry["bbox"])], "crs": CRS84}},
        "links": links,
    }


def collection_bodies(base: str, catalogue: registry.Catalogue) -> list[dict[str, Any]]:
    """The terrain's collection for /collections: none when no DEM is loaded."""
    try:
        return [collection_body(base, catalogue)]
    except NotFound:
        return []


# --- its tilesets -----------------------------------------------------------------------


def _limits(found: terrain_tiles.Terrain, tms_id: str) -> list[dict[str, Any]]:
    """The terrain's tiles: over its bounds, at every zoom (drawn at any; its TileJSON
    says which are worth asking for)."""
    return matrix.matrix_set_limits(tms_id, found.bounds, range(matrix.MAX_ZOOM + 1))


async def _tilesets(request: Request, kind: str) -> FastJSON:
    def answer(conn: psycopg.Connection) -> dict[str, Any]:
        title = terrain_tiles.catalogued(catalogue_of(request, conn))["title"]
        found = terrain_tiles.terrain(conn)
        return tile_routes.tilesets_list(request, title, terrain_tiles.NAME,
                                         lambda tms: _limits(found, tms),
                                         tiles_path=_tiles_path(kind), data_type=kind,
                                         tile_type=PNG)  # fmt: skip

    return FastJSON(await with_connection(request, answer), headers={"Cache-Control": CACHE})


async def _tileset(request: Request, kind: str, tms_id: str) -> FastJSON:
    matrix.matrix_set(tms_id)

    def read(conn: psycopg.Connection) -> tuple[terrain_tiles.Terrain, str]:
        found = terrain_tiles.terrain(conn)
        return found, terrain_tiles.catalogued(catalogue_of(request, conn))["title"]

    found, title = await with_connection(request, read)
    base = base_url(request)
    path = f"{base}{_tiles_path(kind)}"
    document = tile_routes.tileset_summary(base, path, title, tms_id, kind, PNG)
    document["links"] += [
        {"rel": "alternate", "href": f"{path}/{tms_id}/tilejson.json",
         "type": "application/json", "title": "TileJSON 3.0"},
        {"rel": "collection", "href": f"{base}/collections/{terrain_tiles.NAME}",
         "type": "application/json"},
    ]  # fmt: skip
    zooms = terrain_tiles.zoom_range(found, tms_id)
    lon, lat, zoom = terrain_tiles.centre(found, zooms)
    west, south, east, north = found.bounds
    document |= {
        "description": terrain_tiles.DESCRIPTIONS[kind],
        "tileMatrixSetLimits": _limits(found, tms_id),
        "boundingBox": {"lowerLeft": [west, south], "upperRight": [east, north], "crs": CRS84},
        "centerPoint": {"coordinates": [lon, lat], "crs": CRS84, "tileMatrix": str(zoom)},
    }
    return FastJSON(document, headers={"Cache-Control": CACHE})


async def _tile(
    request: Request, kind: str, tms_id: str, z: int, y: int, x: int, if_none_match: str | None
) -> Response:
    tile = matrix.tile_at(tms_id, z, y, x)

    def draw(conn: psycopg.Connection) -> tuple[str, bytes | None]:
        found = terrain_tiles.terrain(conn)
        if not matrix.within_limits(tms_id, found.bounds, tile):
            raise NotFound(f"tile {z}/{y}/{x} lies beyond the terrain (its tileset's "
                           "tileMatrixSetLimits say which tiles there are)")  # fmt: skip
        tag = terrain_tiles.etag(found, kind, tile)
        if etag_matches(if_none_match, {tag}):
            return tag, None
        return tag, terrain_tiles.render(conn, found, kind, tile, tms_id)

    tag, png = await with_connection(request, draw)
    headers = {"ETag": tag, "Cache-Control": CACHE}
    if png is None:
        return Response(status_code=http.HTTP_304_NOT_MODIFIED, headers=headers)
    if not png:
        return Response(status_code=http.HTTP_204_NO_CONTENT, headers=headers)
    return Response(png, media_type=PNG, headers=headers)


async def _tilejson(request: Request, kind: str, tms_id: str) -> FastJSON:
    matrix.matrix_set(tms_id)
    found = await with_connection(request, terrain_tiles.terrain)
    document = terrain_tiles.tilejson(found, kind, _tile_url(request, kind, tms_id), tms_id)
    return FastJSON(document, headers={"Cache-Control": CACHE})


@router.get("/collections/terrain/coverage/tiles/{tms}/{z}/{y}/{x}", operation_id="collection.coverage.getTile",
            dependencies=TILE, response_class=Response,
            responses=PNG_ANSWER,  # type: ignore[arg-type]
            summary="A terrain tile, elevations in Terrarium PNG (public)")  # fmt: skip
@tile_routes.also_with_suffixes("/collections/terrain/coverage/tiles/{tms}/{z}/{y}/{x}",
                                on=router, suffixes=(".png",), dependencies=TILE)  # fmt: skip
async def coverage_tile(
    request: Request, tms: TmsId, z: Zoom, y: Zoom, x: Zoom, if_none_match: IfNoneMatch = None
) -> Response:
    """The DEM on the tile's 256 x 256 grid, metres = R * 256 + G + B / 256 - 32768;
    outside the DEM within the tile, the nearest DEM value. 204 when no DEM lies under
    the tile, 404 when no terrain is loaded or the tile lies beyond it, 400 for a tile
    that does not exist."""
    return await _tile(request, terrain_tiles.COVERAGE, tms, z, y, x, if_none_match)


@router.get("/collections/terrain/map/tiles/{tms}/{z}/{y}/{x}", operation_id="collection.map.getTile",
            dependencies=TILE, response_class=Response,
            responses=PNG_ANSWER,  # type: ignore[arg-type]
            summary="A terrain tile to look at: elevation colours, shaded (public)")  # fmt: skip
@tile_routes.also_with_suffixes("/collections/terrain/map/tiles/{tms}/{z}/{y}/{x}",
                                on=router, suffixes=(".png",), dependencies=TILE)  # fmt: skip
async def map_tile(
    request: Request, tms: TmsId, z: Zoom, y: Zoom, x: Zoom, if_none_match: IfNoneMatch = None
) -> Response:
    """The DEM coloured from its lowest to its highest ground and shaded by slope, RGBA,
    transparent where there is no DEM. 204 when no DEM lies under the tile, 404 when no
    terrain is loaded or the tile lies beyond it, 400 for a tile that does not exist."""
    return await _tile(request, terrain_tiles.MAP, tms, z, y, x, if_none_match)


@router.get("/collections/terrain/coverage/tiles/{tms}/tilejson.json", operation_id="collection.coverage.getTileJSON",
            dependencies=DOCUMENT,
            summary="TileJSON of the Terrarium terrain tiles (public)")  # fmt: skip
async def coverage_tilejson(request: Request, tms: TmsId) -> FastJSON:
    """TileJSON 3.0 with ``encoding: terrarium``, the DEM's bounds and the zooms worth
    asking for (to the DEM's resolution; clients overzoom past it)."""
    return await _tilejson(request, terrain_tiles.COVERAGE, tms)


@router.get("/collections/terrain/map/tiles/{tms}/tilejson.json", operation_id="collection.map.getTileJSON",
            dependencies=DOCUMENT,
            summary="TileJSON of the shaded terrain tiles (public)")  # fmt: skip
async def map_tilejson(request: Request, tms: TmsId) -> FastJSON:
    """TileJSON 3.0 of the map tiles: the DEM's bounds and zooms."""
    return await _tilejson(request, terrain_tiles.MAP, tms)


@router.get("/collections/terrain/map/tiles", operation_id="collection.map.getTileSetsList", dependencies=DOCUMENT,
            summary="The terrain's map tilesets (public)")  # fmt: skip
async def map_tilesets(request: Request) -> FastJSON:
    """The tilesets of the shaded terrain: one per matrix set served."""
    return await _tilesets(request, terrain_tiles.MAP)


@router.get("/collections/terrain/coverage/tiles", operation_id="collection.coverage.getTileSetsList", dependencies=DOCUMENT,
            summary="The terrain's coverage tilesets (public)")  # fmt: skip
async def coverage_tilesets(request: Request) -> FastJSON:
    """The tilesets of the terrain's elevations (Terrarium PNG): one per matrix set."""
    return await _tilesets(request, terrain_tiles.COVERAGE)


@router.get("/collections/terrain/map/tiles/{tms}", operation_id="collection.map.getTileSet", dependencies=DOCUMENT,
            summary="The terrain's map tileset (public)")  # fmt: skip
async def map_tileset(request: Request, tms: TmsId) -> FastJSON:
    """The OGC tileset metadata of the shaded terrain tiles: the template of its tiles
    (PNG) and the tile limits of the DEM's extent, from its first zoom worth asking for to
    its own resolution (clients overzoom past it)."""
    return await _tileset(request, terrain_tiles.MAP, tms)


@router.get("/collections/terrain/coverage/tiles/{tms}", operation_id="collection.coverage.getTileSet", dependencies=DOCUMENT,
            summary="The terrain's coverage tileset (public)")  # fmt: skip
async def coverage_tileset(request: Request, tms: TmsId) -> FastJSON:
    """The OGC tileset metadata of the Terrarium elevation tiles: the template of its
    tiles (PNG, metres = R * 256 + G + B / 256 - 32768) and the DEM's tile limits."""
    return await _tileset(request, terrain_tiles.COVERAGE, tms)
