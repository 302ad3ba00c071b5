"""OGC API – Tiles (Part 1) and TileJSON 3.0 over every feature layer, and the composite
one-map tile of them all. Public: the open map holds nothing personal.

A tile route checks the address, renders (tiles.vector, one statement in PostGIS) and
answers as a tile server does: 204 for an empty tile, a strong ETag from the bytes and
304 for If-None-Match, Cache-Control, gzip when the client takes it, X-Tile-Truncated
naming the layers the caps cut. Tiles go through the tile cache (tiles/cache.py): a warm
one is answered from the process's memory without a connection, with the ETag of its
bytes; X-Tile-Cache says whether it came from memory, the shared tier or a render.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import parse_qs, quote

import psycopg
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api.access import Public
from api.deps import (
    IF_NONE_MATCH_MAX,
    PUBLIC_ANSWER,
    IfNoneMatch,
    JsonFormat,
    KnownParameters,
    TileNumber,
    accepts_gzip,
    base_url,
    byte_range,
    catalogue_of,
    etag_matches,
    route_path,
    with_connection,
    with_pool_connection,
)
from tiles import cache, matrix, vector
from twin import registry
from twin.crs import CRS84
from twin.errors import InvalidInput, NotFound

router = APIRouter(tags=["OGC API Tiles"])
# The app's pool for tiles: connections whose statement_timeout is a tile's (api/app.py).
POOL = "tile_pool"
NAME_MAX = 63  # a collection's or matrix set's id, at most
LAYERS_MAX = 20_000  # ``layers=``, at most
CollectionId = Annotated[str, Path(max_length=NAME_MAX)]
MatrixSetId = Annotated[str, Path(max_length=NAME_MAX, description="WebMercatorQuad")]
Zoom = Annotated[int, Path(description=f"tile matrix (zoom), 0 to {matrix.MAX_ZOOM}"), TileNumber]
Row = Annotated[int, Path(description="tile row, from the top"), TileNumber]
Column = Annotated[int, Path(description="tile column, from the left"), TileNumber]
LayersParam = Annotated[
    str | None,
    Query(
        max_length=LAYERS_MAX,
        description="the layers of the one-map tile, by collection id, separated by commas "
        "(default: every feature layer)",
    ),
]
CollectionsParam = Annotated[
    str | None,
    Query(
        max_length=LAYERS_MAX,
        description="the same as layers: OGC API - Tiles' name for it (collections selection)",
    ),
]
# The query names that choose the one map's layers: ours, and OGC API - Tiles' own.
CHOOSING = ("layers", "collections")


def choice(layers: LayersParam = None, collections: CollectionsParam = None) -> str | None:
    """The one map's layers as ``layers=`` or ``collections=`` names them (OGC API - Tiles'
    collections selection: OpenLayers' OGCVectorTile ``collections`` sends it)."""
    if layers is not None and collections is not None:
        raise InvalidInput("give layers or collections, not both: they choose the same thing",
                           option="collections")  # fmt: skip
    return layers if layers is not None else collections


Chosen = Annotated[str | None, Depends(choice)]


async def mvt_format(
    f: Annotated[
        Literal["mvt"] | None,
        Query(description="the format: mvt (Mapbox Vector Tile), the only one of these tiles"),
    ] = None,
) -> None:
    """OGC API's ``f`` on a vector tile: taken when it asks for MVT."""


async def tile_conditions(if_none_match: IfNoneMatch = None) -> None:
    """The conditions a tile's answer reads (tile_answer), checked as the terrain's and
    the view's are: an If-None-Match of a length some client sends."""


# Every route here refuses a query parameter it does not take (a typo, layerz=, would
# be answered with the defaults as if understood), and takes OGC API's f.
DOCUMENT = [Public, KnownParameters, JsonFormat]
TILE = [Public, KnownParameters, Depends(mvt_format), Depends(tile_conditions)]
TILESETS_VECTOR = "http://www.opengis.net/def/rel/ogc/1.0/tilesets-vector"
TILING_SCHEME = "http://www.opengis.net/def/rel/ogc/1.0/tiling-scheme"
TILING_SCHEMES = "http://www.opengis.net/def/rel/ogc/1.0/tiling-schemes"
TEMPLATE = "{tileMatrix}/{tileRow}/{tileCol}"
# Public data, read by map clients on other origins too (QGIS, MapLibre, deck.gl pages):
# api.deps.PublicCORS gives every public answer its CORS headers, the front's too.
_GEOMETRY_DIMENSION = {"point": 0, "line": 1, "polygon": 2}
_TILEJSON_TYPES = {"number": "Number", "integer": "Number", "boolean": "Boolean"}


