"""The one-map questions over HTTP: locate, nearest, within, below. Public: they return
assets and jurisdictions, never anything personal.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import psycopg
import shapely
from fastapi import APIRouter, Body, Query, Request
from pydantic import BaseModel, Field

from api.access import Heavy, Operational, Public
from api.deps import Connection, FastJSON, with_connection
from layers.crs import implausible, resolve_crs, to_storage
from twin import spatial
from twin.errors import InvalidInput

router = APIRouter(tags=["one-map queries"], default_response_class=FastJSON)
CrsParam = Annotated[
    str, Query(description="CRS of the point: CRS84/4326 (default), 4490, 3857, 4549, GCJ02, BD09")
]
DEFAULT_LAYERS = "buildings,public_spaces,pipes,pipe_nodes,sensors,units"


def _storage_point(lon: float, lat: float, crs: str) -> tuple[float, float]:
    """The point in lon/lat; x/y in the named CRS when it is projected."""
    if crs.upper() in (
        "CRS84",
        "EPSG:4326",
        "4326",
        "HTTP://WWW.OPENGIS.NET/DEF/CRS/OGC/1.3/CRS84",
    ):
        return lon, lat
    if not (np.isfinite(lon) and np.isfinite(lat)):
        raise InvalidInput("lon and lat must be finite numbers")
    source = resolve_crs(crs)
    given = np.array([shapely.Point(lon, lat)], dtype=object)
    wrong = implausible(given, source)[0]
    if wrong is not None:
        # Degrees sent with a projected crs= land thousands of kilometres away: say so.
        hint = (
            " (are these degrees? then leave crs out)" if abs(lon) <= 180 and abs(lat) <= 90 else ""
        )
        raise InvalidInput(f"the point {lon:g}, {lat:g} cannot be in {source.name}: {wrong}{hint}")
    point = to_storage(given, source)[0]
    return point.x, point.y


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
    dependencies=[Public, Operational],
    response_model=dict[str, Any],
    summary="What is here: jurisdictions, units, assets (public)",
)
async def locate(request: Request, lon: float, lat: float, crs: CrsParam = "CRS84") -> FastJSON:
    """The jurisdiction at every level with the units there, the building the point is in,
    the public space, and the pipes beneath with their depth."""
    return FastJSON(await with_connection(request, _locate, lon, lat, crs))


def _nearest(
    conn: psycopg.Connection,
    lon: float,
    lat: float,
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
    dependencies=[Public, Operational],
    response_model=dict[str, Any],
    summary="The nearest features per layer (public)",
)
async def nearest(
    request: Request,
    lon: float,
    lat: float,
    layers: str = DEFAULT_LAYERS,
    k: Annotated[int, Query(ge=1, le=spatial.MAX_K)] = 5,
    max_distance: Annotated[float | None, Query(gt=0, description="metres")] = None,
    crs: CrsParam = "CRS84",
) -> FastJSON:
    """k nearest features of each layer, with distances in metres."""
    answer = await with_connection(
        request, _nearest, lon, lat, crs, layers=layers, k=k, max_distance=max_distance
    )
    return FastJSON(answer)


class Area(BaseModel):
    """An area as GeoJSON or WKT, in lon/lat."""

    geometry: dict[str, Any] | None = Field(
        default=None, description="a GeoJSON Polygon or MultiPolygon"
    )
    wkt: str | None = Field(default=None, max_length=200_000)
    layers: str = DEFAULT_LAYERS
    limit: int = Field(default=1000, ge=1, le=spatial.MAX_WITHIN_FEATURES)


def _area(body: Area) -> Any:
    if body.geometry is not None and body.wkt is not None:
        raise InvalidInput("give the area as geometry (GeoJSON) or as wkt, not both")
    try:
        if body.geometry is not None:
            return shapely.geometry.shape(body.geometry)
        if body.wkt is not None:
            return shapely.from_wkt(body.wkt)
    except (KeyError, TypeError, ValueError, AttributeError, shapely.errors.ShapelyError) as exc:
        raise InvalidInput(f"the area is not readable GeoJSON or WKT: {str(exc)[:120]}") from exc
    raise InvalidInput("give the area as geometry (GeoJSON) or wkt")


# The area questions' answers (up to 30,000 features) are rendered by orjson in the worker
# thread, as locate's: FastAPI's own serialisation of one held the event loop, so every
# other request, for a third of a second.
@router.post(
    "/within",
    dependencies=[Public, Heavy],
    response_model=dict[str, Any],
    summary="What is inside an area (public)",
)
def within_area(conn: Connection, body: Annotated[Area, Body()]) -> FastJSON:
    """Features of the chosen layers in a polygon, with counts by layer (平急两用)."""
    answer = spatial.within(conn, _area(body), layers=_layers(body.layers), limit=body.limit)
    return FastJSON(answer)


@router.get(
    "/within",
    dependencies=[Public, Heavy],
    response_model=dict[str, Any],
    summary="What is within a radius of a point (public)",
)
def within_radius(
    conn: Connection,
    lon: float,
    lat: float,
    radius: Annotated[float, Query(gt=0, le=5000, description="metres")],
    layers: str = DEFAULT_LAYERS,
    limit: Annotated[int, Query(ge=1, le=spatial.MAX_WITHIN_FEATURES)] = 1000,
    crs: CrsParam = "CRS84",
) -> FastJSON:
    """Features of the chosen layers within ``radius`` metres of the point."""
    x, y = _storage_point(lon, lat, crs)
    return FastJSON(spatial.within_radius(conn, x, y, radius, layers=_layers(layers), limit=limit))


@router.get(
    "/below",
    dependencies=[Public, Heavy],
    response_model=dict[str, Any],
    summary="Pipes and nodes under a building (public)",
)
def below_building(conn: Connection, building_id: int) -> FastJSON:
    """What lies under a building's footprint, shallowest first."""
    return FastJSON(spatial.below(conn, spatial.building_footprint(conn, building_id)))


@router.post(
    "/below",
    dependencies=[Public, Heavy],
    response_model=dict[str, Any],
    summary="Pipes and nodes under a planned excavation (public)",
)
def below_area(conn: Connection, body: Annotated[Area, Body()]) -> FastJSON:
    """What lies under an area, with depth and network, shallowest first."""
    return FastJSON(spatial.below(conn, _area(body)))
