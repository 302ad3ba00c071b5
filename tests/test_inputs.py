"""Every door that reads a query, a path or a body: what PostgreSQL or GEOS cannot take
is a clear 4xx problem+json naming what is wrong and where, never a 500 (issue 9)."""

from __future__ import annotations

import json

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app

SQUARE = [[121.40, 31.24], [121.41, 31.24], [121.41, 31.25], [121.40, 31.25], [121.40, 31.24]]


def polygon(ring: list[list[object]]) -> dict[str, object]:
    return {"type": "Polygon", "coordinates": [ring]}


@pytest.mark.parametrize(
    ("method", "url", "body", "status", "words"),
    [
        # NUL bytes, in a value, a name, a path segment, a filter literal
        ("GET", "/collections/buildings/items?name=a%00b", None, 400, "query parameter 'name' holds a NUL"),
        ("GET", "/collections/buildings/items?filter=name%3D%27a%00%27", None, 400, "'filter' holds a NUL"),
        ("GET", "/collections/build%00ings/items", None, 400, "the path holds a NUL"),
        ("GET", "/layers/build%00ings", None, 400, "NUL"),
        ("GET", "/nearest?lon=121.4&lat=31.24&layers=pipes%00", None, 400, "NUL"),
        ("POST", "/within", {"geometry": polygon(SQUARE), "layers": "build\u0000ings"}, 400, "body layers: holds a NUL"),
        ("POST", "/within", {"wkt": "POLYGON((0 0,1 0,1 1,0 0))\u0000"}, 400, "body wkt: holds a NUL"),
        # numbers past 64 bits, NaN, infinity
        ("GET", "/collections/buildings/items?offset=99999999999999999999999", None, 400, "offset"),
        ("GET", "/collections/buildings/items?limit=99999999999999999999999", None, 200, ""),
        ("GET", "/collections/buildings/items?floors=99999999999999999999999", None, 200, ""),
        ("GET", "/collections/buildings/items?height_m=nan", None, 400, "height_m"),
        ("GET", "/below?building_id=99999999999999999999999", None, 404, "no building"),
        ("GET", "/within?lon=121.4&lat=31.24&radius=nan", None, 400, "radius: 'nan' is not a finite number"),
        ("GET", "/within?lon=121.4&lat=31.24&radius=inf", None, 400, "not a finite number"),
        ("GET", "/nearest?lon=121.4&lat=31.24&max_distance=nan", None, 400, "max_distance"),
        ("GET", "/locate?lon=nan&lat=31.24", None, 400, "finite"),
        ("GET", "/locate?lon=121.4&lat=1e400", None, 400, "finite"),
        ("GET", "/locate?lon=121.4&lat=" + "9" * 400, None, 400, "finite"),
        ("POST", "/within", {"geometry": polygon([*SQUARE[:2], ["NaN", 31.25], *SQUARE[3:]])}, 400, "area"),
        ("POST", "/below", {"geometry": polygon([*SQUARE[:2], [1e400, 31.25], *SQUARE[3:]])}, 400, "coordinate 2 of ring 0: longitude inf is not a finite number"),
        ("POST", "/within", {"geometry": polygon([[200, 100], [201, 100], [201, 101], [200, 100]])}, 400, "longitude 200 is beyond ±180"),
        ("POST", "/within", {"geometry": polygon([[True, 31.2], [121.4, 31.3], [121.5, 31.3], [True, 31.2]])}, 400, "area"),
        # wrong types, wrong shapes
        ("POST", "/within", {"geometry": "POLYGON((0 0,1 0,1 1,0 0))"}, 400, "geometry"),
        ("POST", "/within", {"geometry": polygon(SQUARE), "limit": "many"}, 400, "limit"),
        ("POST", "/within", [1, 2, 3], 400, "body"),
        ("POST", "/within", {"geometry": {"type": "Point", "coordinates": [121.4, 31.2]}}, 400, "Polygon"),
        # one answer, not a guess
        ("POST", "/within", {"geometry": polygon(SQUARE), "wkt": "POLYGON((0 0,1 0,1 1,0 0))"}, 400, "not both"),
        ("GET", "/collections/buildings/items?use=office&use=residential", None, 400, "more than once"),
        ("GET", "/collections/buildings/items?sortby=geometry", None, 400, "sortby"),
        ("GET", "/collections/buildings/items?sortby=-properties", None, 400, "sortby"),
        ("GET", "/locate?lon=121.4&lat=31.24&crs=4549", None, 400, "degrees"),
        ("GET", "/collections/buildings/items?crs=EPSG:9999", None, 400, "EPSG:4490"),
        ("GET", "/collections/buildings/items?f=xml", None, 400, "json"),
        # the framework's own answers, in our words and as problems
        ("DELETE", "/collections", None, 405, "DELETE is not allowed on /collections"),
        ("GET", "/no/such/thing", None, 404, "nothing at /no/such/thing"),
        ("POST", "/within", "[" * 50_000 + "]" * 50_000, 400, "body"),
        ("POST", "/within", "{not json", 400, "JSON"),
    ],
)  # fmt: skip
def test_bad_input_is_a_clear_problem(
    client: TestClient, method: str, url: str, body: object, status: int, words: str
):
    content = body if isinstance(body, str) else None if body is None else json.dumps(body)
    answer = client.request(
        method, url, content=content, headers={"content-type": "application/json"}
    )
    assert answer.status_code == status, answer.text
    if status >= 400:
        assert answer.headers["content-type"].startswith("application/problem+json")
        problem = answer.json()
        assert problem["status"] == status
        assert words in problem["detail"], problem["detail"]
        for internal in ("psycopg", "SELECT", "IllegalArgument", "GEOS", "Traceback", "lark"):
            assert internal not in answer.text


