"""Pipe networks over HTTP: connectivity, traces, valve isolation, bursts and the
excavation check. For staff (``query_networks``; a burst needs ``operate_networks``): the
networks under a city are not open data. Thin: twin.network does the work.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Header, Query, Request, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from api.access import Heavy, NetworkOperator, NetworkStaff, Operational
from api.deps import Connection, FastJSON, KnownParameters
from api.errors import TITLES, problem
from api.routes.spatial import _geojson_area
from twin.crs import point_to_storage
from twin.errors import InvalidInput
from twin.network import burst, excavation, queries
from twin.network.trace import MAX_FEATURES
from twin.schema import PIPE_NETWORKS, SRID
from twin.settings import NetworkSettings

router = APIRouter(tags=["pipe networks"], default_response_class=FastJSON)


# --- the places a request names ------------------------------------------------------

Id = Annotated[int, Field(ge=1, le=2**63 - 1)]
Text = Annotated[str, Field(min_length=1, max_length=200)]
Coordinate = Annotated[float, Field(allow_inf_nan=False)]


class FeatureRef(BaseModel):
    """A pipe or a node: by ``id``, or by ``source_id`` (with ``dataset`` when the source id
    is in several datasets)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: Id | None = None
    source_id: Text | None = None
    dataset: Text | None = None

    @model_validator(mode="after")
    def _one_way(self) -> FeatureRef:
        if (self.id is None) == (self.source_id is None):
            raise ValueError('give "id" or "source_id" (with "dataset" if need be), not both')
        if "\x00" in (self.source_id or "") + (self.dataset or ""):
            raise ValueError("NUL characters are not allowed")
        return self

    def plain(self) -> dict[str, Any]:
        """The reference as the core reads it."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class PointRef(BaseModel):
    """A point, x (lon) first, in ``crs`` (CRS84 by default; GCJ02, BD09, EPSG codes...)."""

    model_config = ConfigDict(extra="forbid")

    lon: Coordinate
    lat: Coordinate
    crs: Annotated[str, Field(max_length=200)] = "CRS84"

    def plain(self) -> dict[str, float]:
        """The point in lon/lat, as the core reads it."""
        lon, lat = point_to_storage(self.lon, self.lat, self.crs, option="point.crs", srid=SRID)
        return {"lon": lon, "lat": lat}


class Place(BaseModel):
    """One of: a pipe, a node, or a point (the nearest pipe)."""

    model_config = ConfigDict(extra="forbid")

    pipe: FeatureRef | None = None
    node: FeatureRef | None = None
    point: PointRef | None = None

    def plain(self) -> dict[str, Any]:
        """The place as the core reads it."""
        return {k: getattr(self, k).plain() for k in ("pipe", "node", "point")
                if getattr(self, k) is not None}  # fmt: skip


class IsolationRequest(BaseModel):
    """A burst on a pipe (or at a point: the nearest pipe), and the valves that will not
    close in this run."""

    model_config = ConfigDict(extra="forbid")

    pipe: FeatureRef | None = None
    point: PointRef | None = None
    failed_valves: list[FeatureRef] = Field(default_factory=list, max_length=200)

    def plain(self) -> dict[str, Any]:
        """The burst and the failed valves as the core reads them (a pipe or a point)."""
        if (self.pipe is None) == (self.point is None):
            raise InvalidInput('name the burst with "pipe" or "point" (one of them)',
                               option="pipe")  # fmt: skip
        place = {"pipe": self.pipe.plain()} if self.pipe else {"point": self.point.plain()}  # type: ignore[union-attr]
        return {**place, "failed_valves": [v.plain() for v in self.failed_valves]}


class TraceRequest(BaseModel):
    """A trace from a place (and, for a path, to another)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    trace: Literal["connected", "upstream", "downstream", "path"] = "connected"
    from_: Place = Field(alias="from")
    to: Place | None = None
    limit: Annotated[int, Field(ge=1, le=MAX_FEATURES)] = MAX_FEATURES


NetworkName = Annotated[
    str,
    PathParam(max_length=40, description="the network: " + ", ".join(PIPE_NETWORKS)),
]


def _settings(request: Request) -> NetworkSettings:
    return request.app.state.settings.network


