"""OGC API Features (Parts 1, 2 and 3) over every layer in the catalogue. Public.

Query parameters are parsed and checked here; twin.features does the querying.
"""

from __future__ import annotations

import html
import math
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

import psycopg
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse

from api import openapi30
from api.access import HeavyPage, Public
from api.deps import Connection, Plain, base_url, catalogue_of, with_connection
from api.errors import TooLarge
from api.routes import terrain
from tiles import terrain as terrain_tiles
from twin import features
from twin.errors import InvalidInput

router = APIRouter(tags=["OGC API Features"])
CollectionId = Annotated[str, Path(max_length=63)]
GEOJSON = "application/geo+json"
CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/html",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables-query-parameters",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/features-filter",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2",
    "http://www.opengis.net/spec/cql2/1.0/conf/advanced-comparison-operators",
    "http://www.opengis.net/spec/cql2/1.0/conf/case-insensitive-comparison",
    "http://www.opengis.net/spec/cql2/1.0/conf/property-property",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions-plus",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions",
    "http://www.opengis.net/spec/cql2/1.0/conf/spatial-functions",
    # OGC API - Tiles (api/routes/tiles.py): vector tiles of each layer and of the one map
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/tileset",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/tilesets-list",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/geodata-tilesets",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/dataset-tilesets",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/collections-selection",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/mvt",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/png",  # the terrain's tiles
]
RESERVED = {"f", "limit", "offset", "after", "bbox", "bbox-crs", "crs", "properties", "sortby",
            "datetime", "filter", "filter-lang", "filter-crs"}  # fmt: skip


def _wants_html(request: Request, f: str | None) -> bool:
    if f is not None:
        if f not in ("json", "geojson", "html"):
            raise InvalidInput(f"f {f[:20]!r}: use json (or geojson) or html")
        return f == "html"
    accept = request.headers.get("accept", "")
    return "text/html" in accept and "json" not in accept


@router.get("/", dependencies=[Public], summary="Landing page (public)")
def landing(request: Request, f: str | None = None) -> Any:
    """Links to the API definition, conformance and collections."""
    base = base_url(request)
    body = {
        "title": "The one map (一张图)",
        "description": "Spatial digital twin of the city: every layer as OGC API Features.",
        "links": [
            {"rel": "self", "href": f"{base}/", "type": "application/json"},
            # 3.0 first: GDAL and QGIS take the service-desc link of that type.
            {"rel": "service-desc", "href": f"{base}/api", "type": openapi30.OPENAPI_30},
            {"rel": "service-desc", "href": f"{base}/api?version=3.1", "type": openapi30.OPENAPI_31},
            {"rel": "service-doc", "href": f"{base}/docs", "type": "text/html"},
            {"rel": "conformance", "href": f"{base}/conformance", "type": "application/json"},
            {"rel": "data", "href": f"{base}/collections", "type": "application/json"},
            {"rel": "http://www.opengis.net/def/rel/ogc/1.0/tiling-schemes", "href": f"{base}/tileMatrixSets", "type": "application/json"},
            {"rel": "http://www.opengis.net/def/rel/ogc/1.0/tilesets-vector", "href": f"{base}/tiles", "type": "application/json"},
        ],
    }  # fmt: skip
    if _wants_html(request, f):
        return HTMLResponse(_page(body["title"], _links_html(body["links"])))
    return body


@router.get("/conformance", dependencies=[Public], summary="Conformance classes (public)")
def conformance(request: Request, f: str | None = None) -> Any:
    """What the API implements."""
    if _wants_html(request, f):
        items = "".join(f"<li>{html.escape(c)}</li>" for c in CONFORMANCE)
        return HTMLResponse(_page("Conformance", f"<ul>{items}</ul>"))
    return {"conformsTo": CONFORMANCE}