def test_405_says_which_methods_are_allowed(client: TestClient):
    answer = client.put("/locate?lon=121.4&lat=31.24")
    assert answer.status_code == 405
    assert answer.headers["allow"] == "GET"


@pytest.mark.parametrize(
    ("method", "url", "body", "words"),
    [
        # an area's coordinates: named, in our words, before GEOS or numpy see them
        ("POST", "/within", {"geometry": polygon([["NaN", 31.24], *SQUARE[1:4], ["NaN", 31.24]])}, "coordinate 0 of ring 0"),
        ("POST", "/within", {"geometry": polygon([[float("nan"), 31.24], *SQUARE[1:4], [float("nan"), 31.24]])}, "coordinate 0 of ring 0: longitude NaN is not a finite number"),
        ("POST", "/within", {"geometry": polygon([[None, 31.24], *SQUARE[1:]])}, "null, not a number"),
        ("POST", "/within", {"geometry": polygon([[1, 2, 3, 4, 5], *SQUARE[1:]])}, "2 or 3 numbers"),
        ("POST", "/within", {"geometry": polygon([["121.40", "31.24"], *SQUARE[1:]])}, "text, not a number"),
        ("POST", "/within", {"geometry": polygon(SQUARE[:4])}, "not closed"),
        ("POST", "/below", {"geometry": {"type": "Poly\u0000gon", "coordinates": [SQUARE]}}, "not a GeoJSON geometry type"),
        ("POST", "/within", {"wkt": "POLYGON((NaN 31.24, 121.41 31.24, 121.41 31.25, NaN 31.24))"}, "ring does not end where it starts"),
        ("POST", "/within", {"wkt": "POLYGON((121.4 31.24, 121.41"}, "ends too soon"),
        ("POST", "/within", {"wkt": "POLYGON((0 0,1 0,1 1,0 0))\u0000"}, "NUL"),
        ("POST", "/within", {"geometry": polygon(SQUARE), "crs": "EPSG:4549"}, "body crs is not a field"),
        ("POST", "/within", {"geometry": polygon(SQUARE), "limit": "5"}, "body limit must be a whole number, not text"),
        ("POST", "/within", {"geometry": polygon(SQUARE), "limit": True}, "whole number"),
        ("POST", "/within", {"geometry": polygon(SQUARE), "limit": 2.5}, "whole number"),
        ("POST", "/within", {"geometry": polygon([[121.40, 31.24], [121.41, 31.25], [121.41, 31.24], [121.40, 31.25], [121.40, 31.24]])}, "its boundary crosses itself at 121.405, 31.245"),
        ("GET", "/collections/buildings/items?filter-crs=EPSG:1", None, "filters are read in CRS84"),
        ("POST", "/within", [1, 2], "JSON object"),
        ("POST", "/within", {"geometry": "POLYGON((0 0,1 0,1 1,0 0))"}, "body geometry must be a JSON object, not text"),
        # parameters: typos, empty lists and Python's number syntax are not guessed at
        ("GET", "/nearest?lon=121.4&lat=31.24&layerz=pipes", None, "unknown query parameter 'layerz'"),
        ("GET", "/locate?lon=121.4&lat=31.24&foo=1", None, "unknown query parameter 'foo'"),
        ("GET", "/nearest?lon=121.4&lat=31.24&layers=", None, "name at least one layer"),
        ("GET", "/locate?lon=1_0&lat=31.24", None, "'1_0' is not a number"),
        ("GET", "/nearest?lon=121.4&lat=31.24&k=1_0", None, "'1_0' is not a number"),
        ("GET", "/collections/buildings/items?limit=1_0", None, "'1_0' is not a number"),
    ],
)  # fmt: skip
def test_what_is_not_as_the_standard_has_it_is_refused_by_name(
    client: TestClient, method: str, url: str, body: object, words: str
):
    content = None if body is None else json.dumps(body)
    answer = client.request(
        method, url, content=content, headers={"content-type": "application/json"}
    )
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    detail = answer.json()["detail"]
    assert words in detail, detail
    for internal in (
        "IllegalArgument",
        "ParseException",
        "inhomogeneous",
        "float()",
        "Input should",
    ):
        assert internal not in detail


