"""Importing providers' data: every format, CRS and messy field, on the real data base."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import numpy as np
import psycopg
import pyogrio
import pytest
import shapely
from shapely.geometry import Point, Polygon

from layers import readers
from layers.ingest import ImportOptions, import_file
from layers.readers import archives, vector
from tests.helpers import run_twin, write_geojson
from twin.crs import from_storage
from twin.errors import InvalidInput, NotFound, NothingStored

LON, LAT = 121.4005, 31.2405  # inside the small demo district


def square(lon: float, lat: float, size: float = 0.0002) -> Polygon:
    return shapely.box(lon, lat, lon + size, lat + size)


def write_vector(path: Path, geoms: list, fields: dict[str, list], crs: str, driver: str) -> Path:
    names = list(fields)
    data = [np.array(fields[n], dtype=object) for n in names]
    geometry_type = geoms[0].geom_type + (" Z" if geoms[0].has_z else "")
    pyogrio.raw.write(
        str(path),
        shapely.to_wkb(np.array(geoms, dtype=object)),
        data,
        names,
        driver=driver,
        geometry_type=geometry_type,
        crs=crs,
    )
    return path


def count(conn: psycopg.Connection, query: str, *params: object) -> int:
    return conn.execute(query, params).fetchone()[0]


# -- buildings, fields, repair ---------------------------------------------------------------


def test_osm_style_buildings_import_with_no_mapping(fresh_url: str, tmp_path: Path):
    path = write_geojson(
        tmp_path / "osm.geojson",
        [
            ({"osm_id": "w1", "building": "apartments", "building:levels": "6", "name": "一号楼",
              "height": "18.5 m", "addr:street": "长寿路"}, square(LON, LAT)),
            ({"osm_id": "w2", "building": "yes", "building:levels": "3 floors"},
             square(LON + 0.001, LAT)),
            ({"osm_id": "w3", "building": "office", "height": "12,5", "roof:shape": "flat"},
             square(LON + 0.002, LAT)),
            ({"osm_id": "w4", "building": "retail", "height": "tall"}, square(LON + 0.003, LAT)),
            ({"osm_id": "w5"}, Point(LON, LAT)),
            ({"osm_id": "w6"}, None),
        ],
    )  # fmt: skip
    with psycopg.connect(fresh_url) as conn:
        report = import_file(conn, "buildings", path, ImportOptions(provider="OpenStreetMap"))
        rows = {
            r[0]: r[1:]
            for r in conn.execute(
                "SELECT source_id, name, use, height_m, height_estimated, floors, properties"
                " FROM buildings WHERE dataset = 'osm'"
            )
        }
        layer = conn.execute(
            "SELECT provider, source_crs, feature_count FROM layer_catalogue WHERE name = 'buildings'"
        ).fetchone()
        total = count(conn, "SELECT count(*) FROM buildings")
    assert (report.read, report.inserted, report.updated) == (6, 4, 0)
    assert {r.source_id: r.reason for r in report.rejected} == {
        "w5": "a Point cannot be a building footprint (it needs a polygon)",
        "w6": "no geometry (empty, missing or unreadable)",
    }
    assert rows["w1"][:5] == ("一号楼", "residential", 18.5, False, 6)
    assert rows["w1"][5] == {"addr:street": "长寿路"}  # unmapped fields are kept
    assert rows["w2"][2:5] == (9.6, True, 3)  # height estimated from floors (3.2 m), flagged
    assert rows["w3"][2] == 12.5 and rows["w3"][5] == {"roof:shape": "flat"}
    assert rows["w4"][2] is None and rows["w4"][5]["height"] == "tall"  # kept, not lost
    assert any("height -> height_m not understood" in note for note in report.notes)
    assert layer == ("OpenStreetMap", "EPSG:4326", total)


def test_reimport_updates_by_source_id_and_duplicates_nothing(fresh_url: str, tmp_path: Path):
    first = [({"id": f"B{i}", "height": 10 + i}, square(LON + i * 0.0005, LAT)) for i in range(5)]
    path = write_geojson(tmp_path / "survey.geojson", first)
    with psycopg.connect(fresh_url) as conn:
        import_file(conn, "buildings", path)
        changed = [({"id": "B0", "height": 99}, square(LON, LAT)), *first[1:]]
        again = import_file(conn, "buildings", write_geojson(path, changed))
        rows = dict(
            conn.execute("SELECT source_id, height_m FROM buildings WHERE dataset = 'survey'")
        )
    assert (again.inserted, again.updated) == (0, 5)
    assert len(rows) == 5 and rows["B0"] == 99 and rows["B4"] == 14


def test_invalid_geometry_is_repaired_and_flagged_degenerate_rejected(
    fresh_url: str, tmp_path: Path
):
    bowtie = Polygon(
        [(LON, LAT), (LON + 0.001, LAT + 0.001), (LON + 0.001, LAT), (LON, LAT + 0.001)]
    )
    flat = Polygon([(LON, LAT), (LON + 0.001, LAT), (LON + 0.002, LAT)])
    path = write_geojson(
        tmp_path / "messy.geojson", [({"id": "bow"}, bowtie), ({"id": "flat"}, flat)]
    )
    with psycopg.connect(fresh_url) as conn:
        report = import_file(conn, "buildings", path)
        stored = conn.execute(
            "SELECT ST_IsValid(geom), properties->>'_geometry_repaired', ST_NumGeometries(geom)"
            " FROM buildings WHERE dataset = 'messy' AND source_id = 'bow'"
        ).fetchone()
    assert report.repaired == 1 and report.inserted == 1
    assert stored[0] is True and stored[1].startswith("Self-intersection") and stored[2] == 2
    assert [(r.source_id, r.reason) for r in report.rejected] == [
        ("flat", "degenerate polygon (zero area)")
    ]


# -- formats and CRS -------------------------------------------------------------------------


def test_provider_shapefile_in_gauss_kruger_zone_imports_zipped_with_no_mapping(
    fresh_url: str, tmp_path: Path
):
    centres = [Point(LON + i * 0.001, LAT) for i in range(3)]
    gk_centres = from_storage(np.array(centres, dtype=object), "EPSG:4549")
    footprints = [shapely.box(p.x - 10, p.y - 10, p.x + 10, p.y + 10) for p in gk_centres]
    folder = tmp_path / "shp"
    folder.mkdir()
    write_vector(
        folder / "楼宇.shp",
        footprints,
        {"编号": ["A1", "A2", "A3"], "名称": ["甲楼", "乙楼", "丙楼"], "高度": ["24米", "3.5", ""],
         "层数": [8, 1, 12], "用途": ["住宅", "商业", "办公"]},
        crs="EPSG:4549",
        driver="ESRI Shapefile",
    )  # fmt: skip
    archive = tmp_path / "provider.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for part in folder.iterdir():
            z.write(part, part.name)
    with psycopg.connect(fresh_url) as conn:
        report = import_file(conn, "buildings", archive)
        rows = conn.execute(
            "SELECT source_id, name, use, height_m, height_estimated, floors,"
            " ST_X(ST_Centroid(geom)), ST_Y(ST_Centroid(geom))"
            " FROM buildings WHERE dataset = 'provider' ORDER BY source_id"
        ).fetchall()
    assert report.inserted == 3 and report.source_crs == "EPSG:4549"
    assert [r[:6] for r in rows] == [
        ("A1", "甲楼", "residential", 24.0, False, 8),
        ("A2", "乙楼", "commercial", 3.5, False, 1),
        ("A3", "丙楼", "office", 45.6, True, 12),
    ]
    for row, centre in zip(rows, centres, strict=True):
        assert abs(row[6] - centre.x) < 1e-7 and abs(row[7] - centre.y) < 1e-7
    assert not any("the file says its CRS" in n for n in report.notes)
    # The same CRS given again says nothing; another one overrides the .prj, and says so.
    with psycopg.connect(fresh_url) as conn:
        again = import_file(conn, "buildings", archive, ImportOptions(crs="EPSG:4549"))
        assert not any("the file says its CRS" in n for n in again.notes)
        conn.rollback()
        other = import_file(conn, "buildings", archive, ImportOptions(crs="EPSG:4548"))
        conn.rollback()
    assert "the file says its CRS is EPSG:4549; EPSG:4548 was used, as given" in other.notes
    # Degrees given over a projected file: refused, saying what the file itself says.
    refused = pytest.raises(InvalidInput, match=r"the file itself says EPSG:4549: leave out")
    with psycopg.connect(fresh_url) as conn, refused:
        import_file(conn, "buildings", archive, ImportOptions(crs="EPSG:4326"))


def test_geopackage_and_flatgeobuf_pipes_with_messy_values(fresh_url: str, tmp_path: Path):
    lines = [shapely.LineString([(LON, LAT), (LON + 0.001, LAT)]),
             shapely.LineString([(LON, LAT + 0.001), (LON + 0.001, LAT + 0.001)])]  # fmt: skip
    fields = {"管线类型": ["给水", "燃气"], "管径": ["DN300", "110mm"], "材质": ["球墨铸铁", "PE"],
              "埋深": ["1.2 m", "0,9"], "建设年代": ["1998-05-01", "2015"]}  # fmt: skip
    gpkg = write_vector(tmp_path / "pipes.gpkg", lines, fields, "EPSG:4326", "GPKG")
    fgb = write_vector(tmp_path / "pipes2.fgb", lines, fields, "EPSG:4326", "FlatGeobuf")
    with psycopg.connect(fresh_url) as conn:
        for path in (gpkg, fgb):
            report = import_file(conn, "pipes", path)
            assert report.inserted == 2, report
        rows = conn.execute(
            "SELECT network, diameter_mm, material, depth_m, install_year FROM pipes"
            " WHERE dataset IN ('pipes', 'pipes2') ORDER BY dataset, network DESC"
        ).fetchall()
    assert rows[:2] == [("water", 300.0, "球墨铸铁", 1.2, 1998), ("gas", 110.0, "PE", 0.9, 2015)]
    assert rows[2:] == rows[:2]


def test_csv_sensors_in_gcj02_and_bd09_land_on_true_positions(fresh_url: str, tmp_path: Path):
    from twin.crs import wgs84_to_bd09, wgs84_to_gcj02

    glon, glat = wgs84_to_gcj02(LON, LAT)
    blon, blat = wgs84_to_bd09(LON, LAT)
    (tmp_path / "amap.csv").write_text(
        f"设备编号,类型,单位,经度,纬度,上限\nWL-1,water_level,m,{glon:.9f},{glat:.9f},0.3\n",
        encoding="utf-8",
    )
    (tmp_path / "baidu.csv").write_text(
        f"device_id,kind,unit,lng,lat\nNS-1,noise,dB(A),{blon:.9f},{blat:.9f}\n", encoding="gb18030"
    )
    with psycopg.connect(fresh_url) as conn:
        import_file(conn, "sensors", tmp_path / "amap.csv", ImportOptions(crs="GCJ02"))
        import_file(conn, "sensors", tmp_path / "baidu.csv", ImportOptions(crs="BD09"))
        rows = conn.execute(
            "SELECT device_id, kind, unit_of_measure, threshold_high, ST_X(geom), ST_Y(geom)"
            " FROM sensors WHERE device_id IN ('WL-1', 'NS-1') ORDER BY device_id"
        ).fetchall()
    assert rows[0][:3] == ("NS-1", "noise", "dB(A)") and rows[1][:4] == (
        "WL-1",
        "water_level",
        "m",
        0.3,
    )
    for row in rows:
        # GCJ-02 inverts to 1e-9 degrees; the published BD-09 formulas to about 2 cm.
        assert abs(row[4] - LON) < 1e-6 and abs(row[5] - LAT) < 1e-6


def test_sensor_kinds_in_chinese_land_on_the_demo_words(fresh_url: str, tmp_path: Path):
    from layers.demo.generate import _SENSOR_KINDS
    from layers.kinds import SENSOR_KINDS

    assert set(_SENSOR_KINDS) <= set(SENSOR_KINDS)  # every demo kind has its synonyms
    (tmp_path / "iot.csv").write_text(
        "设备编号,设备类型,单位,经度,纬度\n"
        f"K-1,水位,m,{LON},{LAT}\nK-2, 烟感 ,dB/m,{LON},{LAT}\n"
        f"K-3, 无人机巡检 ,次,{LON},{LAT}\nK-4,PM2.5,µg/m3,{LON},{LAT}\n",
        encoding="utf-8",
    )
    with psycopg.connect(fresh_url) as conn:
        report = import_file(conn, "sensors", tmp_path / "iot.csv")
        kinds = dict(conn.execute("SELECT device_id, kind FROM sensors WHERE device_id LIKE 'K-%'"))
    assert report.inserted == 4 and not report.rejected
    assert kinds == {"K-1": "water_level", "K-2": "smoke", "K-3": "无人机巡检",
                     "K-4": "air_quality"}  # fmt: skip


def test_a_file_that_stores_nothing_leaves_the_inventory_as_it_was(fresh_url: str, tmp_path: Path):
    good = write_geojson(tmp_path / "good.geojson", [({"id": "1"}, square(LON, LAT))])
    bad = write_geojson(tmp_path / "bad.geojson", [({"id": "1"}, Point(LON, LAT))])
    with psycopg.connect(fresh_url) as conn:
        import_file(conn, "buildings", good, ImportOptions(dataset="iso", provider="测绘院"))
        conn.commit()
        before = conn.execute(
            "SELECT d.provider, d.source, d.imported_at, c.provider, c.updated_at"
            " FROM dataset_inventory d JOIN layer_catalogue c ON c.name = d.layer"
            " WHERE d.layer = 'buildings' AND d.dataset = 'iso'"
        ).fetchone()
        with pytest.raises(NothingStored, match="none of 1 features could be stored") as refused:
            import_file(conn, "buildings", bad, ImportOptions(dataset="iso", provider="BAD"))
        conn.commit()  # as the CLI does: nothing was stored, nothing is changed
        after = conn.execute(
            "SELECT d.provider, d.source, d.imported_at, c.provider, c.updated_at"
            " FROM dataset_inventory d JOIN layer_catalogue c ON c.name = d.layer"
            " WHERE d.layer = 'buildings' AND d.dataset = 'iso'"
        ).fetchone()
    report = refused.value.report
    assert report.stored == 0 and len(report.rejected) == 1
    assert after == before and before[0] == "测绘院"


def test_sensors_without_units_take_their_kind_s_unit(fresh_url: str, tmp_path: Path):
    from layers.demo.generate import _SENSOR_KINDS
    from layers.kinds import SENSOR_UNITS

    # The demo's sensors report in the units the import gives a file that says none.
    assert {kind: spec[1] for kind, spec in _SENSOR_KINDS.items()} == {
        kind: SENSOR_UNITS[kind] for kind in _SENSOR_KINDS
    }
    (tmp_path / "bare.csv").write_text(
        f"id,kind,lon,lat\nU-1,水位,{LON},{LAT}\nU-2,无人机巡检,{LON},{LAT}\n"
        f"U-3,noise,{LON},{LAT}\n"
    )
    with psycopg.connect(fresh_url) as conn:
        report = import_file(conn, "sensors", tmp_path / "bare.csv")
        units = dict(
            conn.execute("SELECT device_id, unit_of_measure FROM sensors WHERE dataset = 'bare'")
        )
    assert units == {"U-1": "m", "U-3": "dB(A)"}
    assert [r.source_id for r in report.rejected] == ["U-2"]  # an unknown kind: no unit known
    assert "2 unit_of_measure from kind" in report.notes
    # A --default fills only what the kind does not say: U-2 gets it, the others keep theirs.
    with psycopg.connect(fresh_url) as conn:
        import_file(conn, "sensors", tmp_path / "bare.csv",
                    ImportOptions(defaults={"unit_of_measure": "架次"}))  # fmt: skip
        units = dict(
            conn.execute("SELECT device_id, unit_of_measure FROM sensors WHERE dataset = 'bare'")
        )
    assert units == {"U-1": "m", "U-2": "架次", "U-3": "dB(A)"}


def test_csv_with_wkt_public_spaces_from_osm_tags(fresh_url: str, tmp_path: Path):
    park, pond = square(LON, LAT, 0.001), square(LON + 0.002, LAT, 0.0005)
    (tmp_path / "spaces.csv").write_text(
        f'id;name;leisure;natural;wkt\np1;中山公园;park;;"{park.wkt}"\nw1;;;water;"{pond.wkt}"\n'
    )
    with psycopg.connect(fresh_url) as conn:
        report = import_file(conn, "public_spaces", tmp_path / "spaces.csv")
        kinds = dict(
            conn.execute("SELECT source_id, kind FROM public_spaces WHERE dataset = 'spaces'")
        )
    assert report.inserted == 2 and kinds == {"p1": "park", "w1": "water"}


# -- refused files, nothing lost -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "crs", "message"),
    [
        ("lat95.geojson", {"type": "Point", "coordinates": [121.4, 95]}, None,
         "latitude beyond ±90"),
        ("metres.geojson", {"type": "Point", "coordinates": [633390, 3458440]}, "EPSG:4326",
         "look like metres"),
        ("nocrs.geojson", {"type": "Point", "coordinates": [633390, 3458440]}, None,
         "cannot be in EPSG:4326"),
        ("wrongzone.geojson", {"type": "Point", "coordinates": [121.4, 31.2]}, "EPSG:4549",
         r"cannot be in EPSG:4549: e.g. \(121.4, 31.2\): outside the area where it is used"),
        ("swapped.geojson", {"type": "Point", "coordinates": [31.2, 121.4]}, None,
         "are longitude and latitude swapped"),
    ],
)  # fmt: skip
def test_coordinates_that_cannot_be_in_the_crs_refuse_the_file(
    fresh_url: str, tmp_path: Path, name: str, content: dict, crs: str | None, message: str
):
    path = tmp_path / name
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"device_id": "X", "kind": "smoke", "unit": "ppm"},
         "geometry": content}]}))  # fmt: skip
    with psycopg.connect(fresh_url) as conn:
        before = count(conn, "SELECT count(*) FROM sensors")
        with pytest.raises(InvalidInput, match=message):
            import_file(conn, "sensors", path, ImportOptions(crs=crs))
        conn.rollback()
        assert count(conn, "SELECT count(*) FROM sensors") == before


def test_a_csv_without_a_crs_with_one_point_off_the_globe_keeps_the_rest(
    fresh_url: str, tmp_path: Path
):
    """Longitude/latitude is guessed when most rows fit it; the row at latitude 95 is
    rejected with its reason, not the whole file with a wrong one."""
    (tmp_path / "offglobe.csv").write_text(
        f"id,kind,unit,lon,lat\nL1,smoke,ppm,{LON},{LAT}\nL2,smoke,ppm,{LON},95\n"
        f"L3,smoke,ppm,{LON},{LAT}\n"
    )
    with psycopg.connect(fresh_url) as conn:
        report = import_file(conn, "sensors", tmp_path / "offglobe.csv")
    assert report.inserted == 2
    assert [(r.source_id, r.reason) for r in report.rejected] == [
        ("L2", "coordinates cannot be in EPSG:4326: the point: latitude 95 is beyond ±90")
    ]


def test_malformed_files_get_clear_messages(tmp_path: Path, monkeypatch):
    truncated = tmp_path / "cut.geojson"
    truncated.write_text('{"type": "FeatureCollection", "features": [{"type": "Feat')
    with pytest.raises(InvalidInput, match=r"cannot read cut.geojson"):
        readers.read_features(truncated)
    disguised = tmp_path / "data.shp"
    disguised.write_bytes(b"this is a scanned PDF, not a shapefile" * 10)
    with pytest.raises(InvalidInput, match=r"cannot read data.shp"):
        readers.read_features(disguised)
    no_coords = tmp_path / "list.csv"
    no_coords.write_text("name,height\nA,3\n")
    plain = readers.read_features(no_coords)  # a plain table: refused for a layer, see below
    assert plain.plain_table and set(plain.fields) == {"name", "height"}
    assert re.search(r"no coordinate columns.*name, height", readers.no_coordinates(plain))
    not_zip = tmp_path / "fake.zip"
    not_zip.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(InvalidInput, match="not a readable zip"):
        readers.read_features(not_zip)
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("big.geojson", b" " * 2_000_000)
    monkeypatch.setattr(archives, "MAX_UNZIPPED_BYTES", 1_000_000)
    with pytest.raises(InvalidInput, match="possible zip bomb"):
        readers.read_features(bomb)
    with pytest.raises(InvalidInput, match="no file at"):
        readers.read_features(tmp_path / "missing.gpkg")
    # A GeoPackage cut short, and a shapefile without its other files: said plainly.
    whole = write_vector(tmp_path / "whole.gpkg", [square(LON, LAT)] * 200, {"n": list(range(200))},
                         crs="EPSG:4326", driver="GPKG")  # fmt: skip
    cut = tmp_path / "cut.gpkg"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(InvalidInput, match=r"not a readable GeoPackage.*truncated") as refused:
        readers.read_features(cut)
    assert "sqlite" not in str(refused.value).lower()
    alone = tmp_path / "alone"
    alone.mkdir()
    write_vector(alone / "楼宇.shp", [square(LON, LAT)], {"n": [1]}, crs="EPSG:4326",
                 driver="ESRI Shapefile")  # fmt: skip
    (alone / "楼宇.shx").unlink()
    with pytest.raises(InvalidInput, match=r"several files.*one zip") as refused:
        readers.read_features(alone / "楼宇.shp")
    assert str(alone) not in str(refused.value)


def test_unknown_crs_and_unknown_layer_are_refused(fresh_url: str, tmp_path: Path):
    path = write_geojson(tmp_path / "b.geojson", [({"id": "1"}, square(LON, LAT))])
    with psycopg.connect(fresh_url) as conn:
        with pytest.raises(InvalidInput, match="unknown CRS 'EPSG:123456'"):
            import_file(conn, "buildings", path, ImportOptions(crs="EPSG:123456"))
        conn.rollback()
        with pytest.raises(NotFound, match="no layer 'castles'"):
            import_file(conn, "castles", path)


def test_mixed_geometry_types_keep_the_right_ones_and_exit_3(fresh_url: str, tmp_path: Path):
    path = write_geojson(
        tmp_path / "mixed.geojson",
        [({"id": "poly"}, square(LON, LAT)), ({"id": "pt"}, Point(LON, LAT)),
         ({"id": "line"}, shapely.LineString([(LON, LAT), (LON + 0.001, LAT)]))],
    )  # fmt: skip
    result = run_twin("import", "buildings", str(path), env={"TWIN_DATABASE_URL": fresh_url})
    assert result.returncode == 3, result.stderr
    assert "read 3, inserted 1" in result.stdout and "rejected 2" in result.stdout
    assert "a LineString cannot be a building footprint" in result.stdout
    assert "Traceback" not in result.stderr


def test_cli_names_the_flag_of_a_wrong_input_not_the_http_parameter(fresh_url: str, tmp_path: Path):
    path = tmp_path / "metres.csv"
    path.write_text("id,x,y\nc1,450000,3460000\n")  # metres, and the file does not say its CRS
    env = {"TWIN_DATABASE_URL": fresh_url}
    result = run_twin("import", "sensors", str(path), env=env)
    assert result.returncode == 1
    assert "does not say its CRS" in result.stderr
    assert result.stderr.strip().endswith("(option --crs)")
    assert "parameter crs" not in result.stderr and "over HTTP" not in result.stderr
    bad = run_twin("import", "sensors", str(path), "--set", "online=maybe", "--crs", "EPSG:4549",
                   env=env)  # fmt: skip
    assert bad.returncode == 1 and bad.stderr.strip().endswith("(option --set)"), bad.stderr
    unknown = run_twin("import", "sensors", str(path), "--crs", "EPSG:999999", env=env)
    assert unknown.returncode == 1 and "unknown CRS 'EPSG:999999'" in unknown.stderr
    assert unknown.stderr.strip().endswith("(option --crs)"), unknown.stderr
    gpkg = write_vector(
        tmp_path / "one.gpkg", [Point(LON, LAT)], {"id": ["g"]}, "EPSG:4326", "GPKG"
    )
    layer = run_twin("import", "sensors", str(gpkg), "--layer", "nope", env=env)
    assert layer.returncode == 1 and "has no layer 'nope'" in layer.stderr
    assert layer.stderr.strip().endswith("(option --layer)"), layer.stderr


def test_a_coordinate_that_is_no_number_is_said_so_not_blamed_on_the_crs(
    fresh_url: str, tmp_path: Path
):
    for bad in ("Infinity", "1e400", "1.21e32"):
        path = tmp_path / "inf.geojson"
        path.write_text(
            '{"type": "FeatureCollection", "features": [{"type": "Feature", "id": "i",'
            f' "properties": {{}}, "geometry": {{"type": "Point", "coordinates": [{bad}, 31.25]}}}}]}}'
        )
        with psycopg.connect(fresh_url) as conn, pytest.raises(NothingStored) as refused:
            import_file(conn, "sensors", path, ImportOptions(values={"kind": "camera"}))
        reasons = " ".join(r.reason for r in refused.value.report.rejected)
        assert "CRS" not in str(refused.value) + reasons, (bad, str(refused.value), reasons)
        assert "longitude" in reasons, (bad, reasons)


def test_cli_refuses_a_bad_file_with_one_line_and_exit_1(fresh_url: str, tmp_path: Path):
    path = tmp_path / "cut.geojson"
    path.write_text('{"type": "FeatureCollection", "features": [')
    result = run_twin("import", "buildings", str(path), env={"TWIN_DATABASE_URL": fresh_url})
    assert result.returncode == 1
    assert result.stderr.strip().startswith("twin: error: cannot read cut.geojson")
    assert "Traceback" not in result.stderr


def test_cli_mapping_file_nested_too_deeply_is_one_line_and_exit_1(fresh_url: str, tmp_path: Path):
    """The decoder's RecursionError printed a Python traceback."""
    deep = tmp_path / "deep.json"
    deep.write_text('{"a":' * 5000 + "1" + "}" * 5000)
    csv = tmp_path / "cameras.csv"
    csv.write_text(f"device_id,kind,lon,lat\nc1,camera,{LON},{LAT}\n")
    result = run_twin("import", "sensors", str(csv), "--mapping", str(deep),
                      env={"TWIN_DATABASE_URL": fresh_url})  # fmt: skip
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == f"twin: error: cannot read the mapping file {deep}: nested too deeply"
    )


