"""The tile cache: a change drops the cached tiles under it (every zoom, the buffer, the
composites that hold its layer) and no others, in every process, and a render that raced
a change never leaves a stale tile."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx2 as httpx
import mapbox_vector_tile
import morecantile
import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql

from api.app import create_app
from bench.timing import free_port
from tests.helpers import make_data_dir, run_twin, serve_app, settings_for
from tiles import cache, matrix, vector
from tiles.cache import TileCache
from twin import changes, registry
from twin.settings import TileCacheSettings

KEY = {"X-API-Key": "test-key"}
TMS = "WebMercatorQuad"
ZOOMS = range(10, 17)
# The small demo city is some 2 km wide: buildings at its two ends.
WEST = "ST_X(ST_PointOnSurface(geom)) < 121.392"
EAST = "ST_X(ST_PointOnSurface(geom)) > 121.407"


def _settings(memory_mb: int = 64, shared_mb: int = 256) -> TileCacheSettings:
    return TileCacheSettings(_env_file=None, tile_memory_mb=memory_mb, tile_cache_mb=shared_mb)  # type: ignore[call-arg]


@pytest.fixture
def staff(fresh_url: str) -> Iterator[TestClient]:
    settings = settings_for(make_data_dir("twin-tiles-"), api={"api_keys": {"test-key": "t"}})
    with TestClient(create_app(settings, database_url=fresh_url)) as client:
        yield client


@pytest.fixture
def tile_cache(fresh_url: str) -> Iterator[TileCache]:
    """A cache hearing the change log of the fresh copy, as an API process's is."""
    kept = TileCache(_settings())
    kept.listen(fresh_url)
    assert kept.wait_listening()
    yield kept
    kept.close()


def _building(url: str, where: str = "TRUE") -> dict:
    """The first demo building ``where`` says, as GeoJSON, and a point on it."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT source_id, ST_AsGeoJSON(geom)::json, name, use, height_m, floors,"
            " ST_X(ST_PointOnSurface(geom)), ST_Y(ST_PointOnSurface(geom))"
            f" FROM buildings WHERE dataset = 'demo' AND {where} ORDER BY id LIMIT 1"
        ).fetchone()
    assert row is not None
    source_id, geometry, name, use, height, floors, lon, lat = row
    return {"type": "Feature", "id": source_id, "geometry": geometry,
            "properties": {"name": name, "use": use, "height_m": height, "floors": floors},
            "lon": lon, "lat": lat}  # fmt: skip


def _edit_height(client: TestClient, building: dict, height: float) -> None:
    """A real edit: the building's dataset imported again, with a new height."""
    feature = {k: building[k] for k in ("type", "id", "geometry")}
    feature["properties"] = {**building["properties"], "height_m": height}
    done = client.post("/layers/buildings/features", params={"dataset": "demo"}, headers=KEY,
                       json={"type": "FeatureCollection", "features": [feature]})  # fmt: skip
    assert done.status_code == 200, done.text
    assert done.json()["updated"] == 1


def _tiles_over(lon: float, lat: float) -> list[matrix.Tile]:
    return [next(matrix.tiles_under(TMS, (lon, lat, lon, lat), range(z, z + 1))) for z in ZOOMS]


def _heights(data: bytes, source_layer: str = "buildings") -> list[float]:
    decoded = mapbox_vector_tile.decode(data)
    return sorted(f["properties"].get("height_m") for f in decoded[source_layer]["features"])


def _through(kept: TileCache, url: str, layers: Sequence[str] | None, tile: matrix.Tile):
    with psycopg.connect(url, autocommit=True) as conn:
        catalogue = registry.load(conn)
        return kept.tile(conn, catalogue, TMS, layers, tile)


