"""Pipe networks over HTTP: connectivity, traces, valve isolation, bursts and the
excavation check. For staff (``query_networks``; a burst needs ``operate_networks``): the
networks under a city are not open data. Thin: twin.network does the work.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.access import Heavy, NetworkStaff
from api.deps import Connection, FastJSON, KnownParameters
from api.errors import TITLES, problem
from api.routes.spatial import _geojson_area
from twin.network import excavation

router = APIRouter(tags=["pipe networks"], default_response_class=FastJSON)


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