def test_mapping_and_fixed_values(fresh_url: str, tmp_path: Path):
    path = write_geojson(
        tmp_path / "lines.geojson",
        [
            (
                {"GID": "L1", "SIZE_X": "DN600", "H": "2.4"},
                shapely.LineString([(LON, LAT), (LON + 0.001, LAT)]),
            )
        ],
    )
    mapping = {"source_id": "GID", "diameter_mm": "SIZE_X", "depth_m": "H"}
    with psycopg.connect(fresh_url) as conn:
        with pytest.raises(InvalidInput, match=r"names a field lines\.geojson does not have"):
            import_file(conn, "pipes", path, ImportOptions(mapping={"diameter_mm": "DIAM"}))
        conn.rollback()
        report = import_file(
            conn, "pipes", path, ImportOptions(mapping=mapping, values={"network": "雨水"})
        )
        row = conn.execute(
            "SELECT network, diameter_mm, depth_m, properties FROM pipes WHERE source_id = 'L1'"
        ).fetchone()
    assert report.inserted == 1 and row == ("drainage", 600.0, 2.4, {})


# -- jurisdictions and units -----------------------------------------------------------------


def test_jurisdiction_import_reports_gaps_overlaps_and_strays(fresh_url: str, tmp_path: Path):
    parent = shapely.box(121.50, 31.30, 121.52, 31.32)
    path = write_geojson(
        tmp_path / "grids.geojson",
        [
            ({"code": "T1", "name": "测试街道", "level": "街道"}, parent),
            ({"code": "T1G1", "name": "一网格", "level": "网格", "parent_code": "T1"},
             shapely.box(121.50, 31.30, 121.511, 31.32)),
            ({"code": "T1G2", "name": "二网格", "level": "网格", "parent_code": "T1"},
             shapely.box(121.510, 31.30, 121.518, 31.32)),  # overlaps G1, leaves a gap east
            ({"code": "T1G3", "name": "三网格", "level": "网格", "parent_code": "T1"},
             shapely.box(121.518, 31.31, 121.53, 31.32)),  # reaches outside its parent
            ({"code": "X9", "name": "孤儿", "level": "grid", "parent_code": "NOPE"},
             shapely.box(121.6, 31.3, 121.61, 31.31)),
        ],
    )  # fmt: skip
    with psycopg.connect(fresh_url) as conn:
        report = import_file(conn, "jurisdictions", path)
    assert report.inserted == 4
    assert [r.source_id for r in report.rejected] == ["X9"]
    assert "NOPE" in report.rejected[0].reason
    coverage = report.coverage
    assert [g["parent"] for g in coverage["gaps"]] == ["T1"]
    assert coverage["gaps"][0]["gap_m2"] == pytest.approx(
        0.002 * 0.01 * 111_320**2 * 0.855, rel=0.05
    )
    assert [(o["a"], o["b"]) for o in coverage["overlaps"]] == [("T1G1", "T1G2")]
    assert coverage["overlaps"][0]["overlap_m2"] == pytest.approx(
        0.001 * 0.02 * 111_320**2 * 0.855, rel=0.05
    )
    assert [o["code"] for o in coverage["outside_parent"]] == ["T1G3"]
    assert coverage["parents_checked"] == 1  # T1: its grids have no children to check


