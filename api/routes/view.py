"""The 3D view (一屏观全域) at /view, and the files its page loads at /view/static/: the
one map drawn by deck.gl over our own tiles, with no outside host (tiles.view)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Request
from fastapi.responses import HTMLResponse, Response

from api.access import Public
from api.deps import Connection, IfNoneMatch, accepts_gzip, catalogue_of, etag_matches
from tiles import view

router = APIRouter(prefix="/view", tags=["3D view"])
# The files' addresses carry their digest (?v=), so a browser may keep them for good.
ASSET_CACHE = "public, max-age=31536000, immutable"


@router.get(
    "", dependencies=[Public], response_class=HTMLResponse, summary="The 3D one map (public)"
)
def get_view(request: Request, conn: Connection) -> HTMLResponse:
    """The one map in 3D: buildings, public space, pipes at their depth, valves and
    hydrants, sensors, incidents kept live, terrain where a DEM is loaded. Click a point
    for what is there (``/locate``). Works with no internet."""
    html = view.page(conn, catalogue_of(request, conn))
    return HTMLResponse(html, headers={"Cache-Control": "no-cache"})


@router.get("/static/{name}", dependencies=[Public], summary="A file of the 3D view (public)")
async def get_asset(
    name: Annotated[str, Path(max_length=80)],
    accept_encoding: Annotated[str | None, Header(max_length=200)] = None,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """deck.gl, loaders.gl's MVT and terrain workers, the page's script and style sheet;
    gzipped when asked, ETag and 304. 404 for any other name."""
    served = view.asset(name)
    headers = {"ETag": served.etag, "Cache-Control": ASSET_CACHE, "Vary": "Accept-Encoding"}
    if etag_matches(if_none_match, {served.etag}):
        return Response(status_code=304, headers=headers)
    if accepts_gzip(accept_encoding):
        headers["Content-Encoding"] = "gzip"
        return Response(served.gzipped, media_type=served.media_type, headers=headers)
    return Response(served.data, media_type=served.media_type, headers=headers)