def _wait(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    done = threading.Event()
    for _ in range(int(seconds / 0.01)):
        if condition():
            return True
        done.wait(0.01)
    return condition()


def test_an_edit_drops_its_tiles_at_every_zoom_and_no_others(
    staff: TestClient, fresh_url: str, tile_cache: TileCache
):
    building = _building(fresh_url, WEST)
    near = _tiles_over(building["lon"], building["lat"])
    far_building = _building(fresh_url, EAST)
    far = _tiles_over(far_building["lon"], far_building["lat"])[-1]  # z16, ~1.5 km away
    first = {t: _through(tile_cache, fresh_url, ["buildings"], t) for t in [*near, far]}
    assert {c.source for c in first.values()} == {"rendered"}
    assert all(_through(tile_cache, fresh_url, ["buildings"], t).source == "memory" for t in first)

    _edit_height(staff, building, 321.5)
    # Heard within moments of the commit: the tiles under the building are gone from memory.
    assert _wait(
        lambda: tile_cache.from_memory(cache.key_for(TMS, ["buildings"], near[-1])) is None
    )
    for tile in near:
        again = _through(tile_cache, fresh_url, ["buildings"], tile)
        assert again.source == "rendered", tile
        assert again.etag != first[tile].etag, tile  # merged blocks below z13: their mean
        if tile.z >= 15:  # every building as it is
            assert 321.5 in _heights(again.data) and 321.5 not in _heights(first[tile].data)
    kept = _through(tile_cache, fresh_url, ["buildings"], far)
    assert kept.source == "memory" and kept.etag == first[far].etag


def _set_height(conn: psycopg.Connection, source_id: str, height: float) -> None:
    """An edit as the writers make one: the rows, then the change log, in one transaction
    (the caller's)."""
    where = sql.SQL("SELECT geom FROM buildings WHERE dataset = 'demo' AND source_id = %s")
    box = changes.box_of(conn, where, (source_id,))
    conn.execute(
        "UPDATE buildings SET height_m = %s WHERE dataset = 'demo' AND source_id = %s",
        (height, source_id),
    )
    changes.record(conn, "buildings", "edit", box=box, features=1, table="buildings")


def test_a_change_committed_during_a_render_never_leaves_a_stale_tile(fresh_url: str):
    building = _building(fresh_url, WEST)
    tile = _tiles_over(building["lon"], building["lat"])[-1]
    raced = threading.Event()

    def racing_execute(*args, **kwargs):
        row = vector.run(*args, **kwargs)
        # Made (and stored) from a snapshot before the change, which commits now, on
        # another connection, before the tile is kept in memory.
        if not raced.is_set():
            raced.set()
            with psycopg.connect(fresh_url) as writer:
                _set_height(writer, building["id"], 654.25)
        return row

    process = TileCache(_settings())
    process.execute = racing_execute
    process.listen(fresh_url)
    assert process.wait_listening()
    try:
        stale = _through(process, fresh_url, ["buildings"], tile)
        assert stale.source == "rendered" and 654.25 not in _heights(stale.data)
        process.flush()
        # Not kept in memory, not stored as current: the next answer is rendered afresh.
        again = _through(process, fresh_url, ["buildings"], tile)
        assert again.source == "rendered" and 654.25 in _heights(again.data)
        assert _through(process, fresh_url, ["buildings"], tile).source == "memory"
    finally:
        process.close()


def test_a_tile_stored_while_a_change_was_in_flight_is_refused_once_it_commits(fresh_url: str):
    # The change is written, not yet committed, when another process renders and stores
    # the tile: its store's own check cannot see the change, and the change's drop may
    # run before the store lands. Reading checks the change log: the tile is refused.
    building = _building(fresh_url, WEST)
    tile = _tiles_over(building["lon"], building["lat"])[-1]
    storing = TileCache(_settings(memory_mb=0))  # stores as it renders
    reading = TileCache(_settings(memory_mb=0))  # another process
    with psycopg.connect(fresh_url) as writer:
        _set_height(writer, building["id"], 777.0)
        old = _through(storing, fresh_url, ["buildings"], tile)
        assert old.source == "rendered" and 777.0 not in _heights(old.data)
        assert _through(reading, fresh_url, ["buildings"], tile).source == "shared"
        writer.commit()
    fresh = _through(reading, fresh_url, ["buildings"], tile)
    assert fresh.source == "rendered" and 777.0 in _heights(fresh.data)
    assert _through(storing, fresh_url, ["buildings"], tile).etag == fresh.etag


def test_a_new_incident_drops_the_incident_and_composite_tiles_under_it(
    staff: TestClient, fresh_url: str, tile_cache: TileCache
):
    building = _building(fresh_url, WEST)
    tile = _tiles_over(building["lon"], building["lat"])[-1]
    far = _tiles_over(*_point(_building(fresh_url, EAST)))[-1]
    for layers in (["incidents"], ["buildings"], ["buildings", "incidents"], None):
        for at in (tile, far):
            _through(tile_cache, fresh_url, layers, at)
    sent = staff.post("/incidents", headers=KEY, json={
        "category": "SJ0401", "channel": "hotline_12345",
        "location": {"lon": building["lon"], "lat": building["lat"]}})  # fmt: skip
    assert sent.status_code == 201, sent.text
    assert _wait(lambda: tile_cache.from_memory(cache.key_for(TMS, ["incidents"], tile)) is None)
    for layers in (["incidents"], ["buildings", "incidents"], None):
        again = _through(tile_cache, fresh_url, layers, tile)
        assert again.source == "rendered", layers
        assert len(mapbox_vector_tile.decode(again.data)["incidents"]["features"]) == 1
        assert _through(tile_cache, fresh_url, layers, far).source == "memory", layers
    assert _through(tile_cache, fresh_url, ["buildings"], tile).source == "memory"


def _point(building: dict) -> tuple[float, float]:
    return building["lon"], building["lat"]


def test_a_dataset_deleted_drops_its_tiles(
    staff: TestClient, fresh_url: str, tile_cache: TileCache
):
    building = _building(fresh_url, WEST)
    lon, lat = _point(building)
    square = {"type": "Polygon", "coordinates": [[[lon, lat], [lon + 1e-4, lat], [lon + 1e-4,
              lat + 1e-4], [lon, lat + 1e-4], [lon, lat]]]}  # fmt: skip
    extra = {"type": "FeatureCollection", "features": [{"type": "Feature", "id": "kiosk-1",
             "geometry": square, "properties": {"name": "kiosk", "height_m": 4.5}}]}  # fmt: skip
    added = staff.post("/layers/buildings/features", params={"dataset": "kiosks"}, headers=KEY,
                       json=extra)  # fmt: skip
    assert added.status_code == 200, added.text
    near = _tiles_over(lon, lat)
    far = _tiles_over(*_point(_building(fresh_url, EAST)))[-1]
    before = {t: _through(tile_cache, fresh_url, ["buildings"], t) for t in [*near, far]}
    assert all(4.5 in _heights(before[t].data) for t in near if t.z >= 15)  # smaller: a pixel
    gone = staff.delete("/layers/buildings/datasets/kiosks", headers=KEY)
    assert gone.status_code == 200, gone.text
    assert _wait(lambda: tile_cache.from_memory(cache.key_for(TMS, ["buildings"], near[0])) is None)
    for tile in near:
        after = _through(tile_cache, fresh_url, ["buildings"], tile)
        assert after.source == "rendered", tile
        if tile.z >= 15:
            assert 4.5 not in _heights(after.data) and after.etag != before[tile].etag
    assert _through(tile_cache, fresh_url, ["buildings"], far).etag == before[far].etag
    tile_cache.flush()
    with psycopg.connect(fresh_url) as conn:  # gone from the shared tier too
        left = conn.execute(
            "SELECT count(*) FROM tile_cache WHERE z = 16 AND x = %s AND y = %s",
            (near[-1].x, near[-1].y),
        ).fetchone()
    assert left is not None and left[0] == 1  # the one rendered again just now


def test_a_tile_of_incidents_expires_when_one_of_them_falls_overdue(
    staff: TestClient, fresh_url: str, tile_cache: TileCache
):
    lon, lat = _point(_building(fresh_url, WEST))
    sent = staff.post("/incidents", headers=KEY, json={
        "category": "SJ0401", "channel": "hotline_12345", "location": {"lon": lon, "lat": lat}})  # fmt: skip
    assert sent.status_code == 201, sent.text
    with psycopg.connect(fresh_url) as conn:  # its response is due in a moment
        conn.execute(
            "UPDATE incidents SET due_response_at = now() + interval '1.5 seconds' WHERE id = %s",
            (sent.json()["id"],),
        )
        changes.record(conn, "incidents", "edit", box=(lon, lat, lon, lat), features=1, table=None)
    tile = _tiles_over(lon, lat)[-1]
    assert _wait(lambda: _through(tile_cache, fresh_url, ["incidents"], tile).source == "memory")
    buildings = _through(tile_cache, fresh_url, ["buildings"], tile)
    threading.Event().wait(1.6)
    assert _through(tile_cache, fresh_url, ["incidents"], tile).source == "rendered"
    assert _through(tile_cache, fresh_url, ["buildings"], tile).etag == buildings.etag


def test_memory_keeps_the_most_recently_used_within_its_bytes():
    memory = cache.Memory(limit=3 * (1000 + cache.OVERHEAD))
    keys = [cache.Key(TMS, ("buildings",), 16, x, 0) for x in range(4)]
    for key in keys[:3]:
        memory.put(key, cache._Entry(b"x" * 1000, '"e"', None))
    assert memory.get(keys[0]) is not None  # used: the second is now the oldest
    memory.put(keys[3], cache._Entry(b"x" * 1000, '"e"', None))
    assert memory.get(keys[1]) is None
    assert all(memory.get(k) is not None for k in (keys[0], keys[2], keys[3]))
    assert memory.used <= memory.limit and len(memory) == 3


def test_the_shared_tier_evicts_the_least_recently_used(fresh_url: str):
    kept = TileCache(_settings(memory_mb=0))
    lon, lat = _point(_building(fresh_url, WEST))
    tiles = list(matrix.tiles_under(TMS, (lon - 0.01, lat - 0.005, lon + 0.01, lat + 0.005),
                                    range(17, 18)))  # fmt: skip
    with psycopg.connect(fresh_url, autocommit=True) as conn:
        catalogue = registry.load(conn)
        for tile in tiles:
            kept.fill(conn, catalogue, TMS, ["buildings"], tile)
        conn.execute("UPDATE tile_cache SET used_at = now() - interval '1 hour'"
                     " WHERE x <> %s", (tiles[-1].x,))  # fmt: skip
        used = conn.execute("SELECT sum(bytes + %s) FROM tile_cache", (cache.OVERHEAD,)).fetchone()
        assert used is not None
        kept.shared_limit = int(used[0]) // 2
        assert kept.evict(conn) > 0
        left = conn.execute("SELECT sum(bytes + %s), bool_or(x = %s) FROM tile_cache",
                            (cache.OVERHEAD, tiles[-1].x)).fetchone()  # fmt: skip
    assert left is not None and left[0] <= kept.shared_limit and left[1]


@contextmanager
def _api_process(url: str, port: int) -> Iterator[str]:
    """A real API process (`twin serve`) on the data base, on a free port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWIN_")}
    env.update(TWIN_DATABASE_URL=url, TWIN_SWEEP_INTERVAL_S="0",
               TWIN_API_KEYS=json.dumps({"test-key": "t"}))  # fmt: skip
    server = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--port", str(port)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, cwd=make_data_dir("twin-serve-"))  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                assert server.poll() is None, server.stdout.read()  # type: ignore[union-attr]
                time.sleep(0.2)
        yield base
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=60)


def _path(layers: str, tile: matrix.Tile) -> str:
    return f"/collections/{layers}/tiles/{TMS}/{tile.z}/{tile.y}/{tile.x}"


def test_two_api_processes_share_tiles_and_neither_serves_a_stale_one(fresh_url: str):
    building = _building(fresh_url, WEST)
    near = _tiles_over(*_point(building))
    far = _tiles_over(*_point(_building(fresh_url, EAST)))[-1]
    with (
        _api_process(fresh_url, free_port()) as one,
        _api_process(fresh_url, free_port()) as other,
        httpx.Client() as http,
    ):
        first = {}
        for tile in [*near, far]:
            answer = http.get(one + _path("buildings", tile))
            assert answer.status_code == 200 and answer.headers["x-tile-cache"] == "rendered"
            first[tile] = answer.headers["etag"]
        warm = http.get(one + _path("buildings", far))
        assert warm.headers["x-tile-cache"] == "memory" and warm.headers["etag"] == first[far]
        unchanged = http.get(one + _path("buildings", far), headers={"If-None-Match": first[far]})
        assert unchanged.status_code == 304
        # The other process finds what the first rendered (written behind, a moment later).
        assert _wait(lambda: http.get(other + _path("buildings", near[0])).headers[
            "x-tile-cache"] in ("shared", "memory"))  # fmt: skip
        for tile in [*near, far]:
            http.get(other + _path("buildings", tile))  # kept in its memory too
        assert http.get(other + _path("buildings", far)).headers["x-tile-cache"] == "memory"

        feature = {k: building[k] for k in ("type", "id", "geometry")}
        feature["properties"] = {**building["properties"], "height_m": 432.5}
        edited = http.post(other + "/layers/buildings/features", params={"dataset": "demo"},
                           headers=KEY, json={"type": "FeatureCollection",
                                              "features": [feature]})  # fmt: skip
        assert edited.status_code == 200, edited.text
        for base in (one, other):  # right after the edit's answer: no stale tile anywhere
            for tile in near:
                answer = http.get(base + _path("buildings", tile))
                assert answer.headers["etag"] != first[tile], (base, tile)
                if tile.z >= 15:
                    assert 432.5 in _heights(answer.content)
            far_again = http.get(base + _path("buildings", far))
            assert far_again.headers["etag"] == first[far]
            assert far_again.headers["x-tile-cache"] == "memory"


def test_seed_fills_the_range_and_says_how_many(fresh_url: str):
    env = {"TWIN_DATABASE_URL": fresh_url}
    lon, lat = _point(_building(fresh_url, WEST))
    box = f"{lon - 0.004},{lat - 0.003},{lon + 0.004},{lat + 0.003}"
    args = ("tiles", "seed", "--zooms", "14-16", "--layers", "buildings,pipes", "--bbox", box)
    seeded = run_twin(*args, "--json", env=env)
    assert seeded.returncode == 0, seeded.stderr
    counts = json.loads(seeded.stdout)
    expected = sum(1 for _ in matrix.tiles_under(TMS, tuple(map(float, box.split(","))),
                                                 range(14, 17)))  # fmt: skip
    assert counts["tiles"] == expected * 3  # buildings, pipes, and their one-map tile
    assert counts["rendered"] == counts["tiles"] and counts["cached"] == 0
    with psycopg.connect(fresh_url) as conn:
        stored = conn.execute("SELECT count(*) FROM tile_cache").fetchone()
    assert stored is not None and stored[0] == counts["tiles"]
    again = run_twin(*args, "--json", env=env)  # nothing changed: nothing rendered
    assert json.loads(again.stdout)["cached"] == counts["tiles"]
    cleared = run_twin("tiles", "clear", "--layers", "pipes", env=env)
    assert cleared.returncode == 0 and f"removed {expected * 2:,} cached tiles" in cleared.stdout


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--zooms", "16-10", "the first zoom is above the last"),
        ("--zooms", "10-30", "zoom 30 is outside 0..22"),
        ("--zooms", "ten", "'ten' is not a zoom level"),
        ("--bbox", "121.4,31.2,121.5", "give four numbers"),
        ("--bbox", "121.5,31.2,121.4,31.3", "west below east"),
        ("--bbox", "121.4,nan,121.5,31.3", "finite"),
        ("--layers", ",", "name at least one layer"),
    ],
)
def test_seed_names_a_bad_range_in_one_line(option: str, value: str, says: str):
    result = run_twin("tiles", "seed", option, value)
    assert result.returncode == 2 and says in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_seed_refuses_the_world_to_street_scale_before_listing_it(fresh_url: str):
    # 358 million tiles: refused at the cap, not listed first (it grew by 40 MB a second).
    args = ("tiles", "seed", "--bbox=-180,-85,180,85", "--zooms", "0-14")
    result = run_twin(*args, env={"TWIN_DATABASE_URL": fresh_url})
    assert result.returncode == 1 and "more than 2,000,000 tiles" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_category_priority_edit_drops_the_tiles_of_its_incidents(
    staff: TestClient, fresh_url: str, tile_cache: TileCache
):
    lon, lat = _point(_building(fresh_url, WEST))
    sent = staff.post("/incidents", headers=KEY, json={
        "category": "SJ0401", "channel": "hotline_12345", "location": {"lon": lon, "lat": lat}})  # fmt: skip
    assert sent.status_code == 201, sent.text
    tile = _tiles_over(lon, lat)[-1]
    assert _wait(lambda: _through(tile_cache, fresh_url, ["incidents"], tile).source == "memory")
    before = _through(tile_cache, fresh_url, ["incidents"], tile)
    (feature,) = mapbox_vector_tile.decode(before.data)["incidents"]["features"]
    category = staff.get("/categories/SJ0401", headers=KEY).json()
    fields = ("name", "parent_code", "asset_layers", "attach_radius_m", "response_hours",
              "resolve_hours", "fusion_radius_m", "fusion_hours")  # fmt: skip
    body = {k: category[k] for k in fields if category.get(k) is not None}
    body["priority"] = feature["properties"]["priority"] + 1
    put = staff.put("/categories/SJ0401", headers=KEY, json=body)
    assert put.status_code == 200, put.text
    assert _wait(lambda: tile_cache.from_memory(cache.key_for(TMS, ["incidents"], tile)) is None)
    after = _through(tile_cache, fresh_url, ["incidents"], tile)
    (changed,) = mapbox_vector_tile.decode(after.data)["incidents"]["features"]
    assert changed["properties"]["priority"] == body["priority"]


def test_a_tile_in_memory_is_answered_as_the_route_answers_it(staff: TestClient, fresh_url: str):
    # Warm tiles are answered ahead of FastAPI's routing (api.routes.tiles.TileFront):
    # the same bytes and headers, the same conditions and encodings, HEAD as GET.
    with psycopg.connect(fresh_url) as conn:
        lon, lat = conn.execute(
            "SELECT ST_X(c), ST_Y(c) FROM (SELECT ST_Centroid(ST_Extent(geom)::geometry) AS c"
            " FROM buildings) AS x"
        ).fetchone()
    tile = morecantile.tms.get(TMS).tile(lon, lat, 15)
    for path in (
        f"/collections/buildings/tiles/{TMS}/15/{tile.y}/{tile.x}",
        f"/tiles/{TMS}/15/{tile.y}/{tile.x}",
        f"/tiles/{TMS}/15/{tile.y}/{tile.x}?layers=pipes,buildings",
    ):
        plain = {"Accept-Encoding": "identity"}
        first = staff.get(path, headers=plain)
        assert first.status_code == 200 and first.headers["x-tile-cache"] == "rendered", path
        warm = staff.get(path, headers=plain)
        assert warm.headers["x-tile-cache"] == "memory" and warm.content == first.content
        same = ("etag", "cache-control", "content-type", "vary", "access-control-allow-origin")
        assert [warm.headers[h] for h in same] == [first.headers[h] for h in same]
        tag = {"If-None-Match": first.headers["etag"]}
        assert staff.get(path, headers={**plain, **tag}).status_code == 304
        zipped = staff.get(path, headers={"Accept-Encoding": "gzip"})
        assert zipped.headers["content-encoding"] == "gzip" and zipped.content == first.content
        refused = staff.get(path, headers={"Accept-Encoding": "gzip;q=0"})
        assert "content-encoding" not in refused.headers
        head = staff.head(path, headers=plain)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["etag"] == first.headers["etag"]
    # A tile the front makes but cannot (no such collection): the app's own problem.
    unknown = staff.get(f"/collections/nosuch/tiles/{TMS}/15/{tile.y}/{tile.x}")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"
    assert "nosuch" in unknown.json()["detail"]
    # What the front does not take goes on to the routes, as before.
    assert staff.get(f"/tiles/NoSuchSet/15/{tile.y}/{tile.x}").status_code == 404
    assert staff.get(f"/tiles/{TMS}/15/{tile.y}/{tile.x}?layers=,").status_code == 400


def test_many_asking_one_new_tile_at_once_have_it_made_once(fresh_url: str):
    # A view opening asks the same tiles of many clients together: the process makes
    # each once and the others wait for it, holding no connection (door test D3).
    settings = settings_for(make_data_dir("twin-tiles-"))
    lon, lat = _point(_building(fresh_url, WEST))
    tile = morecantile.tms.get(TMS).tile(lon, lat, 13)  # merged blocks: a slow render
    with serve_app(create_app(settings, database_url=fresh_url)) as base:
        path = base + _path("buildings", tile)
        with httpx.Client() as warm_up:  # the process, not the tile
            warm_up.get(base + _path("buildings", matrix.Tile(0, 0, 16)))

        def ask(_: int) -> str:
            with httpx.Client(timeout=60) as http:
                answer = http.get(path)
                assert answer.status_code == 200, answer.text
                return answer.headers["x-tile-cache"]

        with ThreadPoolExecutor(20) as pool:
            sources = list(pool.map(ask, range(20)))
    assert sources.count("rendered") == 1, sources
    assert set(sources) <= {"rendered", "memory"}