@router.get("/api", dependencies=[Public], summary="The OpenAPI definition (public)")
def api_definition(
    request: Request,
    conn: Connection,
    version: Annotated[
        str | None, Query(description="3.0 or 3.1; without it, as Accept asks (3.0 by default)")
    ] = None,
) -> JSONResponse:
    """The API document where OGC clients look for it: OpenAPI 3.0 or 3.1.

    GDAL and QGIS ask for 3.0 and read the page size limits and the filters each collection
    takes from it; /openapi.json is FastAPI's 3.1 document, which `?version=3.1` or an
    Accept naming 3.1 also gets here.
    """
    if version is None:
        version = openapi30.wanted_version(request.headers.get("accept"))
    elif version not in ("3.0", "3.1"):
        raise InvalidInput(f"version {version[:20]!r}: the API document is in OpenAPI 3.0 or 3.1")
    media_type = openapi30.OPENAPI_30 if version == "3.0" else openapi30.OPENAPI_31
    document = openapi30.document(request.app, version)
    if version == "3.0":  # with each collection's own items path, which GDAL reads
        document = openapi30.with_collections(
            document,
            {c.name: c.queryables for c in features.list_collections(catalogue_of(request, conn))},
        )
    return JSONResponse(
        document,
        media_type=media_type,
        headers={"Vary": "Accept"},
    )


def _collection_body(coll: features.Collection, base: str) -> dict[str, Any]:
    href = f"{base}/collections/{coll.name}"
    body: dict[str, Any] = {
        "id": coll.name,
        "title": coll.title,
        "description": coll.description,
        "itemType": "feature",
        "crs": list(features.SUPPORTED_CRS),
        "storageCrs": features.CRS84,
        "links": [
            {"rel": "self", "href": href, "type": "application/json"},
            {"rel": "items", "href": f"{href}/items", "type": GEOJSON},
            {"rel": "items", "href": f"{href}/items?f=html", "type": "text/html"},
            {"rel": "http://www.opengis.net/def/rel/ogc/1.0/queryables", "href": f"{href}/queryables", "type": "application/schema+json"},
            {"rel": "http://www.opengis.net/def/rel/ogc/1.0/tilesets-vector", "href": f"{href}/tiles", "type": "application/json"},
        ],
    }  # fmt: skip
    if coll.bbox:
        body["extent"] = {"spatial": {"bbox": [coll.bbox], "crs": features.CRS84}}
    return body


@router.get("/collections", dependencies=[Public], summary="Every layer as a collection (public)")
def collections(request: Request, conn: Connection, f: str | None = None) -> Any:
    """Built-in layers and scenes, as the catalogue lists them, and the terrain (its
    tiles, no items) when a DEM is loaded."""
    base = base_url(request)
    catalogue = catalogue_of(request, conn)
    body = {
        "links": [{"rel": "self", "href": f"{base}/collections", "type": "application/json"}],
        "collections": [_collection_body(c, base) for c in features.list_collections(catalogue)]
        + terrain.collection_bodies(base, catalogue),
    }
    if _wants_html(request, f):
        rows = "".join(
            f'<li><a href="{html.escape(_html_href(c))}">{html.escape(c["title"])}</a> ({html.escape(c["id"])})</li>'
            for c in body["collections"]
        )
        return HTMLResponse(_page("Collections", f"<ul>{rows}</ul>"))
    return body


def _html_href(collection: dict[str, Any]) -> str:
    """Where a collection's HTML page links: its items, or (the terrain) its own page."""
    for link in collection["links"]:
        if link["type"] == "text/html":
            return str(link["href"])
    return str(collection["links"][0]["href"])


@router.get(
    "/collections/{collection_id}", dependencies=[Public], summary="One collection (public)"
)
def collection(
    request: Request, conn: Connection, collection_id: CollectionId, f: str | None = None
) -> Any:
    """A collection's description and links (the terrain's: its tilesets)."""
    catalogue = catalogue_of(request, conn)
    if collection_id == terrain_tiles.NAME:
        body = terrain.collection_body(base_url(request), catalogue)
    else:
        body = _collection_body(
            features.get_collection(catalogue, collection_id), base_url(request)
        )
    if _wants_html(request, f):
        about = f"<p>{html.escape(body['description'])}</p>"
        return HTMLResponse(_page(body["title"], about + _links_html(body["links"])))
    return body


