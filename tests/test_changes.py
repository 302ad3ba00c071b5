"""The change log: every writer records the layer, a new version and the box of what
changed, in its own transaction, refreshes the catalogue's statistics there, and notifies
listeners; the API's catalogue snapshot follows those notices."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
import shapely.geometry
from fastapi.testclient import TestClient

from api.app import create_app
from layers.datasets import delete_dataset
from layers.demo.generate import DemoCity
from layers.demo.load import load_demo
from layers.ingest import ImportOptions, import_file
from layers.scenes import create_scene, drop_scene
from tests.helpers import make_data_dir, settings_for, write_geojson
from tests.test_import import EPANET
from twin import changes, db, registry
from twin.changes import Change
from twin.errors import TwinError
from twin.incidents import intake

KEY = {"X-API-Key": "test-key"}
LON, LAT = 121.4001, 31.2401  # inside the demo district


def square(lon: float, lat: float, size: float = 0.0001) -> shapely.geometry.Polygon:
    return shapely.geometry.box(lon, lat, lon + size, lat + size)


@pytest.fixture
def listener(fresh_url: str) -> Iterator[psycopg.Connection]:
    """A connection that hears the change log's notices, as a tile cache would."""
    with psycopg.connect(fresh_url, autocommit=True) as conn:
        conn.execute(f"LISTEN {changes.CHANNEL}")
        yield conn


def heard(listener: psycopg.Connection, wait_s: float = 2.0) -> list[Change]:
    """The notices that arrived (waiting up to ``wait_s`` for the first)."""
    return [
        Change.from_payload(n.payload) for n in listener.notifies(timeout=wait_s, stop_after=1000)
    ]


def logged(url: str, after: int) -> list[Change]:
    with psycopg.connect(url) as conn:
        return changes.changes_since(conn, after)


def version_now(url: str) -> int:
    with psycopg.connect(url) as conn:
        return changes.latest_version(conn)


def catalogue_row(url: str, layer: str) -> tuple:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT feature_count, version, ST_XMin(extent), ST_YMin(extent), ST_XMax(extent),"
            " ST_YMax(extent) FROM layer_catalogue WHERE name = %s",
            (layer,),
        ).fetchone()


def covers(box: tuple | None, lon: float, lat: float) -> bool:
    return box is not None and box[0] <= lon <= box[2] and box[1] <= lat <= box[3]


def test_an_import_records_a_tight_box_a_new_version_and_the_new_statistics(
    fresh_url: str, listener: psycopg.Connection, tmp_path: Path
):
    path = write_geojson(
        tmp_path / "two.geojson",
        [({"id": "a"}, square(LON, LAT)), ({"id": "b"}, square(LON + 0.002, LAT + 0.001))],
    )
    before = version_now(fresh_url)
    count_before = catalogue_row(fresh_url, "buildings")[0]
    with psycopg.connect(fresh_url) as conn, conn.transaction():
        import_file(conn, "buildings", path, ImportOptions(dataset="two"))
        assert heard(listener, 0.3) == []  # nothing is heard before the commit
    logged_changes = logged(fresh_url, before)
    # The demo's ground under them gave them their base elevations: a change of its own.
    assert [c.operation for c in logged_changes] == ["import", "elevation"]
    change = logged_changes[0]
    assert (change.layer, change.operation, change.dataset, change.features) == (
        "buildings", "import", "two", 2,
    )  # fmt: skip
    assert change.version > before
    assert covers(change.bbox, LON, LAT) and covers(change.bbox, LON + 0.0021, LAT + 0.0011)
    assert change.bbox[2] - change.bbox[0] < 0.003  # the two buildings, not the whole layer
    count, version, *_ = catalogue_row(fresh_url, "buildings")
    assert count == count_before + 2 and version == logged_changes[-1].version
    assert heard(listener) == logged_changes


