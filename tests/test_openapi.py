"""The API document in OpenAPI 3.0 for OGC clients (GDAL 3.6, QGIS 3.22), beside FastAPI's 3.1.

Through the real app, and through the real GDAL: it reads /api without "Unexpected
Content-Type" and sends `-where` filters to the server instead of reading every page.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess

import psycopg
import pytest
from fastapi.testclient import TestClient
from openapi_spec_validator import OpenAPIV30SpecValidator, OpenAPIV31SpecValidator

from api.openapi30 import to_openapi30, wanted_version
from tests.test_ogc import live_url  # noqa: F401  (the app served over HTTP, reused)
from twin.features import DEFAULT_LIMIT, MAX_LIMIT

GDAL_ACCEPT = (
    "application/vnd.oai.openapi+json;version=3.0, application/openapi+json;version=3.0,"
    " application/json"
)  # what GDAL 3.6 and QGIS 3.22 send for the API document


def _errors_30(document: dict) -> list[str]:
    return [e.message[:300] for e in OpenAPIV30SpecValidator(document).iter_errors()]


def _limit(operation: dict, document: dict) -> dict:
    for parameter in operation["parameters"]:
        if "$ref" in parameter:
            parameter = document["components"]["parameters"][parameter["$ref"].split("/")[-1]]
        if parameter["name"] == "limit":
            return parameter["schema"]
    raise AssertionError("no limit parameter")


# -- the converter -----------------------------------------------------------------------------


def test_fastapis_document_converts_to_a_valid_openapi_30(client: TestClient):
    source = client.app.openapi()
    assert _errors_30({**source, "openapi": "3.0.3"})  # as 3.1 is, 3.0 readers refuse it
    converted = to_openapi30(source)
    assert converted["openapi"] == "3.0.3"
    assert _errors_30(converted) == []
    assert source["openapi"].startswith("3.1")  # the app's own document is left as it was


def test_the_tile_operations_are_named_as_ogc_api_tiles_names_them(client: TestClient):
    # OGC API - Tiles' operation ids (its OpenAPI building blocks; OGC's test suite looks
    # for a ".getTile" among them), unique through the whole document.
    document = client.get(
        "/api", headers={"Accept": "application/vnd.oai.openapi+json;version=3.0"}
    ).json()
    ids = [op["operationId"] for path in document["paths"].values() for op in path.values()
           if isinstance(op, dict) and "operationId" in op]  # fmt: skip
    assert len(ids) == len(set(ids))
    paths = document["paths"]
    assert paths["/tiles/{tms}/{z}/{y}/{x}"]["get"]["operationId"] == "dataset.vector.getTile"
    assert (paths["/collections/{collection_id}/tiles/{tms}/{z}/{y}/{x}"]["get"]["operationId"]
            == "collection.vector.getTile")  # fmt: skip
    assert paths["/tileMatrixSets/{tms}"]["get"]["operationId"] == "getTileMatrixSet"
    assert {"dataset.vector.getTileSetsList", "collection.vector.getTileSet",
            "collection.map.getTile", "collection.coverage.getTile"} <= set(ids)  # fmt: skip


def _converted_schema(schema: dict) -> dict:
    document = {
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1", "summary": "3.1 only"},
        "paths": {},
        "components": {"schemas": {"S": schema, "Other": {"type": "object"}}},
    }
    converted = to_openapi30(document)
    assert _errors_30(converted) == [], converted
    assert "summary" not in converted["info"]
    return converted["components"]["schemas"]["S"]


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        (
            {"anyOf": [{"type": "string", "maxLength": 5}, {"type": "null"}], "title": "T"},
            {"type": "string", "maxLength": 5, "nullable": True, "title": "T"},
        ),
        ({"type": ["integer", "null"]}, {"type": "integer", "nullable": True}),
        ({"const": "Point"}, {"enum": ["Point"]}),
        (
            {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 9},
            {
                "type": "number",
                "minimum": 0,
                "exclusiveMinimum": True,
                "maximum": 9,
                "exclusiveMaximum": True,
            },
        ),
        ({"type": "string", "examples": ["a", "b"]}, {"type": "string", "example": "a"}),
        (
            {"type": "string", "contentMediaType": "application/octet-stream"},
            {"type": "string", "format": "binary"},
        ),
        (
            {"$ref": "#/components/schemas/Other", "description": "d"},
            {"allOf": [{"$ref": "#/components/schemas/Other"}], "description": "d"},
        ),
        (
            {"anyOf": [{"$ref": "#/components/schemas/Other"}, {"type": "null"}]},
            {"allOf": [{"$ref": "#/components/schemas/Other"}], "nullable": True},
        ),
        (
            {
                "type": "object",
                "properties": {"n": {"anyOf": [{"type": "number"}, {"type": "null"}]}},
                "additionalProperties": {"type": "array", "items": {"const": 1}},
            },
            {
                "type": "object",
                "properties": {"n": {"type": "number", "nullable": True}},
                "additionalProperties": {"type": "array", "items": {"enum": [1]}},
            },
        ),
    ],
)
def test_what_31_added_is_said_in_30s_terms(schema: dict, expected: dict):
    assert _converted_schema(schema) == expected


@pytest.mark.parametrize(
    ("accept", "version"),
    [
        (GDAL_ACCEPT, "3.0"),
        ("application/vnd.oai.openapi+json;version=3.1", "3.1"),
        ("application/vnd.oai.openapi+json; version=3.1, application/json", "3.1"),
        ("application/vnd.oai.openapi+json;version=3.0;q=0, application/vnd.oai.openapi+json;version=3.1", "3.1"),
        ("application/json", "3.0"),
        ("*/*", "3.0"),
        (None, "3.0"),
    ],
)  # fmt: skip
def test_the_version_asked_for(accept: str | None, version: str):
    assert wanted_version(accept) == version


# -- /api through the app ----------------------------------------------------------------------


def test_gdals_accept_gets_30_with_the_page_size_limits(client: TestClient):
    answer = client.get("/api", headers={"Accept": GDAL_ACCEPT})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/vnd.oai.openapi+json;version=3.0"
    document = answer.json()
    assert document["openapi"].startswith("3.0")
    assert _errors_30(document) == []
    # GDAL reads the collection's own items path; QGIS reads components/parameters/limit.
    for path in ("/collections/{collection_id}/items", "/collections/buildings/items"):
        limit = _limit(document["paths"][path]["get"], document)
        assert (limit["maximum"], limit["default"]) == (MAX_LIMIT, DEFAULT_LIMIT), path
    qgis = document["components"]["parameters"]["limit"]["schema"]
    assert (qgis["maximum"], qgis["default"]) == (MAX_LIMIT, DEFAULT_LIMIT)


def test_each_collection_path_names_its_filters(client: TestClient):
    document = client.get("/api", headers={"Accept": GDAL_ACCEPT}).json()
    collections = {
        c["id"]
        for c in client.get("/collections").json()["collections"]
        if c.get("itemType") == "feature"  # the terrain is a coverage: tiles, no items
    }
    assert {p.split("/")[2] for p in document["paths"] if p.count("/") == 3} >= collections
    parameters = {
        p["name"]: p for p in document["paths"]["/collections/buildings/items"]["get"]["parameters"]
    }
    assert "cql-text" in parameters["filter-lang"]["schema"]["enum"]
    assert parameters["height_m"]["schema"]["type"] == "number"
    assert "collection_id" not in parameters
    # What the document promises, the route does: an equality filter and a cql-text filter.
    page = client.get("/collections/buildings/items", params={"use": "office", "limit": 3})
    assert page.status_code == 200
    assert {f["properties"]["use"] for f in page.json()["features"]} == {"office"}
    cql = client.get(
        "/collections/buildings/items",
        params={"filter": "height_m > 60", "filter-lang": "cql-text"},
    )
    assert cql.status_code == 200
    assert all(f["properties"]["height_m"] > 60 for f in cql.json()["features"])


def test_31_when_asked_for_and_a_clear_400_for_other_versions(client: TestClient):
    for answer in (
        client.get("/api", headers={"Accept": "application/vnd.oai.openapi+json;version=3.1"}),
        client.get("/api?version=3.1"),
    ):
        assert answer.headers["content-type"] == "application/vnd.oai.openapi+json;version=3.1"
        document = answer.json()
        assert document["openapi"].startswith("3.1")
        assert list(OpenAPIV31SpecValidator(document).iter_errors()) == []
    plain = client.get("/api")
    assert plain.json()["openapi"].startswith("3.0")
    wrong = client.get("/api?version=2.0")
    assert wrong.status_code == 400
    assert wrong.headers["content-type"].startswith("application/problem+json")
    assert "3.0 or 3.1" in wrong.json()["detail"]


def test_the_landing_page_links_both_documents_30_first(client: TestClient):
    links = [link for link in client.get("/").json()["links"] if link["rel"] == "service-desc"]
    assert [link["type"] for link in links] == [
        "application/vnd.oai.openapi+json;version=3.0",
        "application/vnd.oai.openapi+json;version=3.1",
    ]
    for link in links:
        href = link["href"].removeprefix("http://testserver")
        assert client.get(href).headers["content-type"] == link["type"]


# -- the real GDAL -----------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("ogr2ogr") is None, reason="gdal-bin is not installed")
def test_gdal_reads_the_api_and_filters_on_the_server(
    live_url: str,  # noqa: F811
    conn: psycopg.Connection,
    tmp_path,
):
    total, tall = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE height_m > 60) FROM buildings"
    ).fetchone()
    assert 0 < tall < total / 10  # a filter that keeps few buildings
    out = tmp_path / "tall.geojson"
    done = subprocess.run(
        ["ogr2ogr", "-f", "GeoJSON", str(out), f"OAPIF:{live_url}/", "buildings",
         "-where", "height_m > 60"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "CPL_DEBUG": "ON"},  # GDAL then logs each URL it fetches
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Unexpected Content-Type" not in done.stderr
    assert len(json.loads(out.read_text())["features"]) == tall
    fetched = re.findall(r"HTTP: Fetch\((\S+?)\)", done.stderr)
    assert any(url.rstrip("/").endswith("/api") for url in fetched), fetched[:10]
    pages = [url for url in fetched if "/collections/buildings/items" in url]
    # The filter went to the server: a page of 10 per 10 tall buildings (and GDAL's first
    # look at the layer), where reading every building would take total / 10 pages.
    filtered = [url for url in pages if "filter=" in url]
    assert filtered and all("height_m" in url for url in filtered)
    assert len(pages) <= math.ceil(tall / 10) + 2 < math.ceil(total / 10)