@router.get(
    "/collections/{collection_id}/queryables", dependencies=[Public], summary="Queryables (public)"
)
def queryables(
    request: Request, conn: Connection, collection_id: CollectionId, f: str | None = None
) -> Any:
    """The properties a filter, sortby or property query may name."""
    coll = features.get_collection(catalogue_of(request, conn), collection_id)
    schema = features.queryables_schema(coll, base_url(request))
    if _wants_html(request, f):
        rows = "".join(
            f"<tr><td>{html.escape(name)}</td><td>{html.escape(str(spec.get('type', 'geometry')))}</td></tr>"
            for name, spec in schema["properties"].items()
        )
        return HTMLResponse(
            _page(
                f"{coll.title}: queryables",
                f"<table><tr><th>name</th><th>type</th></tr>{rows}</table>",
            )
        )
    return JSONResponse(schema, media_type="application/schema+json")


def _bbox(text: str) -> tuple[float, float, float, float]:
    try:
        numbers = [float(v) for v in text.split(",")]
    except ValueError as exc:
        raise InvalidInput(
            f"bbox {text[:80]!r}: four (or six) numbers separated by commas"
        ) from exc
    if len(numbers) == 6:
        numbers = [numbers[0], numbers[1], numbers[3], numbers[4]]
    if len(numbers) != 4:
        raise InvalidInput(f"bbox has {len(numbers)} numbers; it needs four (or six)")
    if not all(math.isfinite(v) for v in numbers):
        raise InvalidInput("bbox: every number must be finite (no NaN or infinity)")
    return numbers[0], numbers[1], numbers[2], numbers[3]


def _instant(text: str) -> datetime | None:
    if text in ("", ".."):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidInput(f"datetime {text[:60]!r} is not RFC 3339") from exc
    if "T" not in text.upper() and " " not in text:
        # A date alone would be read as its midnight and match almost nothing.
        raise InvalidInput(
            f"datetime {text[:60]!r} is a date; give a date-time ({text[:10]}T00:00:00Z) or an"
            f" interval ({text[:10]}T00:00:00Z/{text[:10]}T23:59:59Z)"
        )
    return moment


def _datetime(text: str) -> tuple[datetime | None, datetime | None]:
    if "/" in text:
        start, _, end = text.partition("/")
        return _instant(start), _instant(end)
    moment = _instant(text)
    return moment, moment