def test_a_reimport_that_moves_a_feature_covers_where_it_was_and_where_it_is(
    fresh_url: str, tmp_path: Path
):
    first = write_geojson(tmp_path / "moving.geojson", [({"id": "m"}, square(LON, LAT))])
    moved = write_geojson(
        tmp_path / "moved.geojson", [({"id": "m"}, square(LON + 0.01, LAT + 0.01))]
    )
    with psycopg.connect(fresh_url) as conn:
        import_file(conn, "buildings", first, ImportOptions(dataset="moving"))
        before = changes.latest_version(conn)
        import_file(conn, "buildings", moved, ImportOptions(dataset="moving"))
    [change] = logged(fresh_url, before)
    assert change.operation == "import" and change.features == 1
    assert covers(change.bbox, LON + 0.00005, LAT + 0.00005)  # the old place
    assert covers(change.bbox, LON + 0.01005, LAT + 0.01005)  # the new one
    assert change.bbox[2] - change.bbox[0] < 0.011  # and not the whole layer


def test_an_import_that_stores_nothing_records_nothing(
    fresh_url: str, listener: psycopg.Connection, tmp_path: Path
):
    path = write_geojson(tmp_path / "none.geojson", [({"id": "x"}, None)])
    before = version_now(fresh_url)
    with psycopg.connect(fresh_url) as conn:
        try:  # refused whole, or reported with every feature rejected
            assert import_file(conn, "buildings", path, ImportOptions(dataset="none")).stored == 0
        except TwinError as exc:
            assert "nothing" in str(exc) or "no feature" in str(exc)
    assert logged(fresh_url, before) == []
    assert heard(listener, 0.5) == []


@pytest.fixture
def staff(fresh_url: str) -> Iterator[TestClient]:
    settings = settings_for(make_data_dir("twin-api-"), api={"api_keys": {"test-key": "tester"}})
    with TestClient(create_app(settings, database_url=fresh_url)) as client:
        yield client


def collection_bbox(client: TestClient, name: str) -> list[float] | None:
    body = client.get(f"/collections/{name}").json()
    return body.get("extent", {}).get("spatial", {}).get("bbox", [None])[0]


def test_features_posted_over_http_are_recorded_and_the_next_answer_shows_them(
    staff: TestClient, fresh_url: str, listener: psycopg.Connection
):
    far = (121.60, 31.30)  # beyond the demo's extent, so the collection's extent must grow
    assert not covers(tuple(collection_bbox(staff, "sensors")), *far)
    body = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": "s-far", "properties": {"device_id": "s-far", "kind": "water_level"},
         "geometry": {"type": "Point", "coordinates": list(far)}}]}  # fmt: skip
    before = version_now(fresh_url)
    posted = staff.post("/layers/sensors/features", json=body, headers=KEY)
    assert posted.status_code == 200, posted.text
    [change] = logged(fresh_url, before)
    assert (change.layer, change.operation, change.dataset) == ("sensors", "import", "api")
    assert covers(change.bbox, *far)
    assert heard(listener) == [change]
    assert covers(tuple(collection_bbox(staff, "sensors")), *far)  # this process: at once


def test_a_dataset_deleted_over_http_records_the_box_of_what_went(
    staff: TestClient, fresh_url: str, tmp_path: Path
):
    path = write_geojson(
        tmp_path / "gone.geojson",
        [({"id": "g1"}, square(LON, LAT)), ({"id": "g2"}, square(LON + 0.001, LAT))],
    )
    with psycopg.connect(fresh_url) as conn:
        import_file(conn, "buildings", path, ImportOptions(dataset="gone"))
    count_before = catalogue_row(fresh_url, "buildings")[0]
    before = version_now(fresh_url)
    deleted = staff.delete("/layers/buildings/datasets/gone", headers=KEY)
    assert deleted.status_code == 200 and deleted.json()["deleted"] == 2
    [change] = logged(fresh_url, before)
    assert (change.operation, change.dataset, change.features) == ("delete", "gone", 2)
    assert covers(change.bbox, LON + 0.00005, LAT) and covers(change.bbox, LON + 0.00105, LAT)
    assert change.bbox[2] - change.bbox[0] < 0.002
    assert catalogue_row(fresh_url, "buildings")[0] == count_before - 2


def test_a_delete_that_is_refused_records_nothing(fresh_url: str):
    before = version_now(fresh_url)
    with psycopg.connect(fresh_url) as conn, pytest.raises(Exception, match="refer to it"):
        delete_dataset(conn, "jurisdictions", "demo")  # the demo's units are inside them
    assert logged(fresh_url, before) == []