def test_coverage_counts_the_parents_checked_not_the_jurisdictions(fresh_url: str, tmp_path: Path):
    """Six jurisdictions under two parents that they tile exactly: two parents checked."""
    features = []
    for s, west in enumerate((121.60, 121.62)):
        street = f"C{s}"
        features.append(
            (
                {"code": street, "name": f"街道{s}", "level": "街道"},
                shapely.box(west, 31.40, west + 0.02, 31.42),
            )
        )
        features += [({"code": f"{street}G{g}", "name": f"网格{g}", "level": "网格",
                       "parent_code": street},
                      shapely.box(west + g * 0.01, 31.40, west + (g + 1) * 0.01, 31.42))
                     for g in range(2)]  # fmt: skip
    path = write_geojson(tmp_path / "tiled.geojson", features)
    result = run_twin("import", "jurisdictions", str(path), env={"TWIN_DATABASE_URL": fresh_url})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "coverage: no gaps or overlaps under 2 parent(s)" in result.stdout


def test_units_need_a_known_jurisdiction(fresh_url: str, tmp_path: Path):
    path = tmp_path / "units.csv"
    path.write_text(
        "单位编码,单位名称,单位类型,辖区代码,电话,lon,lat\n"
        "U1,测试水务所,局,310199000000,021-1234,121.40,31.24\n"
        "U2,无名队,中队,999,,,\n"
        "U3,外星办,alien,310199000000,,,\n"
    )
    with psycopg.connect(fresh_url) as conn:
        district = conn.execute(
            "SELECT code FROM jurisdictions WHERE level = 'district'"
        ).fetchone()[0]
        path.write_text(path.read_text().replace("310199000000", district))
        report = import_file(conn, "units", path)
        row = conn.execute(
            "SELECT name, kind, jurisdiction_code FROM units WHERE code = 'U1'"
        ).fetchone()
    assert report.inserted == 1 and row == ("测试水务所", "department", district)
    assert [r.source_id for r in report.rejected] == ["U2", "U3"]
    assert "999" in report.rejected[0].reason
    # A kind the file gives but that is not a kind of unit: said so, not "no kind".
    assert report.rejected[1].reason.startswith("kind 'alien' is not one of centre, department")