def items_query(
    request: Request,
    # Integers in the API description, with a maximum: clients such as GDAL size their
    # pages from it. Above the maximum the limit is clamped, as OGC API Features allows.
    limit: Annotated[
        int,
        Query(
            ge=1,
            description=f"1 to {features.MAX_LIMIT}; more is clamped",
            json_schema_extra={"maximum": features.MAX_LIMIT},
        ),
        Plain,
    ] = features.DEFAULT_LIMIT,
    offset: Annotated[int, Query(ge=0, le=features.MAX_OFFSET), Plain] = 0,
    after: Annotated[
        str | None,
        Query(max_length=100, description="page cursor: the last id of the previous page"),
    ] = None,
    bbox: Annotated[str | None, Query(description="minx,miny,maxx,maxy (in bbox-crs)")] = None,
    bbox_crs: Annotated[str, Query(alias="bbox-crs")] = features.CRS84,
    crs: Annotated[str, Query(description="CRS84, EPSG:4326, 4490, 3857, 4549 or URI")] = (
        features.CRS84
    ),
    properties: Annotated[str | None, Query(description="comma-separated property names")] = None,
    sortby: Annotated[str | None, Query(description="e.g. -height_m,name")] = None,
    datetime_: Annotated[str | None, Query(alias="datetime")] = None,
    filter_: Annotated[str | None, Query(alias="filter", max_length=20_000)] = None,
    filter_lang: Annotated[str, Query(alias="filter-lang")] = "cql2-text",
    filter_crs: Annotated[str, Query(alias="filter-crs")] = features.CRS84,
) -> features.ItemsQuery:
    """The items query parameters, parsed and checked (a dependency of GET and POST)."""
    try:
        readable = features.served_crs(filter_crs, "filter-crs").srid == 4326  # CRS84 or EPSG:4326
    except InvalidInput:
        readable = False
    if not readable:
        raise InvalidInput(
            f"filter-crs {filter_crs[:80]!r}: filters are read in CRS84 (or EPSG:4326) only"
        )
    return features.ItemsQuery(
        limit=min(limit, features.MAX_LIMIT),
        offset=offset,
        bbox=_bbox(bbox) if bbox else None,
        bbox_crs=features.crs_uri(bbox_crs, "bbox-crs"),
        crs=features.crs_uri(crs),
        properties=[p.strip() for p in properties.split(",") if p.strip()] if properties else None,
        sortby=[s.strip() for s in sortby.split(",") if s.strip()] if sortby else [],
        equals={k: v for k, v in request.query_params.items() if k not in RESERVED},
        datetime_range=_datetime(datetime_) if datetime_ else None,
        filter=filter_,
        filter_lang=filter_lang,
        after=after,
    )


ItemsParams = Annotated[features.ItemsQuery, Depends(items_query)]


@router.get(
    "/collections/{collection_id}/items",
    dependencies=[Public, HeavyPage],
    summary="Features (public)",
)
def collection_items(
    request: Request,
    conn: Connection,
    collection_id: CollectionId,
    query: ItemsParams,
    f: str | None = None,
) -> Any:
    """A page of features; other query parameters filter by property equality."""
    return _items_answer(conn, request, collection_id, query, f)


MAX_FILTER_BODY = 1_000_000


@router.post(
    "/collections/{collection_id}/items",
    dependencies=[Public, HeavyPage],
    summary="Features selected by a CQL2-JSON filter in the body (public)",
    openapi_extra={
        "requestBody": {
            "content": {"application/query-cql-json": {"schema": {"type": "object"}},
                        "application/json": {"schema": {"type": "object"}}},
            "description": "a CQL2-JSON filter (as OWSLib's collection_items(cql=...) sends)",
        }
    },
)  # fmt: skip
async def search_items(
    request: Request,
    collection_id: CollectionId,
    query: ItemsParams,
    f: str | None = None,
) -> Any:
    """The same page as GET, for a CQL2-JSON filter sent as the body; the other
    parameters stay in the query."""
    body = await request.body()
    if len(body) > MAX_FILTER_BODY:
        raise TooLarge(f"the filter body is over {MAX_FILTER_BODY:,} bytes; simplify it")
    if query.filter is not None:
        raise InvalidInput("give the filter either as filter= or as the body, not both")
    if body.strip():
        try:
            query.filter = body.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput("the filter body is not UTF-8 text") from None
        query.filter_lang = "cql2-json"
    return await with_connection(request, _items_answer, request, collection_id, query, f)


def _items_answer(
    conn: psycopg.Connection,
    request: Request,
    collection_id: str,
    query: features.ItemsQuery,
    f: str | None,
) -> Any:
    coll = features.get_collection(catalogue_of(request, conn), collection_id)
    page = features.items(conn, coll, query)
    html_wanted = _wants_html(request, f)
    page["links"] = _page_links(request, query, page)
    page["timeStamp"] = datetime.now().astimezone().isoformat(timespec="seconds")
    # The links in the Link header too (RFC 8288): clients that read headers find them.
    headers = {"Content-Crs": f"<{query.crs}>", "Link": _link_header(page["links"])}
    if html_wanted:
        return HTMLResponse(_items_html(coll.title, page), headers=headers)
    return JSONResponse(page, media_type=GEOJSON, headers=headers)