@router.post(
    "/network/{network}/isolate",
    dependencies=[Heavy, KnownParameters],
    summary="Valve isolation of a burst: valves to close, what goes dry, who is affected",
)
def isolate(
    request: Request, network: NetworkName, body: IsolationRequest, conn: Connection,
    holder: NetworkStaff,
) -> FastJSON:  # fmt: skip
    """The valves to close for a burst on a pipe (``{"pipe": {"id": N}}``, ``{"pipe":
    {"source_id": "P-1"}}``) or at a point (``{"point": {"lon": …, "lat": …}}``), with the
    isolated pipes, their length and volume, hydrants out of service, the pipes cut off
    from every source, and the buildings that lose supply with their jurisdictions.
    Closed valves are honoured; inoperable valves, and those in ``failed_valves``, are
    passed and the isolation grows to the next ring."""
    settings = _settings(request)
    return FastJSON(queries.run_isolation(conn, network, body.plain(),
                                          snap_m=settings.network_snap_m,
                                          service_m=settings.network_service_m))  # fmt: skip


@router.post(
    "/network/{network}/trace",
    dependencies=[Heavy, KnownParameters],
    summary="Trace: connected, upstream, downstream, or the shortest path (GeoJSON)",
)
def trace_network(
    request: Request, network: NetworkName, body: TraceRequest, conn: Connection,
    holder: NetworkStaff,
) -> FastJSON:  # fmt: skip
    """The pipes (and the nodes on them) connected to a place, upstream or downstream of it
    by the flow, or on the shortest way to another place (``"trace": "path"`` with
    ``"to"``); closed valves stop every trace. A GeoJSON FeatureCollection, each pipe with
    the length traced along it."""
    plain = {"trace": body.trace, "from": body.from_.plain()}
    if body.to is not None:
        plain["to"] = body.to.plain()
    return FastJSON(queries.run_trace(conn, network, plain, snap_m=_settings(request).network_snap_m,
                                      limit=body.limit))  # fmt: skip


@router.get(
    "/network/{network}/check",
    dependencies=[Heavy, KnownParameters],
    summary="Connectivity report: parts, dangling ends, near misses, nodes off the network",
)
def check_connectivity(
    request: Request, network: NetworkName, conn: Connection, holder: NetworkStaff
) -> FastJSON:
    """How the network's pipes and nodes tie together once snapped: its parts (and which
    reach no source), pipe ends that meet nothing, ends that nearly touch a pipe they do not
    meet (with the gap), and nodes that lie on no pipe."""
    settings = _settings(request)
    return FastJSON(queries.run_check(conn, network, snap_m=settings.network_snap_m,
                                      near_miss_m=settings.network_near_miss_m))  # fmt: skip


class Dig(BaseModel):
    """A planned excavation: its outline, the CRS it is in, and the safety margin."""

    model_config = ConfigDict(extra="forbid")  # a misspelt field is not silently left out

    area: dict[str, Any] = Field(description="the dig's outline: a GeoJSON Polygon or MultiPolygon")
    crs: str | None = Field(
        default=None,
        max_length=200,
        description="CRS of the area, x (lon) first: CRS84/4326 (default), 4490, 3857, 4549,"
        " GCJ02, BD09, any EPSG code, or an OGC URI or URN",
    )
    margin_m: float = Field(
        default=excavation.DEFAULT_MARGIN_M,
        ge=0,
        le=excavation.MAX_MARGIN_M,
        strict=True,  # "1" and true are not metres
        allow_inf_nan=False,
        description="metres around the dig that count as under it",
    )

    @field_validator("crs")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("holds a NUL byte, which no text may hold")
        return value

    @field_validator("margin_m", mode="before")
    @classmethod
    def _not_huge(cls, value: Any) -> Any:
        # A whole number past a double (10**400 written out) is no float: pydantic would
        # say "must be a number, not a number".
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**63:
            raise ValueError(f"a number of {len(str(abs(value)))} digits is no margin in metres")
        return value


@router.post(
    "/network/excavation",
    dependencies=[Heavy, KnownParameters],
    response_model=dict[str, Any],
    responses={422: {"description": "a dig larger than the check takes (1 km²)"}},
    summary="Every pipe and node under a planned dig, gas and power first (network staff)",
)
def excavation_check(
    request: Request, conn: Connection, caller: NetworkStaff, body: Annotated[Dig, Body()]
) -> Response:
    """Pipes and pipe nodes under the dig or within ``margin_m`` of it (1 m unless given),
    ordered gas, power, heat, water, telecom, drainage, sewage and shallowest first within
    each, with depth (recorded, or worked out from inverts and ground), owner and length
    under the dig; per network the owners to call; warnings to read before digging. 400
    naming what is wrong with the body or the area, 422 for a dig over 1 km²."""
    try:
        answer = excavation.excavation_check(
            conn, _geojson_area(body.area), margin_m=body.margin_m, crs=body.crs
        )
    except excavation.DigTooLarge as exc:
        # Well-formed but more than a dig: 422, where a broken polygon is 400.
        return problem(422, TITLES[422], str(exc), request.url.path, parameter="area")
    return FastJSON(answer)