# -- EPANET, terrain -------------------------------------------------------------------------

EPANET = """
[OPTIONS]
Units LPS
[JUNCTIONS]
J1 4.5 1
J2 4.2 2
J3 3.9 1
[RESERVOIRS]
R1 40
[PIPES]
P1 R1 J1 300 400 100 0 Open
P2 J1 J2 250 300 100 0 Open
P3 J2 J3 200 200 100 0 Open
[VALVES]
V1 J3 J1 150 PRV 30 0
[COORDINATES]
J1 633390 3458440
J2 633640 3458440
J3 633640 3458240
R1 633090 3458440
[VERTICES]
P3 633650 3458340
[END]
"""


def test_epanet_network_imports_nodes_valves_and_tied_pipes(fresh_url: str, tmp_path: Path):
    path = tmp_path / "net.inp"
    path.write_text(EPANET)
    with psycopg.connect(fresh_url) as conn:
        with pytest.raises(InvalidInput, match="do not say their CRS"):
            import_file(conn, "pipes", path)
        conn.rollback()
        report = import_file(conn, "pipes", path, ImportOptions(crs="EPSG:4549"))
        nodes = dict(conn.execute("SELECT source_id, kind FROM pipe_nodes WHERE dataset = 'net'"))
        pipes = conn.execute(
            "SELECT p.source_id, p.diameter_mm, a.source_id, b.source_id, ST_NPoints(p.geom)"
            " FROM pipes p JOIN pipe_nodes a ON a.id = p.from_node_id"
            " JOIN pipe_nodes b ON b.id = p.to_node_id WHERE p.dataset = 'net' ORDER BY 1"
        ).fetchall()
        j1 = conn.execute(
            "SELECT ST_X(geom), ST_Y(geom) FROM pipe_nodes WHERE dataset = 'net' AND source_id = 'J1'"
        ).fetchone()
    assert report.inserted == 5 and report.related[0].inserted == 5
    assert nodes == {
        "J1": "junction",
        "J2": "junction",
        "J3": "junction",
        "R1": "source",
        "V1": "valve",
    }
    assert pipes == [("P1", 400.0, "R1", "J1", 2), ("P2", 300.0, "J1", "J2", 2),
                     ("P3", 200.0, "J2", "J3", 3), ("V1-a", 150.0, "J3", "V1", 2),
                     ("V1-b", 150.0, "V1", "J1", 2)]  # fmt: skip
    assert abs(j1[0] - 121.40015) < 1e-4 and abs(j1[1] - 31.2401) < 1e-4


def test_terrain_fills_missing_elevations(fresh_url: str, tmp_path: Path):
    import rasterio
    from rasterio.transform import from_origin

    from layers.terrain import import_dem

    x0, y0, cell = 632000, 3462000, 10
    xs = x0 + (np.arange(500) + 0.5) * cell
    ys = y0 - (np.arange(600) + 0.5) * cell
    grid_x, grid_y = np.meshgrid(xs, ys)
    z = (3.0 + (grid_x - x0) * 0.001 + (y0 - grid_y) * 0.0005).astype("float32")
    dem = tmp_path / "dem.tif"
    with rasterio.open(dem, "w", driver="GTiff", width=500, height=600, count=1, dtype="float32",
                       crs="EPSG:4549", transform=from_origin(x0, y0, cell, cell)) as out:  # fmt: skip
        out.write(z, 1)
    buildings = write_geojson(
        tmp_path / "nobase.geojson", [({"id": "n1"}, square(121.40015, 31.2401, 0.00001))]
    )
    with psycopg.connect(fresh_url) as conn:
        conn.execute(
            "UPDATE sensors SET elevation_m = NULL WHERE id IN (SELECT id FROM sensors LIMIT 5)"
        )
        demo_tiles = conn.execute("SELECT count(*) FROM terrain_tiles").fetchone()[0]
        result = import_dem(conn, dem)  # over the demo's own DEM: the latest import counts
        assert result["sampled"]["sensors"] == 5
        import_file(conn, "buildings", buildings)  # after the terrain: filled on import
        base = conn.execute(
            "SELECT base_elevation_m FROM buildings WHERE dataset = 'nobase'"
        ).fetchone()[0]
        listed = conn.execute(
            "SELECT kind, feature_count FROM layer_catalogue WHERE name = 'terrain'"
        ).fetchone()
    assert base == pytest.approx(6.17, abs=0.02)
    assert listed == ("terrain", result["tiles"] + demo_tiles)