def _page_links(
    request: Request, query: features.ItemsQuery, page: dict[str, Any]
) -> list[dict[str, str]]:
    def at(**params: Any) -> str:
        url = request.url.remove_query_params(["offset", "after", "limit"])
        return str(url.include_query_params(**params, limit=query.limit))

    links = [
        {"rel": "self", "href": str(request.url), "type": GEOJSON},
        {"rel": "alternate", "href": str(request.url.include_query_params(f="html")),
         "type": "text/html"},
    ]  # fmt: skip
    returned = page["features"]
    if query.offset + len(returned) < page["numberMatched"] and returned:
        next_offset = query.offset + query.limit
        if query.sortby:
            links.append({"rel": "next", "href": at(offset=next_offset), "type": GEOJSON})
        else:  # keyset: as fast on the last page as on the first
            after = returned[-1]["id"]
            links.append(
                {"rel": "next", "href": at(offset=next_offset, after=after), "type": GEOJSON}
            )
    if query.offset > 0:
        links.append(
            {"rel": "prev", "href": at(offset=max(query.offset - query.limit, 0)), "type": GEOJSON}
        )
    return links


def _link_header(links: list[dict[str, str]]) -> str:
    return ", ".join(
        f'<{link["href"]}>; rel="{link["rel"]}"; type="{link["type"]}"' for link in links
    )


@router.get(
    "/collections/{collection_id}/items/{feature_id}",
    dependencies=[Public],
    summary="One feature (public)",
)
def collection_item(
    request: Request,
    conn: Connection,
    collection_id: CollectionId,
    feature_id: Annotated[str, Path(max_length=100)],
    crs: str = features.CRS84,
    f: str | None = None,
) -> Any:
    """One feature by id."""
    coll = features.get_collection(catalogue_of(request, conn), collection_id)
    crs = features.crs_uri(crs)
    feature = features.item(conn, coll, feature_id, crs)
    base = base_url(request)
    self_href = f"{base}/collections/{coll.name}/items/{quote(feature_id, safe='')}"
    feature["links"] = [
        {"rel": "self", "href": self_href, "type": GEOJSON},
        {"rel": "alternate", "href": f"{self_href}?f=html", "type": "text/html"},
        {"rel": "collection", "href": f"{base}/collections/{coll.name}", "type": "application/json"},
    ]  # fmt: skip
    headers = {"Content-Crs": f"<{crs}>", "Link": _link_header(feature["links"])}
    if _wants_html(request, f):
        return HTMLResponse(
            _items_html(coll.title, {"features": [feature], "numberMatched": 1, "links": []}),
            headers=headers,
        )
    return JSONResponse(feature, media_type=GEOJSON, headers=headers)


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )


def _links_html(links: list[dict[str, str]]) -> str:
    return (
        "<ul>"
        + "".join(
            f'<li><a href="{html.escape(link["href"])}">{html.escape(link["rel"])}</a></li>'
            for link in links
        )
        + "</ul>"
    )


def _items_html(title: str, page: dict[str, Any]) -> str:
    rows = page["features"]
    names = sorted({k for f in rows for k in f["properties"]} - {"id"})
    head = "".join(f"<th>{html.escape(n)}</th>" for n in ["id", *names])
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{'' if v is None else html.escape(str(v))}</td>"
            for v in [f["id"], *(f["properties"].get(n, "") for n in names)]
        )
        + "</tr>"
        for f in rows
    )
    nav = " ".join(
        f'<a href="{html.escape(link["href"].replace("f=json", "f=html"))}">{html.escape(link["rel"])}</a>'
        for link in page.get("links", [])
        if link["rel"] in ("prev", "next")
    )
    summary = f"<p>{len(rows)} of {page['numberMatched']} features {nav}</p>"
    return _page(title, summary + f"<table><tr>{head}</tr>{body}</table>")