def test_a_demo_load_records_every_layer_it_replaced(fresh_url: str, small_city: DemoCity):
    before = version_now(fresh_url)
    with psycopg.connect(fresh_url) as conn:
        load_demo(conn, small_city)
    logged_changes = logged(fresh_url, before)
    assert {c.layer for c in logged_changes} == {
        "jurisdictions", "units", "buildings", "public_spaces", "pipe_nodes", "pipes", "sensors",
        "terrain",
    }  # fmt: skip
    # Its ground comes in through the DEM import, as a provider's would.
    assert {(c.operation, c.dataset) for c in logged_changes if c.layer == "terrain"} == {
        ("import", "demo")
    }
    assert {c.operation for c in logged_changes if c.layer != "terrain"} == {"demo"}
    buildings = next(c for c in logged_changes if c.layer == "buildings")
    count, version, *extent = catalogue_row(fresh_url, "buildings")
    assert version == buildings.version and buildings.features == count
    assert buildings.bbox[0] <= extent[0] + 1e-6 and buildings.bbox[2] >= extent[2] - 1e-6


def test_a_scene_made_filled_and_dropped_is_recorded_each_time(
    fresh_url: str, listener: psycopg.Connection, tmp_path: Path
):
    before = version_now(fresh_url)
    points = write_geojson(
        tmp_path / "spots.geojson",
        [({"id": "p1"}, shapely.geometry.Point(LON, LAT)),
         ({"id": "p2"}, shapely.geometry.Point(LON + 0.003, LAT + 0.002))],
    )  # fmt: skip
    with psycopg.connect(fresh_url) as conn:
        create_scene(conn, "spots", geometry_type="Point", properties={})
        conn.commit()
        import_file(conn, "spots", points, ImportOptions(dataset="spots"))
        drop_scene(conn, "spots")
    made, filled, dropped = logged(fresh_url, before)
    assert (made.layer, made.operation, made.bbox) == ("spots", "scene_create", None)
    assert (filled.operation, filled.features) == ("import", 2)
    assert (dropped.operation, dropped.features) == ("scene_drop", 2)
    assert covers(dropped.bbox, LON, LAT) and covers(dropped.bbox, LON + 0.003, LAT + 0.002)
    assert made.version < filled.version < dropped.version
    assert [c.operation for c in heard(listener)] == ["scene_create", "import", "scene_drop"]


def test_epanets_tie_up_of_pipes_and_nodes_is_recorded(fresh_url: str, tmp_path: Path):
    path = tmp_path / "net.inp"
    path.write_text(EPANET)
    before = version_now(fresh_url)
    with psycopg.connect(fresh_url) as conn:
        import_file(conn, "pipes", path, ImportOptions(crs="EPSG:4549"))
    logged_changes = logged(fresh_url, before)
    assert [(c.layer, c.operation) for c in logged_changes] == [
        ("pipe_nodes", "import"),
        ("pipe_nodes", "elevation"),
        ("pipes", "import"),
        ("pipes", "topology"),
    ]  # fmt: skip  (the nodes the file gave no elevation stand on the demo's ground)
    tie_up = logged_changes[-1]
    assert tie_up.features == 5 and tie_up.dataset == "net"
    assert covers(tie_up.bbox, 121.40015, 31.2401)  # J1, in the demo district


def test_terrain_and_the_elevations_it_fills_are_recorded(fresh_url: str, tmp_path: Path):
    import rasterio
    from rasterio.transform import from_origin

    from layers.terrain import import_dem

    x0, y0, cell = 632000, 3462000, 10
    z = np.full((600, 500), 4.0, dtype="float32")
    dem = tmp_path / "dem.tif"
    with rasterio.open(dem, "w", driver="GTiff", width=500, height=600, count=1, dtype="float32",
                       crs="EPSG:4549", transform=from_origin(x0, y0, cell, cell)) as out:  # fmt: skip
        out.write(z, 1)
    with psycopg.connect(fresh_url) as conn:
        conn.execute(
            "UPDATE sensors SET elevation_m = NULL WHERE id IN (SELECT id FROM sensors"
            " WHERE ST_Intersects(geom, ST_Transform(ST_MakeEnvelope(632500, 3457000, 636500,"
            " 3461500, 4549), 4326)) ORDER BY id LIMIT 3)"
        )
        where = conn.execute(
            "SELECT ST_X(geom), ST_Y(geom) FROM sensors WHERE elevation_m IS NULL"
        ).fetchall()
        conn.commit()
        before = changes.latest_version(conn)
        import_dem(conn, dem)
    logged_changes = logged(fresh_url, before)
    terrain = next(c for c in logged_changes if c.layer == "terrain")
    assert terrain.operation == "import" and terrain.features > 0
    assert covers(terrain.bbox, 121.41, 31.25)  # the DEM's middle
    filled = [c for c in logged_changes if c.operation == "elevation"]
    assert [(c.layer, c.features) for c in filled] == [("sensors", 3)]
    assert all(covers(filled[0].bbox, lon, lat) for lon, lat in where)