def test_a_failure_during_the_write_leaves_the_layer_as_it_was(
    fresh_url: str, tmp_path: Path, monkeypatch
):
    from twin import bulk

    path = write_geojson(
        tmp_path / "half.geojson",
        [({"id": f"h{i}"}, square(LON + i * 0.0005, LAT)) for i in range(3)],
    )
    with psycopg.connect(fresh_url) as conn:
        before = conn.execute("SELECT count(*), max(updated_at) FROM buildings").fetchone()

        def write_then_fail(*args, **kwargs):
            stream_write(*args, **kwargs)
            raise psycopg.OperationalError("connection lost half way")

        stream_write = bulk.CopyStream.write
        monkeypatch.setattr(bulk.CopyStream, "write", write_then_fail)
        with pytest.raises(psycopg.OperationalError):
            import_file(conn, "buildings", path)
        conn.rollback()
        assert conn.execute("SELECT count(*), max(updated_at) FROM buildings").fetchone() == before


def test_negative_heights_and_diameters_are_not_taken(fresh_url: str, tmp_path: Path):
    path = write_geojson(
        tmp_path / "neg.geojson", [({"id": "n", "height": "-3 m"}, square(LON, LAT))]
    )
    with psycopg.connect(fresh_url) as conn:
        report = import_file(conn, "buildings", path)
        row = conn.execute(
            "SELECT height_m, properties FROM buildings WHERE dataset = 'neg'"
        ).fetchone()
    assert report.inserted == 1 and row == (None, {"height": "-3 m"})
    assert any("cannot be below zero" in note for note in report.notes)


def test_implausible_diameters_depths_and_elevations_are_not_taken(fresh_url: str, tmp_path: Path):
    """Every number with a physical range: beyond it, "not understood" and kept as given."""
    line = f"LINESTRING ({LON} {LAT}, {LON + 0.001} {LAT})"
    path = tmp_path / "far.csv"
    path.write_text("id;network;diameter;depth;invert_start;wkt\n"
                    f"ok;water;DN300;1.2;-4.5;{line}\n"
                    f"wide;water;20 m;1.2;3;{line}\n"
                    f"deep;water;300;1e6;3;{line}\n"
                    f"low;water;300;1.2;-1e5;{line}\n")  # fmt: skip
    nodes = tmp_path / "nodes.csv"
    nodes.write_text(f"id,network,kind,ground_elevation,depth,lon,lat\n"
                     f"n1,water,valve,12000,250,{LON},{LAT}\n")  # fmt: skip
    with psycopg.connect(fresh_url) as conn:
        report = import_file(conn, "pipes", path)
        node_report = import_file(conn, "pipe_nodes", nodes)
        rows = {r[0]: r[1:] for r in conn.execute(
            "SELECT source_id, diameter_mm, depth_m, invert_start_m, properties FROM pipes"
            " WHERE dataset = 'far'")}  # fmt: skip
        node = conn.execute(
            "SELECT ground_elevation_m, depth_m, properties FROM pipe_nodes WHERE source_id = 'n1'"
        ).fetchone()
    assert report.inserted == 4 and not report.rejected
    assert rows["ok"][:3] == (300.0, 1.2, -4.5)
    assert rows["wide"][0] is None and rows["wide"][3] == {"diameter": "20 m"}
    assert rows["deep"][1] is None and rows["deep"][3] == {"depth": "1e6"}
    assert rows["low"][2] is None and rows["low"][3] == {"invert_start": "-1e5"}
    notes = " ".join(report.notes)
    assert "wider than any pipe (over 10,000 mm): '20 m'" in notes
    assert "deeper than anything is laid (-200 to 200 m): '1e6'" in notes
    assert "an elevation beyond any on land (-500 to 9,000 m): '-1e5'" in notes
    # 12,000 m is not taken; the demo's ground under the node is (2.5 to 5.5 m).
    assert node_report.inserted == 1 and node[1] is None and 2.5 <= node[0] <= 5.5
    assert node[2] == {"ground_elevation": "12000", "depth": "250"}


def test_gbk_shapefile_without_cpg_reads_chinese(fresh_url: str, tmp_path: Path):
    folder = tmp_path / "gbk"
    folder.mkdir()
    box = shapely.box(633380, 3458430, 633400, 3458450)
    pyogrio.raw.write(
        str(folder / "楼宇.shp"), shapely.to_wkb(np.array([box], dtype=object)),
        [np.array(["甲楼"], dtype=object), np.array(["24米"], dtype=object)], ["名称", "高度"],
        driver="ESRI Shapefile", geometry_type="Polygon", crs="EPSG:4549", encoding="GBK",
    )  # fmt: skip
    for cpg in folder.glob("*.cpg"):
        cpg.unlink()  # as providers send them: no word on the encoding
    with psycopg.connect(fresh_url) as conn:
        import_file(conn, "buildings", folder / "楼宇.shp")
        row = conn.execute("SELECT name, height_m FROM buildings WHERE dataset = '楼宇'").fetchone()
    assert row == ("甲楼", 24.0)


def test_a_layer_the_file_does_not_have_is_named_with_those_it_has(tmp_path: Path):
    path = write_vector(
        tmp_path / "one.gpkg", [square(LON, LAT)], {"id": ["a"]}, "EPSG:4326", "GPKG"
    )
    with pytest.raises(InvalidInput, match=r"one.gpkg has no layer 'two' \(its layers: one\)"):
        readers.read_features(path, layer="two")


def test_a_zip_of_several_datasets_asks_which(fresh_url: str, tmp_path: Path):
    a = write_geojson(tmp_path / "a.geojson", [({"id": "1"}, square(LON, LAT))])
    b = write_geojson(tmp_path / "b.geojson", [({"id": "2"}, square(LON, LAT))])
    archive = tmp_path / "two.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(a, "a.geojson")
        z.write(b, "b.geojson")
    with pytest.raises(InvalidInput, match=r"several datasets \(a.geojson, b.geojson\)"):
        readers.read_features(archive)
    assert list(readers.read_features(archive, layer="b").fids) == ["0"]


def test_a_zip_with_utf8_names_not_flagged_as_such_is_read_by_its_names(
    tmp_path: Path, monkeypatch
):
    """Info-ZIP and many Chinese tools store UTF-8 names without the UTF-8 flag: members
    are still chosen, listed and named as the person wrote them."""
    folder = tmp_path / "shp"
    folder.mkdir()
    for stem in ("房屋", "楼宇"):
        write_vector(folder / f"{stem}.shp", [square(LON, LAT)], {"编号": [stem]},
                     crs="EPSG:4326", driver="ESRI Shapefile")  # fmt: skip
    archive = tmp_path / "two.zip"
    # Written as those tools do: the name's UTF-8 bytes, flag not set.
    monkeypatch.setattr(
        zipfile.ZipInfo,
        "_encodeFilenameFlags",
        lambda info: (info.filename.encode("utf-8"), info.flag_bits & ~0x800),
    )
    with zipfile.ZipFile(archive, "w") as z:
        for part in sorted(folder.iterdir()):
            z.write(part, part.name)
    monkeypatch.undo()
    with zipfile.ZipFile(archive) as z:
        assert "房屋.shp" not in z.namelist()  # zipfile itself reads them as CP437
    with pytest.raises(InvalidInput, match=r"several datasets \(房屋.shp, 楼宇.shp\)"):
        readers.read_features(archive)
    frame = readers.read_features(archive, layer="房屋")
    assert frame.source == "two.zip/房屋.shp" and len(frame) == 1


def test_without_a_source_id_the_report_warns(fresh_url: str, tmp_path: Path):
    path = write_geojson(tmp_path / "anon.geojson", [({"height": 3}, square(LON, LAT))])
    with psycopg.connect(fresh_url) as conn:
        report = import_file(conn, "buildings", path)
    assert any("matched by their row" in note for note in report.notes)


def test_default_fills_only_the_gaps(fresh_url: str, tmp_path: Path):
    (tmp_path / "s.csv").write_text(
        "device_id,kind,unit,lon,lat\nA,temp,℃,121.40,31.24\nB,custom_probe,,121.41,31.24\n"
        "C,temp,,121.42,31.24\n"
    )
    with psycopg.connect(fresh_url) as conn:
        report = import_file(
            conn, "sensors", tmp_path / "s.csv", ImportOptions(defaults={"unit_of_measure": "m"})
        )
        units = dict(
            conn.execute(
                "SELECT device_id, unit_of_measure FROM sensors WHERE device_id IN ('A', 'B', 'C')"
            )
        )
    # The file's unit first, then the one its kind has, then the default.
    assert report.inserted == 3 and units == {"A": "℃", "B": "m", "C": "℃"}