class BurstRequest(IsolationRequest):
    """A burst to act on: the isolation's request, a note, and the city's own categories
    when they are not the demo's."""

    note: Annotated[str, Field(max_length=2000)] | None = None
    category: Annotated[str, Field(max_length=100)] | None = None
    valve_category: Annotated[str, Field(max_length=100)] | None = None


class CloseBurstRequest(BaseModel):
    """How the burst was dealt with, for its record (optional)."""

    model_config = ConfigDict(extra="forbid")

    note: Annotated[str, Field(max_length=2000)] | None = None


BurstId = Annotated[int, PathParam(ge=1, le=2**63 - 1)]


@router.post(
    "/network/{network}/bursts",
    status_code=201,
    dependencies=[Operational, KnownParameters],
    summary="A burst turned into action: incident, valve work orders, notice list",
)
def open_burst(
    request: Request, network: NetworkName, body: BurstRequest, conn: Connection,
    holder: NetworkOperator,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)] = None,
) -> FastJSON:  # fmt: skip
    """Isolate the burst (as ``/isolate``) and, in one transaction: an incident of the
    network's pipe-burst category at the burst, dispatched to the pipe's owner; a work order
    for each valve to close, to the valve's owner; the notice list of the buildings that
    lose supply, sensitive sites first; and the open bursts whose isolations share a valve
    or a pipe with this one. ``Idempotency-Key`` makes a retry safe."""
    if idempotency_key is not None and "\x00" in idempotency_key:
        raise InvalidInput("Idempotency-Key holds a NUL character", option="Idempotency-Key")
    extra = {"note": body.note, "category": body.category, "valve_category": body.valve_category}
    plain = {**body.plain(), **{k: v for k, v in extra.items() if v is not None}}
    settings = _settings(request)
    key = None if idempotency_key is None else f"{len(holder.name)}:{holder.name}:{idempotency_key}"
    answer = burst.open_burst(
        conn, network, plain,
        snap_m=settings.network_snap_m, service_m=settings.network_service_m,
        actor=holder.name, idempotency_key=key, shown_key=idempotency_key,
    )  # fmt: skip
    return FastJSON(answer, status_code=200 if answer.get("replayed") else 201)


@router.get("/network/bursts", dependencies=[KnownParameters],
            summary="The bursts, newest first")  # fmt: skip
def list_bursts(
    conn: Connection, holder: NetworkStaff,
    network: Annotated[str | None, Query(max_length=40)] = None,
    status: Annotated[str | None, Query(max_length=20)] = None,
) -> FastJSON:  # fmt: skip
    """Each burst's id, network, status, incident, and how many valves and pipes its
    isolation holds; filtered by ``network`` and ``status`` (open or closed)."""
    return FastJSON({"bursts": burst.list_bursts(conn, network=network, status=status)})


@router.get("/network/bursts/{burst_id}", dependencies=[KnownParameters],
            summary="One burst: its incident, work orders, notices and overlaps")  # fmt: skip
def get_burst(burst_id: BurstId, conn: Connection, holder: NetworkStaff) -> FastJSON:
    """The burst as it was opened, with its incident as it stands now and the open bursts
    whose isolations it overlaps."""
    return FastJSON(burst.get_burst(conn, burst_id))


@router.post("/network/bursts/{burst_id}/close", dependencies=[Operational, KnownParameters],
             summary="Close a burst: mended, valves open again")  # fmt: skip
def close_burst(
    burst_id: BurstId, conn: Connection, holder: NetworkOperator,
    body: Annotated[CloseBurstRequest | None, Body()] = None,
) -> FastJSON:  # fmt: skip
    """Mark the burst closed (its isolation no longer overlaps others), keeping who closed
    it and the body's ``note`` (how it was mended); 409 when it is closed already. The
    incident and work orders follow their own closed loop."""
    note = None if body is None else body.note
    return FastJSON(burst.close_burst(conn, burst_id, actor=holder.name, note=note))