def test_the_api_snapshot_follows_writes_by_other_processes(
    staff: TestClient, fresh_url: str, tmp_path: Path
):
    assert staff.get("/collections/tents").status_code == 404
    far = (121.61, 31.31)
    path = write_geojson(tmp_path / "tents.geojson", [({"id": "t"}, shapely.geometry.Point(*far))])
    with psycopg.connect(fresh_url) as conn:  # another process would do the same
        create_scene(conn, "tents", geometry_type="Point", properties={})
        conn.commit()
        import_file(conn, "tents", path, ImportOptions(dataset="tents"))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        answer = staff.get("/collections/tents")
        if answer.status_code == 200 and collection_bbox(staff, "tents"):
            break
        time.sleep(0.05)
    assert answer.status_code == 200, answer.text
    assert covers(tuple(collection_bbox(staff, "tents")), *far)
    with psycopg.connect(fresh_url) as conn:
        drop_scene(conn, "tents")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and staff.get("/collections/tents").status_code == 200:
        time.sleep(0.05)
    assert staff.get("/collections/tents").status_code == 404
    assert "tents" not in {c["id"] for c in staff.get("/collections").json()["collections"]}


def test_another_system_follows_the_log_over_http(staff: TestClient, tmp_path: Path):
    start = staff.get("/changes?after=0&limit=1000").json()
    assert {c["layer"] for c in start["changes"]} >= {"buildings", "jurisdictions"}  # the demo
    latest = start["latest"]
    assert start["next"] == latest
    body = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": "b-new", "properties": {},
         "geometry": {"type": "Polygon", "coordinates": [[[LON, LAT], [LON + 0.0001, LAT],
                      [LON + 0.0001, LAT + 0.0001], [LON, LAT]]]}}]}  # fmt: skip
    assert staff.post("/layers/buildings/features", json=body, headers=KEY).status_code == 200
    since = staff.get(f"/changes?after={latest}").json()
    change, filled = since["changes"]  # and its base elevation, from the demo's ground
    assert change["layer"] == "buildings" and change["operation"] == "import"
    assert (filled["layer"], filled["operation"]) == ("buildings", "elevation")
    assert covers(tuple(change["bbox"]), LON + 0.00005, LAT + 0.00002)
    assert since["next"] == since["latest"] == filled["version"] > change["version"] > latest
    assert staff.get(f"/changes?after={since['next']}").json()["changes"] == []
    assert (
        staff.get("/changes?after=0&layer=units&limit=5").json()["changes"][0]["layer"] == "units"
    )
    unknown = staff.get("/changes?layer=castles")
    assert unknown.status_code == 400 and unknown.json()["parameter"] == "layer"
    assert "buildings" in unknown.json()["detail"]
    huge = staff.get("/changes?after=9223372036854775808")
    assert huge.status_code == 400 and "from 0 to 9223372036854775807" in huge.json()["detail"]
    for bad in ("after=-1", "after=1e400", "after=x", "limit=0", "limit=100000",
                "after=99999999999999999999", "after=1%00"):  # fmt: skip
        answer = staff.get(f"/changes?{bad}")
        assert answer.status_code == 400, (bad, answer.text)
        assert answer.headers["content-type"].startswith("application/problem+json")


# Intakes record a change each, many at once: they keep the incidents layer's statistics
# in rows of their own (layer_catalogue_deltas), so none waits for another's commit, and
# the catalogue every reader gets (twin.registry) is still exact at each commit.
PLAIN, OTHER = "BJ01", "BJ02"  # no asset layers: nothing shared but the layer
FAR = (LON + 0.03, LAT)  # about 3 km east: no fusion check in common either