def test_first_feature_of_a_new_scene_can_be_a_single_point(fresh_url: str, tmp_path: Path):
    from layers.scenes import create_scene

    (tmp_path / "one.csv").write_text("id,lon,lat\nr1,121.40,31.24\n")
    with psycopg.connect(fresh_url) as conn:
        create_scene(conn, "reports", geometry_type="Point", properties={})
        report = import_file(conn, "reports", tmp_path / "one.csv")
        extent = conn.execute(
            "SELECT ST_GeometryType(extent) FROM layer_catalogue WHERE name = 'reports'"
        ).fetchone()[0]
    assert report.inserted == 1 and extent == "ST_Polygon"


def test_geometries_passed_through_arrive_exactly(fresh_url: str, tmp_path: Path):
    polygon = Polygon([(LON, LAT), (LON + 0.0003, LAT), (LON + 0.0003, LAT + 0.0002), (LON, LAT)])
    line = shapely.LineString([(LON, LAT), (LON + 0.001, LAT + 0.0005), (LON + 0.002, LAT)])
    point = Point(LON + 0.0001, LAT + 0.0001)
    gpkg = tmp_path / "exact.gpkg"
    for geom, name in ((polygon, "b"), (line, "p"), (point, "s")):
        write_vector(tmp_path / f"{name}.gpkg", [geom], {"id": ["x1"], "network": ["gas"],
                     "device_id": ["EX-1"], "kind": ["smoke"], "unit": ["ppm"]}, "EPSG:4326", "GPKG")  # fmt: skip
    with psycopg.connect(fresh_url) as conn:
        for layer, name, geom in (
            ("buildings", "b", polygon),
            ("pipes", "p", line),
            ("sensors", "s", point),
        ):
            assert import_file(conn, layer, tmp_path / f"{name}.gpkg").inserted == 1
            stored = conn.execute(
                f"SELECT ST_AsBinary(geom), ST_SRID(geom) FROM {layer} WHERE dataset = %s",
                (name,),
            ).fetchone()
            assert stored[1] == 4326
            back = shapely.from_wkb(stored[0])
            expected = shapely.MultiPolygon([geom]) if layer == "buildings" else geom
            assert back.equals_exact(expected, tolerance=0), layer
    assert not gpkg.exists()


# -- large files, a batch at a time ------------------------------------------------------------


