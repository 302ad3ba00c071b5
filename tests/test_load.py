"""Heavy public reads must not lock dispatch out: a real server under concurrent load.

The server is uvicorn on a free loopback port, in a thread of the test, with the heavy
limits and the pools set small so that a few seconds of load fill them.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import psycopg
import pytest
import shapely
import shapely.geometry

from api.app import create_app
from tests.helpers import serve_app, settings_for

KEY = {"X-API-Key": "dispatch-key"}
HEAVY_CLIENTS = 12
LOAD_S = 3.0


@pytest.fixture
def server(cluster_dir: Path, fresh_url: str) -> Iterator[str]:
    """The real app served by uvicorn; the URL to call it at."""
    settings = settings_for(
        cluster_dir,
        # So small that, before route classes, 12 area questions left /locate waiting for
        # a connection until it was refused with 503 "pool timed out".
        database={"pool_max_size": 2, "pool_timeout_s": 1.0, "operational_pool_size": 2},
        api={
            "api_keys": {"dispatch-key": "城运中心"},
            "heavy_concurrency": 1,
            "heavy_queue_s": 0.1,
        },
    )
    with serve_app(create_app(settings, database_url=fresh_url)) as base:
        yield base


def _district(url: str) -> Any:
    with psycopg.connect(url) as conn:
        text = conn.execute(
            "SELECT ST_AsGeoJSON(ST_Union(geom)) FROM jurisdictions WHERE level = 'district'"
        ).fetchone()[0]
    return shapely.geometry.shape(json.loads(text))


def test_dispatch_and_staff_are_answered_while_heavy_public_reads_fill_the_server(
    server: str, fresh_url: str
):
    district = _district(fresh_url)
    whole_district = {"geometry": shapely.geometry.mapping(district), "limit": 5000}
    west, south, east, north = district.bounds
    rng = random.Random(3)
    answers: dict[str, list[httpx.Response]] = {"heavy": [], "locate": [], "other": []}
    lock = threading.Lock()
    stop = threading.Event()
    start = threading.Barrier(HEAVY_CLIENTS + 2)

    def keep(kind: str, answer: httpx.Response) -> None:
        with lock:
            answers[kind].append(answer)

    def heavy() -> None:
        with httpx.Client(base_url=server, timeout=60) as client:
            start.wait()
            while not stop.is_set():
                keep("heavy", client.post("/within", json=whole_district))
                # A client that does not wait as Retry-After says: the gate must hold anyway.
                keep("heavy", client.get("/collections/buildings/items", params={"limit": 5000}))

    def dispatch() -> None:
        with httpx.Client(base_url=server, timeout=60) as client:
            start.wait()
            while not stop.is_set():
                lon, lat = rng.uniform(west, east), rng.uniform(south, north)
                keep("locate", client.get("/locate", params={"lon": lon, "lat": lat}))
                keep("other", client.get("/nearest", params={"lon": lon, "lat": lat, "k": 3}))
                keep("other", client.get("/health"))
                keep("other", client.get("/collections/buildings/items", params={"limit": 50}))
                time.sleep(0.05)

    threads = [threading.Thread(target=heavy) for _ in range(HEAVY_CLIENTS)]
    threads.append(threading.Thread(target=dispatch))
    for thread in threads:
        thread.start()
    start.wait()
    # Staff register a scene in the middle of it: a staff route, so operational.
    with httpx.Client(base_url=server, timeout=60) as client:
        time.sleep(LOAD_S / 2)
        scene = client.post(
            "/scenes", headers=KEY, json={"name": "flood_reports", "geometry_type": "Point"}
        )
        time.sleep(LOAD_S / 2)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)

    assert scene.status_code == 201, scene.text
    assert len(answers["locate"]) >= 5  # dispatch kept being answered while heavy reads ran
    assert [a.status_code for a in answers["locate"]] == [200] * len(answers["locate"])
    assert {a.status_code for a in answers["other"]} == {200}
    heavy_statuses = {a.status_code for a in answers["heavy"]}
    assert 200 in heavy_statuses and heavy_statuses <= {200, 503}
    refused = [a for a in answers["heavy"] if a.status_code == 503]
    assert refused, "12 clients through a gate of one: some must have been turned away"
    for answer in refused:
        assert int(answer.headers["Retry-After"]) >= 1
        assert answer.headers["content-type"].startswith("application/problem+json")
        problem = answer.json()
        assert problem["status"] == 503
        assert "retry after" in problem["detail"]
    served = [a.json() for a in answers["heavy"] if a.status_code == 200 and "counts" in a.json()]
    assert served and served[0]["counts"]["buildings"] > 0
