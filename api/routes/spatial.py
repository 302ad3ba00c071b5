"""The one-map questions over HTTP: locate, nearest, within, below. Public: they return
assets and jurisdictions, never anything personal.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import numpy as np
import psycopg
import shapely
from fastapi import APIRouter, Body, Query, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.access import Heavy, Operational, Public
from api.deps import (
    Connection,
    FastJSON,
    KnownParameters,
    Number,
    Plain,
    Whole,
    with_connection,
)
from layers.readers import geojson_geometry
from twin import spatial
from twin.crs import number_text, point_to_storage
from twin.errors import InvalidInput
from twin.schema import SRID

router = APIRouter(tags=["one-map queries"], default_response_class=FastJSON)
CrsParam = Annotated[
    str,
    Query(
        description="CRS of the point, x (lon) first: CRS84/4326 (default), 4490, 3857, 4549,"
        " GCJ02, BD09, any EPSG code, or an OGC URI or URN"
    ),
]
DEFAULT_LAYERS = "buildings,public_spaces,pipes,pipe_nodes,sensors,units"


def _storage_point(lon: float, lat: float, crs: str) -> tuple[float, float]:
    """The point in lon/lat; x/y in the named CRS when it is projected."""
    return point_to_storage(lon, lat, crs, option="crs", srid=SRID)


def _layers(text: str) -> list[str]:
    # Checked by the core, which knows the scenes registered in the data base.
    return [name.strip() for name in text.split(",") if name.strip()]


def _locate(conn: psycopg.Connection, lon: float, lat: float, crs: str) -> dict[str, Any]:
    return spatial.locate(conn, *_storage_point(lon, lat, crs))


# locate and nearest are async, with one trip through the thread pool for the query and
# the answer rendered as it is (no response validation): they are asked often and must
# answer in a few milliseconds. response_model keeps them documented as before.
@router.get(
    "/locate",
    dependencies=[Public, Operational, KnownParameters],
    response_model=dict[str, Any],
    summary="What is here: jurisdictions, units, assets (public)",
)
async def locate(request: Request, lon: Number, lat: Number, crs: CrsParam = "CRS84") -> FastJSON:
    """The jurisdiction at every level with the units there, the building the point is in,
    the public space, and the pipes beneath with their depth."""
    return FastJSON(await with_connection(request, _locate, lon, lat, crs))


def _nearest(
    conn: psycopg.Connection,
    lon: Number,
    lat: Number,
    crs: str,
    *,
    layers: str,
    k: int,
    max_distance: float | None,
) -> dict[str, Any]:
    x, y = _storage_point(lon, lat, crs)
    return spatial.nearest(conn, x, y, layers=_layers(layers), k=k, max_distance_m=max_distance)


@router.get(
    "/nearest",
    dependencies=[Public, Operational, KnownParameters],
    response_model=dict[str, Any],
    summary="The nearest features per layer (public)",
)
async def nearest(
    request: Request,
    lon: Number,
    lat: Number,
    layers: str = DEFAULT_LAYERS,
    k: Annotated[int, Query(ge=1, le=spatial.MAX_K), Plain] = 5,
    max_distance: Annotated[float | None, Query(gt=0, description="metres"), Plain] = None,
    crs: CrsParam = "CRS84",
) -> FastJSON:
    """k nearest features of each layer, with distances in metres."""
    answer = await with_connection(
        request, _nearest, lon, lat, crs, layers=layers, k=k, max_distance=max_distance
    )
    return FastJSON(answer)


class Area(BaseModel):
    """An area as GeoJSON or WKT, in lon/lat."""

    model_config = ConfigDict(extra="forbid")  # a misspelt field is not silently left out

    geometry: dict[str, Any] | None = Field(
        default=None, description="a GeoJSON Polygon or MultiPolygon"
    )
    wkt: str | None = Field(default=None, max_length=200_000)
    layers: str = DEFAULT_LAYERS
    limit: int = Field(default=1000, ge=1, le=spatial.MAX_WITHIN_FEATURES, strict=True)

    @field_validator("wkt", "layers")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("holds a NUL byte, which no text may hold")
        return value


def _non_finite_position(value: Any, path: list[int]) -> str | None:
    """Where the first NaN or infinite number of nested GeoJSON coordinates is, in words."""
    if isinstance(value, float) and not math.isfinite(value):
        *place, axis = path
        names = ("coordinate", "ring", "part")
        where = " of ".join(f"{n} {i}" for n, i in zip(names, reversed(place), strict=False))
        return f"{where}: {('longitude', 'latitude', 'height')[axis]} {number_text(value)} is not a finite number"
    if isinstance(value, list):
        for i, inner in enumerate(value):
            found = _non_finite_position(inner, [*path, i])
            if found:
                return found
    return None


# What GEOS says of WKT it cannot read, in a reader's words.
_WKT_TROUBLE = {
    "end of stream": "it ends too soon (a number or a bracket is missing)",
    "closed linestring": "a ring does not end where it starts (or a coordinate is NaN)",
    "Expected word": "it does not start with a geometry type (POLYGON, MULTIPOLYGON)",
    "Unknown type": "it does not start with a geometry type (POLYGON, MULTIPOLYGON)",
}


def _area(body: Area) -> Any:
    if body.geometry is not None and body.wkt is not None:
        raise InvalidInput("give the area as geometry (GeoJSON) or as wkt, not both")
    if body.geometry is not None:
        return _geojson_area(body.geometry)
    if body.wkt is not None:
        try:
            with np.errstate(invalid="ignore"):  # NaN: named below (this thread's only)
                area = shapely.from_wkt(body.wkt)
        except shapely.errors.ShapelyError as exc:
            why = next((w for k, w in _WKT_TROUBLE.items() if k in str(exc)), "")
            raise InvalidInput(f"wkt is not well-formed WKT{': ' + why if why else ''}") from None
        return area  # its coordinates are checked by the core, as every area's
    raise InvalidInput("give the area as geometry (GeoJSON) or wkt")


def _geojson_area(geometry: dict[str, Any]) -> Any:
    """The GeoJSON area as a shapely polygon; InvalidInput naming the first coordinate or
    ring that is not as GeoJSON has them (numbers, in range, rings closed: the one reader
    of GeoJSON geometries, as features are read)."""
    area, why = geojson_geometry(geometry, ("longitude", "latitude"))
    if area is None:  # GEOS cannot close a ring that ends in NaN: find it ourselves
        why = _non_finite_position(geometry.get("coordinates"), []) or why
    if why is not None:
        placed = why.startswith(("coordinate", "ring", "part", "the point"))
        raise InvalidInput(f"the area's {why}" if placed else f"the area: {why}")
    return area


# The area questions' answers (up to 30,000 features) are rendered by orjson in the worker
# thread, as locate's: FastAPI's own serialisation of one held the event loop, so every
# other request, for a third of a second.
@router.post(
    "/within",
    dependencies=[Public, Heavy, KnownParameters],
    response_model=dict[str, Any],
    summary="What is inside an area (public)",
)
def within_area(conn: Connection, body: Annotated[Area, Body()]) -> FastJSON:
    """Features of the chosen layers in a polygon, with counts by layer (平急两用)."""
    answer = spatial.within(conn, _area(body), layers=_layers(body.layers), limit=body.limit)
    return FastJSON(answer)


@router.get(
    "/within",
    dependencies=[Public, Heavy, KnownParameters],
    response_model=dict[str, Any],
    summary="What is within a radius of a point (public)",
)
def within_radius(
    conn: Connection,
    lon: Number,
    lat: Number,
    radius: Annotated[float, Query(gt=0, le=spatial.MAX_RADIUS_M, description="metres"), Plain],
    layers: str = DEFAULT_LAYERS,
    limit: Annotated[int, Query(ge=1, le=spatial.MAX_WITHIN_FEATURES), Plain] = 1000,
    crs: CrsParam = "CRS84",
) -> FastJSON:
    """Features of the chosen layers within ``radius`` metres of the point."""
    x, y = _storage_point(lon, lat, crs)
    return FastJSON(spatial.within_radius(conn, x, y, radius, layers=_layers(layers), limit=limit))


@router.get(
    "/below",
    dependencies=[Public, Heavy, KnownParameters],
    response_model=dict[str, Any],
    summary="Pipes and nodes under a building (public)",
)
def below_building(conn: Connection, building_id: Whole) -> FastJSON:
    """What lies under a building's footprint, shallowest first."""
    return FastJSON(spatial.below(conn, spatial.building_footprint(conn, building_id)))


@router.post(
    "/below",
    dependencies=[Public, Heavy, KnownParameters],
    response_model=dict[str, Any],
    summary="Pipes and nodes under a planned excavation (public)",
)
def below_area(conn: Connection, body: Annotated[Area, Body()]) -> FastJSON:
    """What lies under an area, with depth and network, shallowest first."""
    return FastJSON(spatial.below(conn, _area(body)))