def _json(body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body)


# --- tile matrix sets -------------------------------------------------------------------


@router.get(
    "/tileMatrixSets",
    operation_id="getTileMatrixSetsList",
    dependencies=DOCUMENT,
    summary="Tile matrix sets (public)",
)
async def tile_matrix_sets(request: Request) -> JSONResponse:
    """The tiling schemes the tiles are served in."""
    base = base_url(request)
    return _json({
        "tileMatrixSets": matrix.matrix_set_summaries(base),
        "links": [{"rel": "self", "href": f"{base}/tileMatrixSets", "type": "application/json"}],
    })  # fmt: skip


@router.get(
    "/tileMatrixSets/{tms}",
    operation_id="getTileMatrixSet",
    dependencies=DOCUMENT,
    summary="One tile matrix set (public)",
)
async def tile_matrix_set(tms: MatrixSetId) -> JSONResponse:
    """The OGC Two Dimensional Tile Matrix Set document (2.0)."""
    return _json(matrix.matrix_set_document(tms))


# --- the tilesets and their documents ---------------------------------------------------


def _tiles_path(layer: str | None) -> str:
    return f"/collections/{layer}/tiles" if layer is not None else "/tiles"


def _feature_layer(catalogue: registry.Catalogue, name: str) -> registry.Layer:
    if "\x00" in name:
        raise NotFound(f"no collection {name.replace(chr(0), '')[:63]!r}")
    layer = catalogue.layer(name)
    if not layer.has_features:
        raise NotFound(f"{name!r} is a raster: its tiles are at /collections/{name}/coverage/tiles")
    return layer


def layer_names(text: str) -> list[str]:
    """The names ``layers=`` gives, in its order, each once, blanks dropped."""
    return list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))


def chosen_layers(catalogue: registry.Catalogue, text: str | None) -> list[registry.Layer]:
    """The feature layers ``layers=`` names (every one without it), in the catalogue's
    order; InvalidInput naming the unknown ones and the layers there are."""
    every = catalogue.feature_layers()
    if text is None:
        return every
    names = layer_names(text)
    choices = ", ".join(layer.name for layer in every)
    if not names:
        raise InvalidInput(f"layers: name at least one layer ({choices})", option="layers")
    known = {layer.name for layer in every}
    unknown = [n for n in names if n not in known]
    if unknown:
        shown = ", ".join(repr(n[:40]) for n in unknown[:5])
        more = f" and {len(unknown) - 5:,} more" if len(unknown) > 5 else ""
        raise InvalidInput(
            f"layers: no feature layer named {shown}{more}; choose from {choices}",
            option="layers",
        )
    return [layer for layer in every if layer.name in names]


def _bbox(catalogue: registry.Catalogue, layers: Sequence[registry.Layer]) -> list[float] | None:
    boxes = [catalogue.entries[layer.name]["bbox"] for layer in layers]
    boxes = [b for b in boxes if b]
    if not boxes:
        return None
    return [min(b[0] for b in boxes), min(b[1] for b in boxes),
            max(b[2] for b in boxes), max(b[3] for b in boxes)]  # fmt: skip


