"""The HTTP API through the real app on the real data base."""

from __future__ import annotations

import psycopg
from fastapi.testclient import TestClient

from api.app import create_app
from tests.helpers import make_data_dir, settings_for
from twin import db


def test_health_is_ok_with_postgis_and_current_schema(client: TestClient):
    answer = client.get("/health")
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "ok"
    assert body["postgis"].startswith("3.")
    assert body["schema_revision"] == db.head_revision()


def test_health_says_unavailable_when_the_data_base_is_gone():
    settings = settings_for(make_data_dir("twin-gone-"), database={"pool_timeout_s": 1})
    app = create_app(settings, database_url="postgresql://twin:x@127.0.0.1:1/twin")
    with TestClient(app) as gone:
        answer = gone.get("/health")
    assert answer.status_code == 503
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert "not answering" in answer.json()["detail"]


def test_layer_catalogue_lists_every_layer_with_true_counts(
    client: TestClient, conn: psycopg.Connection
):
    answer = client.get("/layers")
    assert answer.status_code == 200
    layers = {layer["name"]: layer for layer in answer.json()["layers"]}
    assert set(layers) >= {
        "buildings", "public_spaces", "pipes", "pipe_nodes", "sensors", "jurisdictions", "units",
    }  # fmt: skip
    buildings = conn.execute("SELECT count(*) FROM buildings").fetchone()[0]
    assert layers["buildings"]["feature_count"] == buildings > 0
    assert layers["buildings"]["geometry_type"] == "MultiPolygon"
    assert layers["pipes"]["geometry_type"] == "LineString"
    assert layers["buildings"]["provider"].startswith("twin demo")
    west, south, east, north = layers["buildings"]["bbox"]
    assert 121.2 < west < east < 121.7 and 31.0 < south < north < 31.5


def test_one_layer_carries_its_property_schema(client: TestClient):
    answer = client.get("/layers/buildings")
    assert answer.status_code == 200
    schema = answer.json()["property_schema"]["properties"]
    assert schema["height_m"]["type"] == "number"
    assert schema["floors"]["type"] == "integer"
    assert "geom" not in schema


def test_unknown_layer_is_a_404_problem(client: TestClient):
    answer = client.get("/layers/no_such_layer")
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert "no_such_layer" in answer.json()["detail"]


def test_openapi_documents_the_routes(client: TestClient):
    spec = client.get("/openapi.json").json()
    assert {"/health", "/layers", "/layers/{name}"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200


def test_api_docs_work_without_internet(client: TestClient):
    page = client.get("/docs")
    assert page.status_code == 200
    assert "cdn.jsdelivr" not in page.text and "unpkg.com" not in page.text
    script = next(part.split('"')[1] for part in page.text.split("src=")[1:] if "swagger" in part)
    assert client.get(script).status_code == 200