def test_a_file_read_in_batches_is_one_import(fresh_url: str, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(vector, "BATCH_ROWS", 100)  # 250 features: three batches
    ids = [f"g{i}" for i in range(250)]
    ids[180] = "g10"  # the same source id again, two batches later
    boxes = [square(LON + (i % 50) * 0.0003, LAT + (i // 50) * 0.0003, 0.0001) for i in range(250)]
    path = write_vector(
        tmp_path / "grid.gpkg", boxes, {"id": ids, "floors": ["4"] * 250}, "EPSG:4326", "GPKG"
    )
    steps: list[tuple[str, int, int]] = []
    with psycopg.connect(fresh_url) as conn:
        report = import_file(conn, "buildings", path, progress=lambda *step: steps.append(step))
        stored = count(conn, "SELECT count(*) FROM buildings WHERE dataset = 'grid'")
        layer = conn.execute(
            "SELECT c.feature_count, ST_HausdorffDistance(c.extent, ST_Extent(b.geom)::geometry)"
            " FROM layer_catalogue c, buildings b WHERE c.name = 'buildings'"
            " GROUP BY c.feature_count, c.extent"
        ).fetchone()
        total = count(conn, "SELECT count(*) FROM buildings")
        again = import_file(conn, "buildings", path)
        after = count(conn, "SELECT count(*) FROM buildings WHERE dataset = 'grid'")
    assert (report.read, report.inserted, stored) == (250, 249, 249)
    assert [(r.source_id, r.reason) for r in report.rejected] == [
        ("g10", "duplicate source_id 'g10' (first at feature 11)")
    ]
    assert steps == [("import buildings", n, 250) for n in (100, 200, 250)]
    # The inventory's count and extent, kept up to date without a scan.
    assert layer[0] == total and layer[1] < 1e-5
    assert (again.inserted, again.updated, after) == (0, 249, 249)


def test_a_bad_later_batch_stores_nothing(fresh_url: str, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(vector, "BATCH_ROWS", 100)
    # The third batch is in metres although the file says degrees: the whole file is refused.
    geoms = [square(LON + i * 0.0003, LAT) for i in range(200)]
    geoms += [shapely.box(633380 + i, 3458430, 633390 + i, 3458440) for i in range(100)]
    ids = [f"m{i}" for i in range(300)]
    path = write_vector(tmp_path / "mixed.gpkg", geoms, {"id": ids}, "EPSG:4326", "GPKG")
    with psycopg.connect(fresh_url) as conn:
        before = count(conn, "SELECT count(*) FROM buildings")
        with pytest.raises(InvalidInput, match=r"cannot be in EPSG:4326.*look like metres"):
            import_file(conn, "buildings", path)
        conn.rollback()
        assert count(conn, "SELECT count(*) FROM buildings") == before


def test_three_dimensional_footprints_are_stored_flat(fresh_url: str, tmp_path: Path):
    lifted = shapely.force_3d(square(LON, LAT), 4.5)
    path = write_vector(tmp_path / "z.gpkg", [lifted], {"id": ["z1"]}, "EPSG:4326", "GPKG")
    with psycopg.connect(fresh_url) as conn:
        report = import_file(conn, "buildings", path)
        dims = conn.execute(
            "SELECT ST_NDims(geom), ST_GeometryType(geom) FROM buildings WHERE dataset = 'z'"
        ).fetchone()
    assert report.inserted == 1 and dims == (2, "ST_MultiPolygon")


def test_a_large_first_load_builds_the_indexes_after(fresh_url: str, tmp_path: Path, monkeypatch):
    from layers.ingest import pipeline, writer

    monkeypatch.setattr(writer, "BULK_LOAD_MIN", 100)  # 250 features count as large here
    monkeypatch.setattr(vector, "BATCH_ROWS", 100)
    set_aside = writer.LayerWriter._set_indexes_aside
    calls: list[int] = []

    def counted(layer_writer: writer.LayerWriter) -> None:
        calls.append(1)
        set_aside(layer_writer)

    monkeypatch.setattr(writer.LayerWriter, "_set_indexes_aside", counted)
    boxes = [square(LON + (i % 50) * 0.0003, LAT + (i // 50) * 0.0003, 0.0001) for i in range(250)]
    path = write_vector(
        tmp_path / "first.gpkg", boxes, {"id": [f"f{i}" for i in range(250)]}, "EPSG:4326", "GPKG"
    )
    indexes = "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'buildings'"
    with psycopg.connect(fresh_url) as conn:
        conn.execute("DELETE FROM buildings")  # an empty layer: the first load of a city
        conn.commit()
        before = sorted(conn.execute(indexes).fetchall())
        # A failure after the indexes were set aside puts them back with everything else.
        with monkeypatch.context() as failing:
            failing.setattr(pipeline, "_update_catalogue", _fail)
            with pytest.raises(RuntimeError):
                import_file(conn, "buildings", path)
        conn.rollback()
        assert sorted(conn.execute(indexes).fetchall()) == before
        assert count(conn, "SELECT count(*) FROM buildings") == 0

        steps: list[tuple[str, int, int]] = []
        report = import_file(conn, "buildings", path, progress=lambda *s: steps.append(s))
        assert report.inserted == 250 and len(calls) == 2  # both tries took the bulk path
        assert steps[-2:] == [("build the spatial index", 0, 1), ("build the spatial index", 1, 1)]
        assert sorted(conn.execute(indexes).fetchall()) == before
        # The unique key is back, so a re-import updates instead of duplicating.
        again = import_file(conn, "buildings", path)
        assert (again.inserted, again.updated) == (0, 250) and len(calls) == 2
        found = count(
            conn,
            "SELECT count(*) FROM buildings WHERE geom && ST_MakeEnvelope(%s, %s, %s, %s, 4326)",
            LON, LAT, LON + 0.0002, LAT + 0.0002,
        )  # fmt: skip
    assert found == 1


def _fail(*args: object, **kwargs: object) -> None:
    raise RuntimeError("the lights went out")


def test_two_layers_of_one_geopackage_are_two_datasets(fresh_url: str, tmp_path: Path):
    """Water and gas pipes in one GeoPackage, both numbered from 1: importing each layer
    keeps both, instead of the second overwriting the first."""
    path = tmp_path / "net2.gpkg"
    line = shapely.LineString([(LON, LAT), (LON + 0.001, LAT)])
    for layer in ("给水", "燃气"):
        pyogrio.raw.write(
            str(path), shapely.to_wkb(np.array([line], dtype=object)),
            [np.array(["DN300"], dtype=object)], ["管径"], layer=layer, driver="GPKG",
            geometry_type="LineString", crs="EPSG:4326", append=path.exists(),
        )  # fmt: skip
    with psycopg.connect(fresh_url) as conn:
        for network in ("给水", "燃气"):
            report = import_file(
                conn, "pipes", path, ImportOptions(layer=network, values={"network": network})
            )
            assert report.inserted == 1 and report.updated == 0
            assert f"(dataset net2:{network})" in report.summary()
        rows = conn.execute(
            "SELECT dataset, network, diameter_mm FROM pipes WHERE dataset LIKE 'net2%'"
            " ORDER BY network"
        ).fetchall()
    assert rows == [("net2:燃气", "gas", 300.0), ("net2:给水", "water", 300.0)]


# -- coordinates and values the data base cannot take: rejected one by one in a file -------


def test_a_file_with_coordinates_that_are_no_number_or_off_the_globe_keeps_the_rest(
    fresh_url: str, tmp_path: Path
):
    """Every vertex of every geometry type is checked: a NaN in a hole, an infinity in the
    second part of a multipolygon, latitude 95 in a ring. Each such feature is rejected with
    its id and the coordinate named; the rest is imported, and the layer reads whole."""
    nan, inf = float("nan"), float("inf")
    hole = [(LON + 0.00005, LAT + 0.00005), (nan, LAT + 0.00005), (LON + 0.00005, LAT + 0.0001)]
    geoms = [
        square(LON, LAT),
        Polygon(square(LON, LAT).exterior.coords, [hole]),
        shapely.MultiPolygon([square(LON, LAT), Polygon([(LON, LAT), (inf, LAT), (LON, LAT + 1)])]),
        Polygon([(LON, LAT), (LON + 0.001, LAT), (LON, 95.0)]),
        square(LON + 0.001, LAT),
    ]
    path = write_vector(tmp_path / "holes.gpkg", geoms, {"id": ["ok1", "hole", "multi", "far",
                                                               "ok2"]},
                        crs="EPSG:4326", driver="GPKG")  # fmt: skip
    result = run_twin("import", "buildings", str(path), "--json",
                      env={"TWIN_DATABASE_URL": fresh_url})  # fmt: skip
    assert result.returncode == 3, result.stderr
    report = json.loads(result.stdout)
    assert report["inserted"] == 2
    assert {r["source_id"]: r["reason"] for r in report["rejected"]} == {
        "hole": "coordinate 1 of ring 1 (a hole): longitude NaN is not a number",
        "multi": "coordinate 1 of ring 0 of part 1: longitude inf is not a finite number",
        "far": "coordinates cannot be in EPSG:4326: coordinate 2 of ring 0: latitude 95 is "
        "beyond ±90",
    }
    with psycopg.connect(fresh_url) as conn:
        assert count(conn, "SELECT count(*) FROM buildings WHERE NOT ST_IsValid(geom)") == 0
        assert count(conn, "SELECT count(*) FROM buildings WHERE dataset = 'holes'") == 2


def test_a_projected_file_with_a_vertex_outside_its_zone_rejects_that_feature(
    fresh_url: str, tmp_path: Path
):
    """One pipe of a Gauss-Krüger file whose end lies a world away (a typing slip of
    digits): its bounding box's centre may be in the zone, its vertex is not."""
    lines = [
        shapely.LineString([(633390, 3458440), (633640, 3458440)]),
        shapely.LineString([(633390, 3458440), (633640, 3458440), (-633390000, 3458440)]),
        shapely.LineString([(633640, 3458440), (633640, 3458240)]),
        shapely.LineString([(633640, 3458240), (633390, 3458240)]),
    ]
    path = write_vector(tmp_path / "gk.gpkg", lines,
                        {"id": ["p1", "slip", "p3", "p4"], "network": ["water"] * 4},
                        crs="EPSG:4549", driver="GPKG")  # fmt: skip
    with psycopg.connect(fresh_url) as conn:
        report = import_file(conn, "pipes", path)
    assert report.inserted == 3
    [rejected] = report.rejected
    assert rejected.source_id == "slip"
    assert rejected.reason.startswith("coordinates cannot be in EPSG:4549: coordinate 2: ")
    assert "x -633390000, y 3458440" in rejected.reason


def test_nul_characters_in_a_file_reject_their_features_naming_the_field(
    fresh_url: str, tmp_path: Path
):
    """PostgreSQL's text and jsonb refuse NUL: a value, a key in a JSON value, an option."""
    csv = tmp_path / "nul.csv"
    csv.write_text("device_id,kind,name,note,lon,lat\n"
                   f"a,smoke,甲,fine,{LON},{LAT}\nb,smoke,乙\x00,,{LON},{LAT}\n"
                   f"c,smoke,丙,x\x00y,{LON},{LAT}\nd,smo\x00ke,丁,,{LON},{LAT}\n")  # fmt: skip
    # (GeoJSON files: the test after this one; request bodies: test_api_imports.)
    geojson = write_geojson(tmp_path / "nul.geojson", [({"id": "j"}, square(LON, LAT))])
    with psycopg.connect(fresh_url) as conn:
        report = import_file(conn, "sensors", csv)
        with pytest.raises(InvalidInput, match=r"^the provider holds a NUL") as provider:
            import_file(conn, "buildings", geojson, ImportOptions(provider="OSM\x00"))
        with pytest.raises(InvalidInput, match=r"^name= in the values holds a NUL") as value:
            import_file(conn, "buildings", geojson, ImportOptions(values={"name": "\x00"}))
    # The core names the option; each door words it (see the CLI and HTTP tests).
    assert (provider.value.option, value.value.option) == ("provider", "values")
    assert report.inserted == 1
    assert {r.source_id: r.reason for r in report.rejected} == {
        "b": "name: its value holds a NUL character (\\0), which cannot be stored",
        "c": "note: its value holds a NUL character (\\0), which cannot be stored",
        "d": "kind: its value holds a NUL character (\\0), which cannot be stored",
    }


def _nul_feature(fid: str, properties: str, lon: float) -> str:
    """One GeoJSON feature as raw text, so the \\u0000 escapes reach the file as written."""
    ring = square(lon, LAT).exterior.coords
    coordinates = json.dumps([[list(c) for c in ring]])
    return (f'{{"type": "Feature", "id": "{fid}", "properties": {properties}, '
            f'"geometry": {{"type": "Polygon", "coordinates": {coordinates}}}}}')  # fmt: skip


NUL_FEATURES = [
    _nul_feature("g1", '{"name": "fine"}', LON),
    _nul_feature("n1", '{"name": "a\\u0000b", "address": "x\\u0000y"}', LON + 0.001),
    _nul_feature("n2", '{"address": "ok", "note": {"deep": ["r\\u0000s"]}}', LON + 0.002),
    _nul_feature("n3", '{"k\\u0000ey": 1}', LON + 0.003),
    _nul_feature("g2", '{"name": "a\\\\u0000 is text, not a NUL"}', LON + 0.004),
]
NUL_REASONS = {
    "n1": "name: its value holds a NUL character (\\0), which cannot be stored",
    "n2": "note: its value holds a NUL character (\\0), which cannot be stored",
    "n3": "field name 'k\\x00ey' holds a NUL character (\\0), which cannot be stored",
}


@pytest.mark.parametrize("suffix", [".geojson", ".geojsonl", ".zip"])
def test_nul_characters_in_a_geojson_file_reject_their_features_not_cut_them(
    fresh_url: str, tmp_path: Path, suffix: str
):
    """GDAL's C strings cut "a\\u0000b" to "a": the feature was stored as name='a', address
    'x', "rejected 0". Found in the file's text, such features are rejected naming the
    field, as a CSV's are; the rest is imported (the escaped backslash is only text)."""
    if suffix == ".geojsonl":
        text = "\n".join(NUL_FEATURES) + "\n"
    else:
        text = '{"type": "FeatureCollection", "features": [' + ", ".join(NUL_FEATURES) + "]}"
    path = tmp_path / f"nul{suffix}"
    if suffix == ".zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("nul.geojson", text)
    else:
        path.write_text(text)
    result = run_twin("import", "buildings", str(path), "--json",
                      env={"TWIN_DATABASE_URL": fresh_url})  # fmt: skip
    assert result.returncode == 3, result.stderr  # stored some, rejected some
    report = json.loads(result.stdout)
    assert {r["source_id"]: r["reason"] for r in report["rejected"]} == NUL_REASONS
    with psycopg.connect(fresh_url) as conn:
        stored = dict(conn.execute("SELECT source_id, name FROM buildings WHERE dataset = 'nul'"))
    assert stored == {"g1": "fine", "g2": "a\\u0000 is text, not a NUL"}


def test_floors_beyond_an_integer_and_half_storeys(fresh_url: str, tmp_path: Path):
    """floors = 10**20 reached the data base's int4 column and failed the whole COPY; OSM's
    building:levels=3.5 was refused, so no height was estimated. A half storey counts as
    a floor (4), and the height is estimated from the 3.5 levels given."""
    path = write_geojson(tmp_path / "levels.geojson", [
        ({"osm_id": "half", "building": "apartments", "building:levels": "3.5"}, square(LON, LAT)),
        ({"osm_id": "huge", "building:levels": 10**20}, square(LON + 0.001, LAT)),
        ({"osm_id": "e20", "floors": "1e20"}, square(LON + 0.002, LAT)),
        ({"osm_id": "six", "building:levels": 6}, square(LON + 0.003, LAT)),
    ])  # fmt: skip
    with psycopg.connect(fresh_url) as conn:
        report = import_file(conn, "buildings", path)
        rows = {r[0]: r[1:] for r in conn.execute(
            "SELECT source_id, floors, height_m, height_estimated, properties FROM buildings"
            " WHERE dataset = 'levels'")}  # fmt: skip
    assert report.inserted == 4 and not report.rejected
    assert rows["half"][:3] == (4, 10.5, True)  # 3.5 levels x 3.0 m, a residential storey
    assert rows["six"][:3] == (6, 19.2, True)
    assert (
        rows["huge"][0] is None and rows["huge"][3]["building:levels"] == "1e+20"
    )  # as GDAL read it
    assert rows["e20"][0] is None and rows["e20"][3]["floors_raw"] == "1e20"
    assert any("2 values of" in n or "more floors than any building" in n for n in report.notes)


def test_osm_building_values_name_a_use_or_say_nothing(fresh_url: str, tmp_path: Path):
    values = {"museum": "public", "chapel": "public", "cathedral": "public", "kiosk": "commercial",
              "church": "public", "mosque": "public", "hospital": "health", "school": "education",
              "kindergarten": "education", "warehouse": "industrial", "supermarket": "commercial",
              "hotel": "commercial", "dormitory": "residential", "train_station": "public",
              "garage": "residential", "parking": "public", "government": "office",
              "fire_station": "public", "stadium": "public", "sports_hall": "public",
              "yes": None, "roof": None, "block": None, "construction": None, "ruins": None}  # fmt: skip
    path = write_geojson(tmp_path / "uses.geojson", [
        ({"osm_id": value, "building": value}, square(LON + i * 0.0005, LAT))
        for i, value in enumerate(values)
    ])  # fmt: skip
    with psycopg.connect(fresh_url) as conn:
        report = import_file(conn, "buildings", path)
        uses = dict(conn.execute("SELECT source_id, use FROM buildings WHERE dataset = 'uses'"))
    assert report.inserted == len(values)
    assert uses == values
    assert not [n for n in report.notes if "not understood" in n]


def test_placeholders_are_emptied_and_counted_per_field(fresh_url: str, tmp_path: Path):
    """无, N/A, -, null and none become no value, and the report says how many, per field
    (a name 无 was lost without a word)."""
    wkt = square(LON, LAT).wkt
    path = tmp_path / "placeholders.csv"
    path.write_text("id;name;height;note;wkt\n"
                    f"p1;无;12;gate;{wkt}\n"
                    f"p2;N/A;-;x;{wkt}\n"
                    f"p3;甲楼;null;y;{wkt}\n"
                    f"p4;none;;z;{wkt}\n")  # fmt: skip
    env = {"TWIN_DATABASE_URL": fresh_url}
    result = run_twin("import", "buildings", str(path), "--json", env=env)
    report = json.loads(result.stdout)
    assert report["inserted"] == 4, result.stderr
    assert report["emptied"] == {"name": 3, "height_m": 2}
    text = run_twin("import", "buildings", str(path), "--dataset", "again", env=env)
    assert "3 values of name -> name emptied: placeholders for no value (无, N/A, none)" in (
        text.stdout
    )
    assert "2 values of height -> height_m emptied: placeholders for no value (-, null)" in (
        text.stdout
    )
    with psycopg.connect(fresh_url) as conn:
        names = dict(conn.execute(
            "SELECT source_id, name FROM buildings WHERE dataset = 'placeholders'"))  # fmt: skip
    assert names == {"p1": None, "p2": None, "p3": "甲楼", "p4": None}


# -- plain tables, cameras ------------------------------------------------------------------


def test_units_import_from_a_plain_table(fresh_url: str, tmp_path: Path):
    """A units list as a city hands it over: code, name, kind, jurisdiction — no place."""
    path = tmp_path / "units.csv"
    with psycopg.connect(fresh_url) as conn:
        district = conn.execute(
            "SELECT code FROM jurisdictions WHERE level = 'district'"
        ).fetchone()[0]
    path.write_text("code,name,kind,jurisdiction_code\n"
                    f"T1,水务所,department,{district}\nT2,城管中队,中队,{district}\n")  # fmt: skip
    env = {"TWIN_DATABASE_URL": fresh_url}
    result = run_twin("import", "units", str(path), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    with psycopg.connect(fresh_url) as conn:
        rows = conn.execute(
            "SELECT code, kind, geom IS NULL FROM units WHERE code IN ('T1', 'T2') ORDER BY code"
        ).fetchall()
    assert rows == [("T1", "department", True), ("T2", "team", True)]
    # A layer whose features need a place still says what the table lacks.
    refused = run_twin("import", "buildings", str(path), env=env)
    assert refused.returncode == 1
    assert "units.csv has no coordinate columns: expected lon/lat, x/y or WKT" in refused.stderr
    assert "(its columns are code, name, kind, jurisdiction_code)" in refused.stderr


def test_a_city_s_camera_list_imports_without_a_unit(fresh_url: str, tmp_path: Path):
    """Cameras (视频监控, 摄像头, AI cameras) and access control measure no quantity."""
    path = tmp_path / "cameras.csv"
    path.write_text("device_id,kind,lon,lat\n"
                    f"CAM1,camera,{LON},{LAT}\nCAM2,视频监控,{LON + 0.001},{LAT}\n"
                    f"CAM3,摄像头,{LON + 0.002},{LAT}\nCAM4,AI camera,{LON + 0.003},{LAT}\n"
                    f"DOOR1,门禁,{LON + 0.004},{LAT}\n")  # fmt: skip
    result = run_twin("import", "sensors", str(path), env={"TWIN_DATABASE_URL": fresh_url})
    assert result.returncode == 0, result.stdout + result.stderr
    with psycopg.connect(fresh_url) as conn:
        rows = dict(conn.execute(
            "SELECT device_id, kind || '/' || unit_of_measure FROM sensors"
            " WHERE device_id IN ('CAM1', 'CAM2', 'CAM3', 'CAM4', 'DOOR1')"))  # fmt: skip
    assert rows == {"CAM1": "camera/", "CAM2": "camera/", "CAM3": "camera/", "CAM4": "camera/",
                    "DOOR1": "access_control/"}  # fmt: skip


def test_a_geojson_number_beyond_a_double_sets_that_value_aside_not_the_file(
    fresh_url: str, tmp_path: Path
):
    # GDAL refuses the whole file for 1e400 ("Unrecognized number"); it is read as a body is.
    path = write_geojson(tmp_path / "tall.geojson", [
        ({"id": "T1", "height": 12.5}, square(LON, LAT)),
        ({"id": "T2", "height": 1}, square(LON + 0.001, LAT))])  # fmt: skip
    path.write_text(path.read_text().replace('"height": 1}', '"height": 1e400}'))
    with psycopg.connect(fresh_url) as conn:
        report = import_file(conn, "buildings", path)
        rows = dict(conn.execute(
            "SELECT source_id, jsonb_build_array(height_m, properties) FROM buildings"
            " WHERE dataset = 'tall'"))  # fmt: skip
    assert report.inserted == 2 and not report.rejected
    assert rows["T1"][0] == 12.5
    assert rows["T2"][0] is None and "1e400" in json.dumps(rows["T2"][1])


def test_a_hole_off_the_globe_rejects_its_feature_in_a_file(fresh_url: str, tmp_path: Path):
    shell = [(LON, LAT), (LON + 0.01, LAT), (LON + 0.01, LAT + 0.01), (LON, LAT + 0.01)]
    hole = [(LON + 0.001, LAT + 0.001), (LON + 0.002, 95), (LON + 0.003, LAT + 0.003)]
    path = write_geojson(tmp_path / "holes.geojson", [
        ({"id": "good"}, square(LON, LAT)), ({"id": "bad"}, Polygon(shell, [hole]))])  # fmt: skip
    with psycopg.connect(fresh_url) as conn:
        report = import_file(conn, "buildings", path)
        stored = [
            r[0] for r in conn.execute("SELECT source_id FROM buildings WHERE dataset = 'holes'")
        ]
    assert stored == ["good"]
    assert [r.source_id for r in report.rejected] == ["bad"]
    assert "latitude 95 is beyond ±90" in report.rejected[0].reason


def test_a_csv_asked_for_a_layer_it_does_not_have_is_refused(fresh_url: str, tmp_path: Path):
    path = tmp_path / "cams.csv"
    path.write_text("device_id,kind,lon,lat\nc1,camera,121.40,31.24\n")
    with (
        psycopg.connect(fresh_url) as conn,
        pytest.raises(InvalidInput, match="has no layer 'nope'"),
    ):
        import_file(conn, "sensors", path, ImportOptions(layer="nope"))
    deep = tmp_path / "deep.geojson"
    deep.write_text('{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": '
                    + '{"a": ' * 2000 + "1" + "}" * 2000 + ', "geometry": null}]}')  # fmt: skip
    with psycopg.connect(fresh_url) as conn, pytest.raises(InvalidInput, match="too deeply"):
        import_file(conn, "sensors", deep)
