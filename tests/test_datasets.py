"""Datasets of a layer: listed and deleted from the core, the CLI and the API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import psycopg
import pytest
import shapely
from fastapi.testclient import TestClient

from api.app import create_app
from layers.datasets import delete_dataset, list_datasets
from layers.ingest import ImportOptions, import_file
from tests.helpers import make_data_dir, run_twin, settings_for, write_geojson
from twin.errors import Conflict, NotFound

LON, LAT = 121.4005, 31.2405  # inside the small demo district
KEY = {"X-API-Key": "test-key"}


def write_buildings(path: Path, n: int) -> Path:
    return write_geojson(path, [
        ({"id": f"b{i}", "层数": "3"},
         shapely.box(LON + i * 0.0005, LAT, LON + i * 0.0005 + 0.0002, LAT + 0.0002))
        for i in range(n)
    ])  # fmt: skip


def two_imports(url: str, folder: Path) -> None:
    with psycopg.connect(url) as conn:
        import_file(conn, "buildings", write_buildings(folder / "survey_2024.geojson", 3))
        import_file(
            conn,
            "buildings",
            write_buildings(folder / "other.geojson", 2),
            ImportOptions(dataset="测绘院"),
        )


def catalogue_count(conn: psycopg.Connection, layer: str) -> int:
    row = conn.execute("SELECT feature_count FROM layer_catalogue WHERE name = %s", (layer,))
    return int(row.fetchone()[0])  # type: ignore[index]


@pytest.fixture
def staff(fresh_url: str) -> Iterator[TestClient]:
    settings = settings_for(make_data_dir("twin-api-"), api={"api_keys": {"test-key": "tester"}})
    with TestClient(create_app(settings, database_url=fresh_url)) as client:
        yield client


def test_datasets_are_listed_after_two_imports(fresh_url: str, tmp_path: Path):
    two_imports(fresh_url, tmp_path)
    with psycopg.connect(fresh_url) as conn:
        demo = conn.execute("SELECT count(*) FROM buildings WHERE dataset = 'demo'").fetchone()[0]
        listed = list_datasets(conn, "buildings")
        assert {row["dataset"]: row["features"] for row in listed} == {
            "demo": demo, "survey_2024": 3, "测绘院": 2,
        }  # fmt: skip
        assert all(row["updated_at"] is not None for row in listed)
        # Layers whose table keeps no time still list, without one.
        units = list_datasets(conn, "units")
        assert [row["dataset"] for row in units] == ["demo"] and units[0]["updated_at"] is None


def test_delete_a_dataset_in_the_core(fresh_url: str, tmp_path: Path):
    two_imports(fresh_url, tmp_path)
    with psycopg.connect(fresh_url) as conn:
        before = catalogue_count(conn, "buildings")
        assert delete_dataset(conn, "buildings", "survey_2024") == 3
        assert catalogue_count(conn, "buildings") == before - 3
        assert [r["dataset"] for r in list_datasets(conn, "buildings")] == ["demo", "测绘院"]
        with pytest.raises(NotFound, match=r"no dataset 'survey_2024'.*'demo', '测绘院'"):
            delete_dataset(conn, "buildings", "survey_2024")
        with pytest.raises(NotFound, match="no layer named 'castles'"):
            delete_dataset(conn, "castles", "demo")
        with pytest.raises(NotFound, match="no layer named 'castles'"):
            list_datasets(conn, "castles")


def test_the_demo_buildings_go_even_with_pipe_nodes_pointing_at_them(fresh_url: str):
    with psycopg.connect(fresh_url) as conn:
        linked = conn.execute(
            "SELECT count(*) FROM pipe_nodes WHERE building_id IS NOT NULL"
        ).fetchone()[0]
        assert linked > 0  # the demo's service connections name their building
        nodes = conn.execute("SELECT count(*) FROM pipe_nodes").fetchone()[0]
        demo = conn.execute("SELECT count(*) FROM buildings WHERE dataset = 'demo'").fetchone()[0]
        assert delete_dataset(conn, "buildings", "demo") == demo
        assert conn.execute("SELECT count(*) FROM pipe_nodes").fetchone()[0] == nodes
        assert (
            conn.execute("SELECT count(*) FROM pipe_nodes WHERE building_id IS NOT NULL")
            .fetchone()[0] == 0
        )  # fmt: skip
        layer = conn.execute(
            "SELECT feature_count, extent FROM layer_catalogue WHERE name = 'buildings'"
        ).fetchone()
        assert layer == (0, None)


def test_a_dataset_others_depend_on_is_refused_and_left_whole(fresh_url: str):
    with psycopg.connect(fresh_url) as conn:
        before = conn.execute("SELECT count(*) FROM jurisdictions").fetchone()[0]
        with pytest.raises(Conflict, match="features in units refer to it"):
            delete_dataset(conn, "jurisdictions", "demo")
        assert conn.execute("SELECT count(*) FROM jurisdictions").fetchone()[0] == before
        # The demo's responsibility list names its units: refused too, while it does.
        with pytest.raises(Conflict, match="features in responsibility_rules refer to it"):
            delete_dataset(conn, "units", "demo")
        conn.execute("DELETE FROM responsibility_rules WHERE dataset = 'demo'")
        # Units first, then the jurisdictions: children before parents, in one call.
        assert delete_dataset(conn, "units", "demo") > 0
        assert delete_dataset(conn, "jurisdictions", "demo") == before
        assert catalogue_count(conn, "jurisdictions") == 0


def test_cli_lists_and_deletes_datasets(fresh_url: str, tmp_path: Path):
    two_imports(fresh_url, tmp_path)
    env = {"TWIN_DATABASE_URL": fresh_url}
    listed = run_twin("datasets", "buildings", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = {r["dataset"]: r for r in json.loads(listed.stdout)}
    assert rows["survey_2024"]["features"] == 3
    # Times as the HTTP API writes them (ISO 8601), not Python's str() of a datetime.
    assert "T" in rows["survey_2024"]["imported_at"]
    assert datetime.fromisoformat(rows["survey_2024"]["imported_at"]).tzinfo is not None
    table = run_twin("datasets", "buildings", env=env)
    assert table.returncode == 0 and "survey_2024" in table.stdout and "测绘院" in table.stdout

    deleted = run_twin("datasets", "buildings", "--delete", "测绘院", env=env)
    assert deleted.returncode == 0, deleted.stderr
    assert "deleted dataset 测绘院 of buildings: 2 features" in deleted.stderr
    with psycopg.connect(fresh_url) as conn:
        assert (
            conn.execute("SELECT count(*) FROM buildings WHERE dataset = '测绘院'").fetchone()[0]
            == 0
        )
        assert (
            catalogue_count(conn, "buildings")
            == conn.execute("SELECT count(*) FROM buildings").fetchone()[0]
        )

    again = run_twin("datasets", "buildings", "--delete", "测绘院", env=env)
    assert again.returncode == 1
    assert again.stderr.strip().startswith("twin: error: layer 'buildings' has no dataset '测绘院'")
    assert "'survey_2024'" in again.stderr and "Traceback" not in again.stderr
    castles = run_twin("datasets", "castles", env=env)
    assert (
        castles.returncode == 1
        and castles.stderr.strip().startswith("twin: error: no layer named 'castles'")
        and "buildings" in castles.stderr
    )
    refused = run_twin("datasets", "jurisdictions", "--delete", "demo", env=env)
    assert refused.returncode == 1 and "units refer to it" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_api_lists_datasets_for_all_and_deletes_for_staff(staff: TestClient, fresh_url: str,
                                                          tmp_path: Path):  # fmt: skip
    two_imports(fresh_url, tmp_path)
    listed = staff.get("/layers/buildings/datasets")
    assert listed.status_code == 200, listed.text
    by_name = {r["dataset"]: r for r in listed.json()["datasets"]}
    assert by_name["survey_2024"]["features"] == 3 and by_name["测绘院"]["features"] == 2
    assert listed.json()["count"] == 3

    path = "/layers/buildings/datasets/survey_2024"
    assert staff.delete(path).status_code == 401
    assert staff.delete(path, headers={"X-API-Key": "wrong"}).status_code == 401
    count = staff.get("/layers/buildings").json()["feature_count"]
    deleted = staff.delete(path, headers=KEY)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"caller": "tester", "layer": "buildings", "dataset": "survey_2024",
                              "deleted": 3}  # fmt: skip
    assert staff.get("/layers/buildings").json()["feature_count"] == count - 3
    names = [r["dataset"] for r in staff.get("/layers/buildings/datasets").json()["datasets"]]
    assert names == ["demo", "测绘院"]

    gone = staff.delete(path, headers=KEY)
    assert gone.status_code == 404
    assert gone.headers["content-type"].startswith("application/problem+json")
    assert "no dataset 'survey_2024'" in gone.json()["detail"]
    assert "'测绘院'" in gone.json()["detail"]
    unknown = staff.delete("/layers/castles/datasets/demo", headers=KEY)
    assert unknown.status_code == 404 and "castles" in unknown.json()["detail"]
    assert "there are: " in unknown.json()["detail"] and "buildings" in unknown.json()["detail"]
    assert staff.get("/layers/castles/datasets").status_code == 404
    conflict = staff.delete("/layers/jurisdictions/datasets/demo", headers=KEY)
    assert conflict.status_code == 409 and "units" in conflict.json()["detail"]


def test_each_dataset_has_its_own_inventory_entry(fresh_url: str, tmp_path: Path):
    with psycopg.connect(fresh_url) as conn:
        import_file(
            conn, "buildings", write_buildings(tmp_path / "楼宇_2024.geojson", 3),
            ImportOptions(provider="测绘院", owner_unit="规划资源局", licence="internal"),
        )  # fmt: skip
        import_file(
            conn, "buildings", write_buildings(tmp_path / "osm.geojson", 2),
            ImportOptions(provider="OpenStreetMap", licence="ODbL-1.0"),
        )  # fmt: skip
        # A re-import that names no provider keeps the one the dataset has.
        import_file(conn, "buildings", write_buildings(tmp_path / "楼宇_2024.geojson", 4))
        rows = {row["dataset"]: row for row in list_datasets(conn, "buildings")}
        delete_dataset(conn, "buildings", "osm")
        left = conn.execute(
            "SELECT dataset FROM dataset_inventory WHERE layer = 'buildings' ORDER BY dataset"
        ).fetchall()
    survey, osm, demo = rows["楼宇_2024"], rows["osm"], rows["demo"]
    assert (survey["provider"], survey["owner_unit"], survey["licence"]) == (
        "测绘院", "规划资源局", "internal",
    )  # fmt: skip
    assert (survey["features"], survey["source"], survey["source_crs"]) == (
        4, "楼宇_2024.geojson", "EPSG:4326",
    )  # fmt: skip
    assert (osm["provider"], osm["licence"], osm["owner_unit"]) == ("OpenStreetMap", "ODbL-1.0", "")
    assert demo["provider"] == "twin demo (fictional)"  # the demo city is in the inventory too
    assert left == [("demo",), ("楼宇_2024",)]  # a deleted dataset leaves the inventory


def test_the_inventory_is_served_and_listed(staff: TestClient, fresh_url: str, tmp_path: Path):
    with psycopg.connect(fresh_url) as conn:
        import_file(
            conn, "buildings", write_buildings(tmp_path / "grid.geojson", 2),
            ImportOptions(provider="网格员", update_cadence="weekly"),
        )  # fmt: skip
    served = staff.get("/layers/buildings/datasets").json()["datasets"]
    grid = next(d for d in served if d["dataset"] == "grid")
    assert (grid["provider"], grid["update_cadence"], grid["features"]) == ("网格员", "weekly", 2)
    listed = run_twin("datasets", "buildings", env={"TWIN_DATABASE_URL": fresh_url})
    assert listed.returncode == 0, listed.stderr
    assert "网格员" in listed.stdout and "grid.geojson" in listed.stdout


def test_deleting_a_dataset_clears_the_assets_sensors_named_in_it(fresh_url: str, tmp_path: Path):
    """A sensor on a building of a deleted dataset stays, no longer naming the building;
    a sensor on a building that stays keeps it."""
    two_imports(fresh_url, tmp_path)
    with psycopg.connect(fresh_url) as conn:
        gone, kept = (
            conn.execute(
                "SELECT id FROM buildings WHERE dataset = %s ORDER BY id LIMIT 1", (dataset,)
            ).fetchone()[0]
            for dataset in ("测绘院", "survey_2024")
        )
        for device, building in (("on-gone", gone), ("on-kept", kept)):
            conn.execute(
                "INSERT INTO sensors (dataset, source_id, device_id, kind, unit_of_measure,"
                " asset_layer, asset_id, geom) VALUES ('test', %s, %s, 'water_level', 'm',"
                " 'buildings', %s, ST_SetSRID(ST_MakePoint(%s, %s), 4326))",
                (device, device, building, LON, LAT),
            )
        conn.commit()
        assert delete_dataset(conn, "buildings", "测绘院") == 2
        conn.commit()
        assets = dict(
            conn.execute(
                "SELECT device_id, asset_id FROM sensors WHERE dataset = 'test'"
            ).fetchall()
        )
        assert assets == {"on-gone": None, "on-kept": kept}


def test_a_layer_s_entry_forgets_the_terms_of_a_deleted_dataset(
    staff: TestClient, fresh_url: str, tmp_path: Path
):
    """After deleting a dataset imported with --provider and --licence, /layers/buildings
    showed them still. The entry now shows what the datasets left say, count and extent."""
    before = staff.get("/layers/buildings").json()
    assert before["provider"] == "twin demo (fictional)"
    with psycopg.connect(fresh_url) as conn:
        import_file(
            conn, "buildings", write_buildings(tmp_path / "survey.geojson", 3),
            ImportOptions(provider="测绘院", licence="internal", crs="GCJ02",
                          update_cadence="yearly"),
        )  # fmt: skip
    imported = staff.get("/layers/buildings").json()
    assert (imported["provider"], imported["licence"], imported["source_crs"]) == (
        "测绘院", "internal", "GCJ02",
    )  # fmt: skip
    assert imported["feature_count"] == before["feature_count"] + 3
    deleted = staff.delete("/layers/buildings/datasets/survey", headers=KEY)
    assert deleted.status_code == 200, deleted.text
    after = staff.get("/layers/buildings").json()
    for name in ("provider", "owner_unit", "licence", "update_cadence", "source_crs",
                 "feature_count"):  # fmt: skip
        assert after[name] == before[name], name
    assert after["bbox"] == pytest.approx(before["bbox"])
    assert after["updated_at"] > imported["updated_at"]


def test_deleting_a_scene_s_only_dataset_leaves_its_own_owner(fresh_url: str, tmp_path: Path):
    env = {"TWIN_DATABASE_URL": fresh_url}
    created = run_twin("scene", "create", "stalls", "--geometry", "Polygon", "--owner", "长寿路街道",
                       env=env)  # fmt: skip
    assert created.returncode == 0, created.stderr
    path = write_buildings(tmp_path / "stalls.geojson", 2)
    imported = run_twin("import", "stalls", str(path), "--provider", "网格员", "--licence", "CC0",
                        env=env)  # fmt: skip
    assert imported.returncode == 0, imported.stdout + imported.stderr
    deleted = run_twin("datasets", "stalls", "--delete", "stalls", env=env)
    assert deleted.returncode == 0, deleted.stderr
    with psycopg.connect(fresh_url) as conn:
        row = conn.execute(
            "SELECT provider, licence, owner_unit, source_crs, feature_count, extent IS NULL"
            " FROM layer_catalogue WHERE name = 'stalls'"
        ).fetchone()
    assert row == ("", "", "长寿路街道", "", 0, True)


def test_an_import_that_takes_over_a_dataset_s_features_forgets_its_terms(
    staff: TestClient, fresh_url: str, tmp_path: Path
):
    """Sensors are matched by device_id across datasets: importing cameras.csv again as
    cli_cam moved them out of 'cameras', which left the list and could not be deleted,
    while /layers/sensors still credited its provider."""
    before = staff.get("/layers/sensors").json()
    csv = "device_id,kind,lon,lat\ncam-1,camera,121.4005,31.2405\ncam-2,camera,121.401,31.241\n"
    uploaded = staff.post("/layers/sensors/import", files={"file": ("cameras.csv", csv)},
                          data={"provider": "ProvC"}, headers=KEY)  # fmt: skip
    assert uploaded.status_code == 200, uploaded.text
    assert staff.get("/layers/sensors").json()["provider"] == "ProvC"
    path = tmp_path / "cameras.csv"
    path.write_text(csv)
    moved = run_twin("import", "sensors", str(path), "--dataset", "cli_cam", "--json",
                     env={"TWIN_DATABASE_URL": fresh_url})  # fmt: skip
    assert moved.returncode == 0, moved.stdout + moved.stderr
    report = json.loads(moved.stdout)
    assert report["updated"] == 2
    assert "dataset 'cameras' holds no features any more" in " ".join(report["notes"])
    names = [d["dataset"] for d in staff.get("/layers/sensors/datasets").json()["datasets"]]
    assert "cli_cam" in names and "cameras" not in names
    assert staff.delete("/layers/sensors/datasets/cameras", headers=KEY).status_code == 404
    after = staff.get("/layers/sensors").json()
    assert after["provider"] == before["provider"] != "ProvC"  # the datasets it holds
    assert after["feature_count"] == before["feature_count"] + 2


def test_a_dataset_named_with_a_slash_is_deleted_over_http(staff: TestClient, fresh_url: str):
    """It could be imported but not deleted: the path was split at the decoded /."""
    csv = "device_id,kind,lon,lat\nS-1,camera,121.4005,31.2405\nS-2,camera,121.4006,31.2406\n"
    imported = staff.post(
        "/layers/sensors/import",
        files={"file": ("sl.csv", csv)},
        data={"dataset": "区/街道 2024"},
        headers=KEY,
    )
    assert imported.status_code == 200, imported.text
    path = "/layers/sensors/datasets/%E5%8C%BA%2F%E8%A1%97%E9%81%93%202024"
    deleted = staff.delete(path, headers=KEY)
    assert deleted.status_code == 200, deleted.text
    assert (deleted.json()["dataset"], deleted.json()["deleted"]) == ("区/街道 2024", 2)
    names = [r["dataset"] for r in staff.get("/layers/sensors/datasets").json()["datasets"]]
    assert names == ["demo"]
    gone = staff.delete(path, headers=KEY)
    assert gone.status_code == 404 and "no dataset '区/街道 2024'" in gone.json()["detail"]


def test_the_cli_refuses_control_characters_in_a_dataset_and_its_inventory(
    fresh_url: str, tmp_path: Path
):
    source = write_buildings(tmp_path / "ctl.geojson", 1)
    env = {"TWIN_DATABASE_URL": fresh_url}
    for flag in ("--dataset", "--provider", "--licence"):
        answer = run_twin("import", "buildings", str(source), flag, "a\tb", env=env)
        assert answer.returncode != 0, (flag, answer.stdout)
        assert "holds a control character ('\\t' at character 2)" in answer.stderr, answer.stderr
    with psycopg.connect(fresh_url) as conn:
        assert [r["dataset"] for r in list_datasets(conn, "buildings")] == ["demo"]