def test_head_answers_as_get_without_a_body(client: TestClient):
    for url in ("/", "/collections/buildings/items?limit=2", "/locate?lon=121.4&lat=31.24"):
        got = client.get(url)
        head = client.head(url)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-type"] == got.headers["content-type"]
    assert client.head("/collections/nothing/items").status_code == 404


def test_sortby_puts_features_without_the_value_last(settings, fresh_url: str):
    with psycopg.connect(fresh_url) as conn:  # an unmeasured building
        conn.execute(
            "INSERT INTO buildings (dataset, source_id, geom, height_m)"
            " SELECT 'survey', 'unmeasured', geom, NULL FROM buildings LIMIT 1"
        )
        expected = [r[0] for r in conn.execute(
            "SELECT height_m FROM buildings ORDER BY height_m DESC NULLS LAST LIMIT 3")]  # fmt: skip
    with TestClient(create_app(settings, database_url=fresh_url)) as client:
        tallest = client.get("/collections/buildings/items?sortby=-height_m&limit=3").json()
        lowest = client.get("/collections/buildings/items?sortby=height_m&limit=1").json()
    assert [f["properties"]["height_m"] for f in tallest["features"]] == expected
    assert lowest["features"][0]["properties"]["height_m"] is not None


def test_a_date_alone_is_refused_with_the_forms_that_work(client: TestClient):
    answer = client.get("/collections/buildings/items?datetime=2026-12-01")
    assert answer.status_code == 400
    assert "2026-12-01T00:00:00Z/2026-12-01T23:59:59Z" in answer.json()["detail"]


def test_a_json_body_over_the_limit_is_refused_unread_on_every_route(
    client: TestClient, monkeypatch
):
    monkeypatch.setattr("api.errors.MAX_BODY_MB", 1)
    body = json.dumps({"wkt": "POLYGON((0 0,1 0,1 1,0 0))", "layers": "x" * 2_000_000})
    for url in ("/within", "/below"):
        answer = client.post(url, content=body, headers={"content-type": "application/json"})
        assert answer.status_code == 413, answer.text
        assert "larger than 1 MB" in answer.json()["detail"]


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_areas_with_nan_asked_at_once_are_each_refused_by_name(settings, demo_url: str):
    # Parsing an area with NaN makes numpy warn; it is silenced for the request's thread
    # alone. Silenced through the process's warnings filters instead, requests at once
    # undo each other's silencing: the warning (an error here) escapes as a 500.
    from concurrent.futures import ThreadPoolExecutor

    import httpx2 as httpx

    from tests.helpers import serve_app

    wkt = {"wkt": "POLYGON((121.40 31.24, NaN 31.24, 121.41 31.25, 121.40 31.24))"}
    geojson = {"geometry": polygon([SQUARE[0], [float("nan"), 31.24], *SQUARE[2:]])}

    def ask(base: str) -> list[tuple[int, str]]:
        with httpx.Client(base_url=base, timeout=60) as http:
            answers = []
            for _ in range(40):
                for body in (wkt, geojson):
                    answer = http.post("/within", content=json.dumps(body),
                                       headers={"content-type": "application/json"})  # fmt: skip
                    answers.append((answer.status_code, answer.json().get("detail", "")))
            return answers

    with (
        serve_app(create_app(settings, database_url=demo_url)) as base,
        ThreadPoolExecutor(8) as pool,
    ):
        answers = [a for part in pool.map(ask, [base] * 8) for a in part]
    assert {status for status, _ in answers} == {400}, [a for a in answers if a[0] != 400][:3]
    assert all("NaN" in detail or "finite" in detail for _, detail in answers), answers[:2]
