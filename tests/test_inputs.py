"""Every door that reads a query, a path or a body: what PostgreSQL or GEOS cannot take
is a clear 4xx problem+json naming what is wrong and where, never a 500 (issue 9)."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

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
        ("POST", "/within", {"geometry": polygon(SQUARE), "layers": "build\u0000ings"}, 400, "unknown layer"),
        ("POST", "/within", {"wkt": "POLYGON((0 0,1 0,1 1,0 0))\u0000"}, 400, "area"),
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
        ("POST", "/below", {"geometry": polygon([*SQUARE[:2], [1e400, 31.25], *SQUARE[3:]])}, 400, "finite numbers"),
        ("POST", "/within", {"geometry": polygon([[200, 100], [201, 100], [201, 101], [200, 100]])}, 400, "longitude/latitude"),
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