def _center(bbox: list[float] | None, min_zoom: int) -> tuple[float, float, int]:
    """The middle of ``bbox`` and the zoom at which it fills a 512-pixel view."""
    if bbox is None:
        return (0.0, 0.0, min_zoom)
    width = max(bbox[2] - bbox[0], bbox[3] - bbox[1], 1e-6)
    zoom = math.floor(math.log2(360 / width * 2))
    zoom = max(min_zoom, min(zoom, matrix.MAX_ZOOM))
    return ((bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2, zoom)


def _query(request: Request) -> str:
    """``?layers=`` (or ``?collections=``, as the client named it) as the links of a
    tileset carry it: the names given, each once, with nothing else the client sent (the
    route has checked them against the catalogue)."""
    for name in CHOOSING:
        if (layers := request.query_params.get(name)) is not None:
            return f"?{name}=" + quote(",".join(layer_names(layers)), safe=",")
    return ""


def _tileset(
    request: Request, catalogue: registry.Catalogue, layers: Sequence[registry.Layer],
    tms: str, collection: str | None,
) -> tuple[str, str, str, list[float] | None, int, tuple[float, float, int]]:  # fmt: skip
    """What a tileset's documents share: the base address, the tileset's path, its title,
    its layers' bbox, their lowest zoom and the view's centre."""
    base = base_url(request)
    bbox = _bbox(catalogue, layers)
    min_zoom = min(layer.tiling.min_zoom for layer in layers)
    title = catalogue.entries[collection]["title"] if collection else "The one map (一张图)"
    path = f"{base}{_tiles_path(collection)}/{tms}"
    return base, path, title, bbox, min_zoom, _center(bbox, min_zoom)


def _limiting(
    catalogue: registry.Catalogue, layers: Sequence[registry.Layer], collection: str | None
) -> Sequence[registry.Layer]:
    """The layers whose extent bounds a tileset's tiles: the collection's, or for the one
    map every feature layer, whichever a request chooses (an OGC client reads the dataset
    tileset's limits, then adds collections= to its tiles)."""
    return layers if collection is not None else catalogue.feature_layers()


def vector_limits(
    catalogue: registry.Catalogue, layers: Sequence[registry.Layer], tms: str
) -> list[dict[str, Any]]:
    """The ``tileMatrixSetLimits`` of the vector tiles of ``layers``: the tiles over their
    bbox at every zoom (below a layer's lowest zoom, its tiles there are empty: 204)."""
    bbox = _bbox(catalogue, layers)
    return matrix.matrix_set_limits(tms, tuple(bbox) if bbox else None,
                                    range(matrix.MAX_ZOOM + 1))  # fmt: skip


def tileset_document(
    request: Request, catalogue: registry.Catalogue, layers: Sequence[registry.Layer],
    tms: str, collection: str | None,
) -> dict[str, Any]:  # fmt: skip
    """The OGC tileset metadata of ``layers`` in ``tms`` (one collection's or the one
    map's): its limits, its layers and the template of its tiles."""
    base, path, title, bbox, _, (lon, lat, zoom) = _tileset(
        request, catalogue, layers, tms, collection
    )
    query = _query(request)
    links = [
        {"rel": "self", "href": f"{path}{query}", "type": "application/json",
         "title": f"{title}: vector tiles in {tms}"},
        {"rel": TILING_SCHEME, "href": f"{base}/tileMatrixSets/{tms}",
         "type": "application/json", "title": f"The {tms} tile matrix set"},
        {"rel": "item", "href": f"{path}/{TEMPLATE}{query}", "templated": True,
         "type": vector.MVT_TYPE, "title": "The tiles (Mapbox Vector Tile)"},
        {"rel": "alternate", "href": f"{path}/tilejson.json{query}", "type": "application/json",
         "title": "TileJSON 3.0"},
    ]  # fmt: skip
    if collection is not None:
        links.append({"rel": "collection", "href": f"{base}/collections/{collection}",
                      "type": "application/json"})  # fmt: skip
    body: dict[str, Any] = {
        "title": f"{title}: vector tiles",
        "dataType": "vector",
        "crs": matrix.crs_uri(tms),
        "tileMatrixSetId": tms,
        "tileMatrixSetURI": matrix.matrix_set(tms).uri,
        "tileMatrixSetLimits": vector_limits(
            catalogue, _limiting(catalogue, layers, collection), tms
        ),
        "layers": [_layer_entry(base, catalogue, layer) for layer in layers],
        "centerPoint": {"coordinates": [lon, lat], "crs": CRS84, "tileMatrix": str(zoom)},
        "links": links,
    }
    if bbox is not None:
        body["boundingBox"] = {"lowerLeft": bbox[:2], "upperRight": bbox[2:], "crs": CRS84}
    return body


def _layer_entry(base: str, catalogue: registry.Catalogue, layer: registry.Layer) -> dict[str, Any]:
    entry = catalogue.entries[layer.name]
    properties = {name: {"type": kind} for name, kind in vector.fields(layer).items()}
    for name, kind in vector.merged_fields(layer).items():
        properties.setdefault(name, {"type": kind, "description": _merged_note(layer)})
    body = {
        "id": layer.name,
        "title": entry["title"],
        "description": entry["description"],
        "dataType": "vector",
        "geometryDimension": _GEOMETRY_DIMENSION.get(layer.family, 2),
        "minTileMatrix": str(layer.tiling.min_zoom),
        "maxTileMatrix": str(matrix.MAX_ZOOM),
        "propertiesSchema": {"type": "object", "properties": properties},
        "links": [{"rel": "collection", "href": f"{base}/collections/{layer.name}",
                   "type": "application/json"}],
    }  # fmt: skip
    if entry["bbox"]:
        box = entry["bbox"]
        body["boundingBox"] = {"lowerLeft": box[:2], "upperRight": box[2:], "crs": CRS84}
    return body


def _merged_note(layer: registry.Layer) -> str:
    return f"below zoom {layer.tiling.merge_below}, where features are merged by cell"


def tilejson(
    request: Request, catalogue: registry.Catalogue, layers: Sequence[registry.Layer],
    tms: str, collection: str | None,
) -> dict[str, Any]:  # fmt: skip
    """The TileJSON 3.0.0 document of ``layers`` (what MapLibre and deck.gl read)."""
    _, path, title, bbox, min_zoom, (lon, lat, zoom) = _tileset(
        request, catalogue, layers, tms, collection
    )
    vector_layers = []
    for layer in layers:
        described = {name: _TILEJSON_TYPES.get(kind, "String")
                     for name, kind in vector.fields(layer).items()}  # fmt: skip
        for name, kind in vector.merged_fields(layer).items():
            described.setdefault(
                name, f"{_TILEJSON_TYPES.get(kind, 'String')} ({_merged_note(layer)})"
            )
        vector_layers.append({
            "id": layer.name,
            "description": catalogue.entries[layer.name]["description"],
            "fields": described,
            "minzoom": layer.tiling.min_zoom,
            "maxzoom": matrix.MAX_ZOOM,
        })  # fmt: skip
    west, south, east, north = bbox or (-180, -85.0511287798066, 180, 85.0511287798066)
    return {
        "tilejson": "3.0.0",
        "name": title,
        "description": "Vector tiles of the one map (Mapbox Vector Tile 2.1)",
        "scheme": "xyz",
        "tiles": [f"{path}/{{z}}/{{y}}/{{x}}{_query(request)}"],
        "minzoom": min_zoom,
        "maxzoom": matrix.MAX_ZOOM,
        "bounds": [west, south, east, north],
        "center": [lon, lat, zoom],
        "vector_layers": vector_layers,
    }


Limits = Callable[[str], list[dict[str, Any]]]  # a matrix set's id: the tileset's limits


def tileset_summary(
    base: str, path: str, title: str, tms: str,
    data_type: str = "vector", tile_type: str = vector.MVT_TYPE, limits: Limits | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A tileset as a tilesets list names it (``path``: the list's address): its data
    type, CRS and matrix set, its limits when ``limits`` gives them (the OGC test suite
    picks a tile to ask from the first), and links to itself, its tiling scheme and its
    tiles."""
    summary: dict[str, Any] = {
        "title": f"{title}: {data_type} tiles in {tms}",
        "dataType": data_type,
        "crs": matrix.crs_uri(tms),
        "tileMatrixSetId": tms,
        "tileMatrixSetURI": matrix.matrix_set(tms).uri,
    }
    if limits is not None:
        summary["tileMatrixSetLimits"] = limits(tms)
    return summary | {
        "links": [
            {"rel": "self", "href": f"{path}/{tms}", "type": "application/json"},
            {"rel": TILING_SCHEME, "href": f"{base}/tileMatrixSets/{tms}",
             "type": "application/json"},
            {"rel": "item", "href": f"{path}/{tms}/{TEMPLATE}", "templated": True,
             "type": tile_type},
        ],
    }  # fmt: skip


def tilesets_list(
    request: Request, title: str, collection: str | None, limits: Limits, *,
    tiles_path: str | None = None, data_type: str = "vector", tile_type: str = vector.MVT_TYPE,
) -> dict[str, Any]:  # fmt: skip
    """The tilesets of a collection or of the one map: one per matrix set served, with
    its ``limits``; of other tiles than the vector tiles (the terrain's) at ``tiles_path``,
    of ``data_type`` and ``tile_type``."""
    base = base_url(request)
    path = f"{base}{tiles_path or _tiles_path(collection)}"
    return {
        "tilesets": [
            tileset_summary(base, path, title, tms, data_type, tile_type, limits)
            for tms in matrix.SERVED
        ],
        "links": [{"rel": "self", "href": path, "type": "application/json"}],
    }


@router.get(
    "/collections/{collection_id}/tiles",
    operation_id="collection.vector.getTileSetsList",
    dependencies=DOCUMENT,
    summary="A collection's vector tilesets (public)",
)
async def collection_tilesets(request: Request, collection_id: CollectionId) -> JSONResponse:
    """The tilesets of one layer."""

    def answer(conn: psycopg.Connection) -> dict[str, Any]:
        catalogue = catalogue_of(request, conn)
        layer = _feature_layer(catalogue, collection_id)
        title = catalogue.entries[layer.name]["title"]
        return tilesets_list(request, title, layer.name,
                             lambda tms: vector_limits(catalogue, [layer], tms))  # fmt: skip

    return _json(await with_connection(request, answer))


Document = Callable[
    [Request, registry.Catalogue, Sequence[registry.Layer], str, str | None], dict[str, Any]
]


async def _collection_document(
    request: Request, collection_id: str, tms: str, document: Document
) -> JSONResponse:
    """A document (tileset metadata or TileJSON) of one collection's tiles in ``tms``."""
    matrix.matrix_set(tms)

    def answer(conn: psycopg.Connection) -> dict[str, Any]:
        catalogue = catalogue_of(request, conn)
        layer = _feature_layer(catalogue, collection_id)
        return document(request, catalogue, [layer], tms, layer.name)

    return _json(await with_connection(request, answer))


@router.get(
    "/collections/{collection_id}/tiles/{tms}",
    operation_id="collection.vector.getTileSet",
    dependencies=DOCUMENT,
    summary="A collection's vector tileset (public)",
)
async def collection_tileset(
    request: Request, collection_id: CollectionId, tms: MatrixSetId
) -> JSONResponse:
    """The tileset metadata of one layer: limits, properties, the tiles' template."""
    return await _collection_document(request, collection_id, tms, tileset_document)


@router.get(
    "/collections/{collection_id}/tiles/{tms}/tilejson.json",
    operation_id="collection.vector.getTileJSON",
    dependencies=DOCUMENT,
    summary="A collection's TileJSON (public)",
)
async def collection_tilejson(
    request: Request, collection_id: CollectionId, tms: MatrixSetId
) -> JSONResponse:
    """The TileJSON 3.0.0 document of one layer's tiles."""
    return await _collection_document(request, collection_id, tms, tilejson)


@router.get(
    "/tiles",
    operation_id="dataset.vector.getTileSetsList",
    dependencies=DOCUMENT,
    summary="The one map's vector tilesets (public)",
)
async def map_tilesets(request: Request) -> JSONResponse:
    """The tilesets of the composite one-map tile (every layer as a named MVT layer)."""

    def answer(conn: psycopg.Connection) -> dict[str, Any]:
        catalogue = catalogue_of(request, conn)
        layers = catalogue.feature_layers()
        return tilesets_list(request, "The one map (一张图)", None,
                             lambda tms: vector_limits(catalogue, layers, tms))  # fmt: skip

    return _json(await with_connection(request, answer))


@router.get(
    "/tiles/{tms}",
    operation_id="dataset.vector.getTileSet",
    dependencies=DOCUMENT,
    summary="The one map's vector tileset (public)",
)
async def map_tileset(request: Request, tms: MatrixSetId, layers: Chosen) -> JSONResponse:
    """The tileset metadata of the one-map tile (of the ``layers`` chosen)."""
    matrix.matrix_set(tms)

    def answer(conn: psycopg.Connection) -> dict[str, Any]:
        catalogue = catalogue_of(request, conn)
        return tileset_document(request, catalogue, chosen_layers(catalogue, layers), tms, None)

    return _json(await with_connection(request, answer))


@router.get(
    "/tiles/{tms}/tilejson.json",
    operation_id="dataset.vector.getTileJSON",
    dependencies=DOCUMENT,
    summary="The one map's TileJSON (public)",
)
async def map_tilejson(request: Request, tms: MatrixSetId, layers: Chosen) -> JSONResponse:
    """The TileJSON 3.0.0 document of the one-map tile (of the ``layers`` chosen)."""
    matrix.matrix_set(tms)

    def answer(conn: psycopg.Connection) -> dict[str, Any]:
        catalogue = catalogue_of(request, conn)
        return tilejson(request, catalogue, chosen_layers(catalogue, layers), tms, None)

    return _json(await with_connection(request, answer))


# --- the tiles --------------------------------------------------------------------------


def cached_tile(
    conn: psycopg.Connection, request: Request, tms: str, names: Sequence[str] | None,
    tile: matrix.Tile, layers_text: str | None = None,
) -> tuple[cache.Cached, tuple[str, ...]]:  # fmt: skip
    """The tile of the layers named (``names``: one collection; None: the one map's, as
    ``layers_text`` chooses) from the tile cache, rendered with the settings' limits when
    it has no current one; and the layers it holds."""
    catalogue = catalogue_of(request, conn)
    if names is None:
        shown = chosen_layers(catalogue, layers_text)
        chosen = [layer.name for layer in shown]
        keyed = None if layers_text is None else chosen  # None: the composite of every layer
    else:
        shown = [_feature_layer(catalogue, name) for name in names]
        chosen = keyed = list(names)
    _check_limits(
        catalogue, _limiting(catalogue, shown, None if names is None else chosen[0]), tms, tile
    )
    tile_cache: cache.TileCache = request.app.state.tile_cache
    found = tile_cache.tile(conn, catalogue, tms, keyed, tile, timed=True)
    if found.data and accepts_gzip(request.headers.get("accept-encoding")):
        found.gzipped()  # here, in the request's thread, not on the event loop
    return found, tuple(chosen)


def _check_limits(
    catalogue: registry.Catalogue, layers: Sequence[registry.Layer], tms: str, tile: matrix.Tile
) -> None:
    """NotFound for a tile outside the tileMatrixSetLimits the layers' tileset gives (OGC
    API - Tiles: 404 outside the limits; 204 is for an empty tile within them)."""
    bbox = _bbox(catalogue, layers)
    if not matrix.within_limits(tms, tuple(bbox) if bbox else None, tile):
        what = ", ".join(layer.name for layer in layers[:5]) + (", …" if len(layers) > 5 else "")
        raise NotFound(f"tile {tile.z}/{tile.y}/{tile.x} lies beyond the extent of {what} "
                       "(their tileset's tileMatrixSetLimits say which tiles there are)")  # fmt: skip


def tile_answer(request: Request, found: cache.Cached, layers: Sequence[str]) -> Response:
    """The HTTP answer of a tile: 204 when empty, 304 when the client has it, gzip when it
    takes it (compressed once for a tile kept in memory); Cache-Control by the layers it
    holds; X-Tile-Cache says where it came from (memory, shared or rendered)."""
    settings = request.app.state.settings.tiles
    # An incident's overdue changes with the clock: clients ask each time (tiles.vector).
    if "incidents" in layers or cache.ALL in layers or settings.tile_max_age_s == 0:
        cache_control = "public, no-cache"
    else:
        cache_control = f"public, max-age={settings.tile_max_age_s}"
    headers = {"Cache-Control": cache_control, "Vary": "Accept-Encoding",
               "X-Tile-Cache": found.source}  # fmt: skip
    if found.truncated:
        headers["X-Tile-Truncated"] = ", ".join(found.truncated)
    if not found.data:
        return Response(status_code=204, headers=headers)
    tag = found.etag
    zipped = tag[:-1] + '-gzip"'  # another representation, another strong tag
    wants_gzip = accepts_gzip(request.headers.get("accept-encoding"))
    headers["ETag"] = zipped if wants_gzip else tag
    if etag_matches(request.headers.get("if-none-match"), {tag, zipped}):
        return Response(status_code=304, headers=headers)
    body = found.data
    if wants_gzip:
        body = found.gzipped()
        headers["Content-Encoding"] = "gzip"
    headers["Accept-Ranges"] = "bytes"  # GDAL's /vsicurl/ reads a tile by ranges
    if_range = request.headers.get("if-range")
    if if_range is None or if_range.strip() == headers["ETag"]:
        try:
            part = byte_range(request.headers.get("range"), len(body))
        except ValueError:
            headers["Content-Range"] = f"bytes */{len(body)}"
            return Response(status_code=416, headers=headers)
        if part is not None:
            first, last = part
            headers["Content-Range"] = f"bytes {first}-{last}/{len(body)}"
            return Response(body[first : last + 1], status_code=206,
                            media_type=vector.MVT_TYPE, headers=headers)  # fmt: skip
    return Response(body, media_type=vector.MVT_TYPE, headers=headers)


# A tile's address, as the two tile routes below take it (no query, or layers= or
# collections= only).
# Its numbers as the routes take them (TileNumber): ASCII digits, no leading zero.
_NUMBER = r"(0|[1-9][0-9]{0,7})"
_TILE_PATH = re.compile(
    rf"/(?:collections/([^/]+)/)?tiles/([^/]+)/(0|[1-9][0-9]?)/{_NUMBER}/{_NUMBER}(?:\.mvt|\.pbf)?"
)


class TileFront:
    """Answers a plain tile request before FastAPI routes it: routing, dependency solving
    and the middlewares inside were two thirds of a warm tile's time, and a third of a
    street tile's first. A tile this process holds in memory is answered without a
    connection; another is made as the route makes it (``_tile``), its errors answered by
    the app's own handlers. Anything else, a query other than ``layers=`` or
    ``collections=`` (``f=``, or a parameter the routes refuse with 400), an address the
    routes refuse (a name past their length, a tile off its matrix), goes on to the routes. Sits inside InputGuard,
    which has refused NUL bytes and answers HEAD as GET."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        asked = self._asked(scope) if scope["type"] == "http" else None
        if asked is None:
            await self.app(scope, receive, send)
            return
        tms, names, tile, layers_text = asked
        request = Request(scope)
        try:
            response = await _tile(request, tms, names, tile, layers_text)
        except Exception as exc:
            handler = _handler_for(scope.get("app"), exc)
            if handler is None:
                raise
            response = await handler(request, exc)
        scope[PUBLIC_ANSWER] = True  # its CORS headers, as the route's (api.deps.PublicCORS)
        await response(scope, receive, send)

    @staticmethod
    def _asked(
        scope: Scope,
    ) -> tuple[str, list[str] | None, matrix.Tile, str | None] | None:
        """The tile a request asks as the routes would take it: (matrix set, the
        collection or None for the one map, the tile, ``layers=``); None for anything the
        routes should answer."""
        if scope["method"] != "GET":
            return None
        for name, value in scope["headers"]:
            if name == b"if-none-match" and len(value) > IF_NONE_MATCH_MAX:
                return None  # the route's 400
        match = _TILE_PATH.fullmatch(route_path(scope))
        if match is None:
            return None
        collection, tms, z, y, x = match.groups()
        if len(tms) > NAME_MAX or (collection is not None and len(collection) > NAME_MAX):
            return None  # the route's 400
        query = scope.get("query_string", b"")
        layers_text: str | None = None
        if query:
            if collection is not None:
                return None
            given = parse_qs(query.decode("latin-1"), keep_blank_values=True)
            if len(given) != 1 or (name := next(iter(given))) not in CHOOSING:
                return None
            if len(given[name]) != 1:
                return None
            layers_text = given[name][0]
            if not layer_names(layers_text) or len(layers_text) > LAYERS_MAX:
                return None
        try:
            tile = matrix.tile_at(tms, int(z), int(y), int(x))
        except (InvalidInput, NotFound):
            return None  # the route's 400 or 404
        return tms, None if collection is None else [collection], tile, layers_text


def _handler_for(app: Any, exc: Exception) -> Callable[..., Any] | None:
    """The app's handler of ``exc`` (the nearest of its classes that has one), as
    Starlette's own look-up finds it for a routed request."""
    handlers = getattr(app, "exception_handlers", {})
    return next((handlers[k] for k in type(exc).__mro__ if k in handlers), None)


# What a flight's waiters are told when it lands: None, the tile is made (in memory, or
# in the shared tier); an exception, the answer its asker got, theirs too; GONE, its
# asker went away before it was made (cancelled), so one of them makes it.
GONE = asyncio.CancelledError()
Flight = asyncio.Future[BaseException | None]


async def _tile(
    request: Request, tms: str, names: Sequence[str] | None, tile: matrix.Tile,
    layers_text: str | None,
) -> Response:  # fmt: skip
    """A tile's answer: from this process's memory without a connection when it is
    there (a warm tile), else through the cache on a pooled connection. A tile already
    being made for another request of this process is waited for, not made again (a
    view opening asks the same tiles of many clients at once), holding no connection;
    when that making fails (a tile over its time limit) the waiters get the same answer
    rather than each trying again at once, and when its asker is gone, one makes it."""
    if names is None and layers_text is not None and not layers_text.strip(", "):
        key = None  # no layer named: the route's error, once each
    else:
        keyed = layer_names(layers_text) if names is None and layers_text is not None else names
        key = cache.key_for(tms, keyed, tile)
        tile_cache: cache.TileCache = request.app.state.tile_cache
        found = tile_cache.from_memory(key)
        if found is not None:
            return tile_answer(request, found, keyed or (cache.ALL,))
    flights: dict[cache.Key, Flight] = request.app.state.tile_flights
    waited = False
    while key is not None and (flight := flights.get(key)) is not None:
        outcome = await asyncio.shield(flight)
        if outcome is GONE:
            continue  # the next in line makes it
        if outcome is not None:
            raise outcome.with_traceback(None)  # the first asker's answer
        found = request.app.state.tile_cache.from_memory(key)
        if found is not None:
            return tile_answer(request, found, keyed or (cache.ALL,))
        waited = True  # not kept in memory (off, or a change came): through the cache
        break
    flight = None
    if key is not None and not waited:
        flight = flights[key] = asyncio.get_running_loop().create_future()
    outcome = GONE
    try:
        found, layers = await with_pool_connection(
            request, POOL, cached_tile, request, tms, names, tile, layers_text
        )
        outcome = None
    except Exception as exc:
        outcome = exc
        raise
    finally:
        if flight is not None:
            del flights[key]
            flight.set_result(outcome)
    return tile_answer(request, found, layers)


# Many clients (MapLibre styles, Leaflet plug-ins, tile scripts) ask for ``…/{x}.mvt`` or
# ``…/{x}.pbf``: the same tile. Kept out of the OpenAPI document (one address per tile
# there); registered before the plain route, whose ``{x}`` would take "13000.mvt" whole
# and refuse it as no number.
TILE_SUFFIXES = (".mvt", ".pbf")
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


def also_with_suffixes(
    path: str, *, on: APIRouter = router, suffixes: Sequence[str] = TILE_SUFFIXES,
    dependencies: Sequence[Any] = TILE,
) -> Callable[[Endpoint], Endpoint]:  # fmt: skip
    """Serve ``endpoint`` at ``path`` with each of the tile file ``suffixes`` too, on the
    router ``on`` (the terrain's takes ``.png``); the decorator goes below the route's."""

    def register(endpoint: Endpoint) -> Endpoint:
        for suffix in suffixes:
            on.add_api_route(
                path + suffix, endpoint, methods=["GET"], dependencies=list(dependencies),
                response_class=Response, include_in_schema=False,
            )  # fmt: skip
        return endpoint

    return register


@router.get(
    "/collections/{collection_id}/tiles/{tms}/{z}/{y}/{x}",
    operation_id="collection.vector.getTile",
    dependencies=TILE,
    summary="A collection's vector tile (public)",
    response_class=Response,
    responses={200: {"content": {vector.MVT_TYPE: {}}}, 204: {"description": "empty tile"}},
)
@also_with_suffixes("/collections/{collection_id}/tiles/{tms}/{z}/{y}/{x}")
async def collection_tile(
    request: Request, collection_id: CollectionId, tms: MatrixSetId, z: Zoom, y: Row, x: Column
) -> Response:
    """One layer's tile (Mapbox Vector Tile 2.1, one layer named as the collection)."""
    tile = matrix.tile_at(tms, z, y, x)
    return await _tile(request, tms, [collection_id], tile, None)


@router.get(
    "/tiles/{tms}/{z}/{y}/{x}",
    operation_id="dataset.vector.getTile",
    dependencies=TILE,
    summary="The one map's vector tile (public)",
    response_class=Response,
    responses={200: {"content": {vector.MVT_TYPE: {}}}, 204: {"description": "empty tile"}},
)
@also_with_suffixes("/tiles/{tms}/{z}/{y}/{x}")
async def map_tile(
    request: Request, tms: MatrixSetId, z: Zoom, y: Row, x: Column, layers: Chosen
) -> Response:
    """The composite one-map tile: every feature layer (or those ``layers``, or OGC's
    ``collections``, names) as a named MVT layer."""
    tile = matrix.tile_at(tms, z, y, x)
    return await _tile(request, tms, None, tile, layers)