def incidents_entry(url: str) -> tuple[int, list[float] | None, int, int]:
    """The incidents layer as the catalogue shows it: count, bbox, version, and the
    catalogue's version; read on a connection of its own (what is committed)."""
    with psycopg.connect(url) as conn:
        catalogue = registry.load(conn)
    entry = catalogue.entry("incidents")
    return entry["feature_count"], entry["bbox"], entry["version"], catalogue.version


def last_change(url: str, layer: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT max(id) FROM layer_changes WHERE layer = %s", (layer,))
        return int(row.fetchone()[0])  # type: ignore[index]


def open_intake(conn: psycopg.Connection, category: str, lon: float, lat: float) -> int:
    """Report an incident on ``conn`` (its transaction left to the caller); its id."""
    taken = intake.report(conn, category_code=category, channel="hotline_12345", lon=lon,
                          lat=lat)  # fmt: skip
    return taken.id


def test_two_intakes_at_once_do_not_wait_for_each_other_and_both_count(fresh_url: str):
    count, bbox, _, _ = incidents_entry(fresh_url)
    with (
        db.connect(fresh_url, autocommit=True) as one,
        db.connect(fresh_url, autocommit=True) as two,
    ):
        two.execute("SET lock_timeout = '3s'")  # a wait for the first fails the test
        with one.transaction():
            open_intake(one, PLAIN, LON, LAT)
            with two.transaction():  # both open at once, in one thread: neither waited
                open_intake(two, OTHER, *FAR)
                assert incidents_entry(fresh_url)[0] == count  # neither committed
            second = last_change(fresh_url, "incidents")
            # The second is counted at its commit, the first (still open) is not.
            now, box, version, latest = incidents_entry(fresh_url)
            assert now == count + 1 and version == second and latest >= second
            assert covers(box, *FAR) and not covers(box, LON, LAT)
        now, box, version, _ = incidents_entry(fresh_url)
    assert now == count + 2 and covers(box, LON, LAT) and covers(box, *FAR)
    assert version == second == last_change(fresh_url, "incidents")  # the latest stays
    assert bbox is None or box[0] <= bbox[0]  # an extent only grows with intakes


def test_an_intake_rolled_back_beside_another_leaves_no_trace_in_the_catalogue(
    fresh_url: str,
):
    count, _, version_before, _ = incidents_entry(fresh_url)
    with (
        db.connect(fresh_url, autocommit=True) as one,
        db.connect(fresh_url, autocommit=True) as two,
    ):
        two.execute("SET lock_timeout = '3s'")
        with one.transaction():
            open_intake(one, PLAIN, LON, LAT)
            first = changes.latest_version(one)  # its own change, not committed yet
            with pytest.raises(RuntimeError), two.transaction():
                open_intake(two, OTHER, *FAR)  # the later change, the higher version
                raise RuntimeError("rolled back")
    now, box, version, latest = incidents_entry(fresh_url)
    assert now == count + 1 and version == first > version_before and latest >= first
    assert covers(box, LON, LAT) and not covers(box, *FAR)


def test_a_recount_waits_for_an_intake_in_flight_and_counts_it(fresh_url: str):
    with (
        db.connect(fresh_url, autocommit=True) as one,
        db.connect(fresh_url, autocommit=True) as two,
    ):
        with one.transaction():
            open_intake(one, PLAIN, LON, LAT)
            result: dict[str, Any] = {}

            def recount() -> None:  # what a delete or the demo does to the layer
                try:
                    with two.transaction():
                        result["version"] = changes.record(
                            two, "incidents", "edit", box=None, table="incidents"
                        )
                except Exception as exc:  # shown by the test
                    result["error"] = exc

            worker = threading.Thread(target=recount)
            worker.start()
            worker.join(1.0)
            waited = worker.is_alive()
        worker.join(60)
    assert "error" not in result, result["error"]
    assert waited  # the recount waited for the intake's commit ...
    with psycopg.connect(fresh_url) as conn:
        stored = conn.execute("SELECT count(*) FROM incidents").fetchone()[0]  # type: ignore[index]
        folded = conn.execute("SELECT count(*) FROM layer_catalogue_deltas").fetchone()[0]  # type: ignore[index]
    now, box, version, _ = incidents_entry(fresh_url)
    assert now == stored >= 1 and covers(box, LON, LAT)  # ... and counted it
    assert version == result["version"] and folded == 0  # the row holds it all again
