"""Incident categories, the responsibility list and asset owners: from files, through the
API and in the demo, as the dispatcher will use them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from layers.incidents import import_categories, import_responsibilities
from layers.ingest import ImportOptions, import_file
from layers.scenes import create_scene
from tests.helpers import make_data_dir, run_twin, settings_for
from twin.errors import InvalidInput, NothingStored
from twin.incidents import categories, responsibilities
from twin.incidents.responsibilities import candidate_rules

KEY = {"X-API-Key": "test-key"}
HEADER = "code,name,parent_code,asset_layers,attach_radius_m,response_hours,resolve_hours,priority"


@pytest.fixture
def staff(fresh_url: str) -> Iterator[TestClient]:
    settings = settings_for(make_data_dir("twin-api-"), api={"api_keys": {"test-key": "tester"}})
    with TestClient(create_app(settings, database_url=fresh_url)) as client:
        yield client


def test_the_demo_ships_categories_rules_and_asset_owners(conn: psycopg.Connection):
    tree = categories.list_categories(conn)
    assert len(tree) >= 100
    by_code = {c.code: c for c in tree}
    assert by_code["BJ0101"].asset_layers == ("pipe_nodes:water",)  # 上水井盖: the water network
    assert (
        by_code["SJ040101"].asset_layers == ("pipes:water",) and by_code["SJ040101"].priority == 1
    )
    assert [a.code for a in categories.ancestors(conn, "SJ040101")] == ["SJ0401", "SJ04", "SJ"]
    rules = responsibilities.list_rules(conn, limit=10_000)
    assert len(rules) >= 100
    assert any(r["asset_owner"] == "U-310199-WATERCO" for r in rules)
    owners = dict(conn.execute(
        "SELECT network, min(owner_unit) FROM pipes WHERE dataset = 'demo' GROUP BY 1"
    ).fetchall())  # fmt: skip
    assert owners["water"] == "U-310199-WATERCO" and owners["gas"] == "U-310199-GAS"
    # Every category of the demo has a rule, its own or one of an ancestor's.
    district = ["310199000000"]
    assert all(candidate_rules(conn, c.code, district) for c in tree)


def _csv(path: Path, rows: list[str], encoding: str = "utf-8") -> Path:
    path.write_text("\n".join([HEADER, *rows]) + "\n", encoding=encoding)
    return path


def test_a_categories_file_keeps_the_good_rows_and_says_why_of_the_others(
    fresh_url: str, tmp_path: Path
):
    path = _csv(tmp_path / "分类.csv", [
        "X,城市设施,,,50,4,72,3",
        "X01,井盖缺失,X,pipe_nodes,30,1,24,1",
        "X02,路灯不亮,X,\"public_spaces,castles\",30,4,48,3",
        "X03,孤儿,NOPE,,30,4,48,3",
        "Y1,圈一,Y2,,10,1,1,1",
        "Y2,圈二,Y1,,10,1,1,1",
        "X04,坏半径,X,,NaN,1,1,1",
        "X05,负时限,X,,10,-1,1,1",
        "X06,太大,X,,10,1,99999999999999999999999,1",
        "X07,下级,X02,,10,1,1,1",
    ], encoding="gb18030")  # fmt: skip
    done = run_twin("import", "categories", str(path), env={"TWIN_DATABASE_URL": fresh_url})
    assert done.returncode == 3, done.stderr  # some rejected, the rest stored
    assert "inserted 2" in done.stdout
    for words in ("'castles'", "parent_code 'NOPE' is neither in the file", "makes a cycle",
                  "attach_radius_m must be a finite number above 0", "response_hours must be",
                  "resolve_hours", "its parent 'X02' was rejected", "row 4 (code 'X03')"):  # fmt: skip
        assert words in done.stdout, (words, done.stdout)
    with psycopg.connect(fresh_url) as conn:
        assert categories.get_category(conn, "X01").parent_code == "X"
        assert [c.code for c in categories.descendants(conn, "X")] == ["X01"]
        # JSON, a list of objects: the same columns, numbers as numbers, layers as a list.
        rows = [
            {"code": "X01", "name": "井盖缺失", "parent_code": "X", "asset_layers": ["pipe_nodes"],
             "attach_radius_m": 25, "response_hours": 0.5, "resolve_hours": 12, "priority": 1,
             "fusion_radius_m": 20},
            {"code": "X08", "name": "循环", "parent_code": "X08", "attach_radius_m": 1,
             "response_hours": 1, "resolve_hours": 1},
            {"code": "X09", "name": "真假", "attach_radius_m": True, "response_hours": 1,
             "resolve_hours": 1},
            "not a row",
        ]  # fmt: skip
        (tmp_path / "c.json").write_text(json.dumps(rows), encoding="utf-8")
        report = import_categories(conn, tmp_path / "c.json")
        assert (report.inserted, report.updated, len(report.rejected)) == (0, 1, 3)
        reasons = " | ".join(r.reason for r in report.rejected)
        assert "cycle" in reasons and "true/false" in reasons and "not an object" in reasons
        assert categories.get_category(conn, "X01").attach_radius_m == 25
        assert categories.get_category(conn, "X01").fusion_hours == 24  # the default
        # Moving X under X01 would close a loop with what is stored: refused by name.
        (tmp_path / "loop.json").write_text(json.dumps([{**rows[0], "code": "X",
            "parent_code": "X01"}]), encoding="utf-8")  # fmt: skip
        with pytest.raises(NothingStored, match="cycle"):
            import_categories(conn, tmp_path / "loop.json")
        assert categories.get_category(conn, "X").parent_code is None  # nothing changed
    nothing = _csv(tmp_path / "bad.csv", ["Z,坏,,,0,1,1,1"])
    failed = run_twin("import", "categories", str(nothing), env={"TWIN_DATABASE_URL": fresh_url})
    assert failed.returncode == 1 and "nothing imported into categories" in failed.stderr


def test_a_responsibility_list_names_each_unknown_code(fresh_url: str, tmp_path: Path):
    path = tmp_path / "清单.csv"
    path.write_text(
        "category_code,jurisdiction_code,asset_owner,unit_code\n"
        "SJ0501,310199000000,,U-310199-CITYMGMT\n"
        "SJ0501,310199000000,,U-310199-POLICE\n"
        "NOPE,310199000000,,U-310199-CITYMGMT\n"
        "SJ0501,999,,U-310199-CITYMGMT\n"
        "SJ0501,310199000000,U-NOBODY,U-310199-CITYMGMT\n"
        "SJ0501,310199000000,,U-NOBODY\n",
        encoding="utf-8",
    )
    with psycopg.connect(fresh_url) as conn:
        report = import_responsibilities(conn, path)
        assert (report.inserted, len(report.rejected)) == (1, 5)
        reasons = [r.reason for r in report.rejected]
        assert "given twice" in reasons[0]
        assert "category_code 'NOPE' is not a category" in reasons[1]
        assert "jurisdiction_code '999' is not a jurisdiction" in reasons[2]
        assert "asset_owner 'U-NOBODY' is not a unit" in reasons[3]
        assert "unit_code 'U-NOBODY' is not a unit" in reasons[4]
        (tmp_path / "r.json").write_text(json.dumps([{"category_code": "SJ0501"}]), "utf-8")
        with pytest.raises(NothingStored, match="no jurisdiction_code"):
            import_responsibilities(conn, tmp_path / "r.json")
        with pytest.raises(InvalidInput, match="names the incident categories"):
            create_scene(conn, "categories", geometry_type="Point", properties={})


def _place(conn: psycopg.Connection, code: str, level: str, parent: str | None) -> None:
    conn.execute(
        "INSERT INTO jurisdictions (code, name, level, parent_code, dataset, geom) VALUES"
        " (%s, %s, %s, %s, 'own', ST_Multi(ST_MakeEnvelope(120, 30, 121, 31, 4326)))",
        (code, f"{level} {code}", level, parent),
    )


def test_candidate_rules_follow_owner_then_category_then_jurisdiction(fresh_url: str):
    """A city of its own whose tree skips the district level: city > street > grid."""
    with psycopg.connect(fresh_url) as conn:
        _place(conn, "C", "city", None)
        _place(conn, "C-S1", "street", "C")
        _place(conn, "C-S1-G1", "grid", "C-S1")
        for code, place in (("CENTRE", "C"), ("WATERCO", "C"), ("STREET", "C-S1"),
                            ("GRID", "C-S1-G1"), ("PIPES", "C")):  # fmt: skip
            conn.execute(
                "INSERT INTO units (code, name, kind, jurisdiction_code) VALUES (%s, %s,"
                " 'department', %s)", (code, f"unit {code}", place),
            )  # fmt: skip
        stored = categories.store(conn, [
            {"code": "P", "name": "管道", "attach_radius_m": 50, "response_hours": 1,
             "resolve_hours": 24},
            {"code": "P1", "name": "爆管", "parent_code": "P", "asset_layers": "pipes",
             "attach_radius_m": 50, "response_hours": 1, "resolve_hours": 24},
        ])  # fmt: skip
        assert not stored.rejected
        rules = responsibilities.store(conn, [
            {"category_code": "P", "jurisdiction_code": "C", "unit_code": "CENTRE"},
            {"category_code": "P", "jurisdiction_code": "C-S1-G1", "unit_code": "GRID"},
            {"category_code": "P1", "jurisdiction_code": "C", "unit_code": "PIPES"},
            {"category_code": "P1", "jurisdiction_code": "C-S1", "unit_code": "STREET"},
            {"category_code": "P", "jurisdiction_code": "C", "asset_owner": "WATERCO",
             "unit_code": "WATERCO"},
        ])  # fmt: skip
        assert rules.inserted == 5 and not rules.rejected
        chain = ["C-S1-G1", "C-S1", "C"]

        def order(**kw: object) -> list[str]:
            return [c.unit_code for c in candidate_rules(conn, "P1", chain, **kw)]  # type: ignore[arg-type]

        # The report's own category before its parent's; within one, the deepest place.
        assert order(asset_owners=[]) == ["STREET", "PIPES", "GRID", "CENTRE"]
        # The owner of the nearest asset wins over everything, though its rule is broad.
        assert order(asset_owners=["WATERCO"])[0] == "WATERCO"
        # Nothing known of the assets: owner rules listed, marked, last.
        listed = candidate_rules(conn, "P1", chain)
        assert listed[-1].owner_rule and not listed[-1].owner_matched
        # Only the grid given: the places enclosing it count too.
        assert (
            order(asset_owners=[])[:2]
            == ["STREET", "PIPES"]
            == [c.unit_code for c in candidate_rules(conn, "P1", ["C-S1-G1"], asset_owners=[])][:2]
        )
        first = candidate_rules(conn, "P1", chain, asset_owners=["WATERCO"])[0]
        assert "owned by WATERCO" in first.reason() and "1 level above" in first.reason()
        assert candidate_rules(conn, "P", ["nowhere"]) == []


def test_owner_fills_the_owner_unit_of_every_feature_that_names_none(
    fresh_url: str, tmp_path: Path
):
    path = tmp_path / "mains.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": "m1", "properties": {"network": "water", "权属单位": "U-310199-GAS"},
         "geometry": {"type": "LineString", "coordinates": [[121.40, 31.24], [121.41, 31.24]]}},
        {"type": "Feature", "id": "m2", "properties": {"network": "water"},
         "geometry": {"type": "LineString", "coordinates": [[121.40, 31.25], [121.41, 31.25]]}},
    ]}), encoding="utf-8")  # fmt: skip
    with psycopg.connect(fresh_url) as conn:
        report = import_file(conn, "pipes", path, ImportOptions(owner_unit="自来水公司"))
        owners = dict(conn.execute(
            "SELECT source_id, owner_unit FROM pipes WHERE dataset = 'mains'"
        ).fetchall())  # fmt: skip
        assert owners == {"m1": "U-310199-GAS", "m2": "自来水公司"}
        assert any("names no unit's code: '自来水公司' (1)" in n for n in report.notes)
        entry = conn.execute(
            "SELECT owner_unit FROM dataset_inventory WHERE layer = 'pipes' AND dataset = 'mains'"
        ).fetchone()
        assert entry == ("自来水公司",)  # the inventory's owner, as before


def test_categories_and_rules_over_http(staff: TestClient, tmp_path: Path):
    public = staff.get("/categories")
    assert public.status_code == 200 and public.json()["count"] >= 100
    first = public.json()["categories"][0]
    assert first["depth"] == 0 and first["parent_code"] is None
    one = staff.get("/categories/SJ040101").json()
    assert [a["code"] for a in one["ancestors"]] == ["SJ0401", "SJ04", "SJ"]
    assert staff.get("/categories/NOPE").status_code == 404
    body = {"name": "共享单车乱停", "parent_code": "SJ05", "asset_layers": ["public_spaces"],
            "attach_radius_m": 30, "response_hours": 4, "resolve_hours": 24, "priority": 4}  # fmt: skip
    assert staff.put("/categories/SJ0599", json=body).status_code == 401
    made = staff.put("/categories/SJ0599", json=body, headers=KEY)
    assert made.status_code == 201, made.text
    assert made.json()["fusion_radius_m"] == 50
    again = staff.put("/categories/SJ0599", json={**body, "priority": 2}, headers=KEY)
    assert again.status_code == 200 and again.json()["priority"] == 2
    for change, field in (
        ({"attach_radius_m": "NaN"}, "attach_radius_m"),
        ({"response_hours": "Infinity"}, "response_hours"),
        ({"resolve_hours": 2**70}, "resolve_hours"),
        ({"priority": 9}, "priority"),
        ({"priority": "high"}, "priority"),
        ({"name": "a\x00b"}, "name"),
        ({"name": ["a"]}, "name"),
        ({"parent_code": "SJ0599"}, "parent_code"),
        ({"parent_code": "NOPE"}, "parent_code"),
        ({"asset_layers": ["castles"]}, "asset_layers"),
        ({"asset_layers": "jurisdictions"}, "asset_layers"),
        ({"colour": "red"}, "colour"),
    ):
        bad = staff.put("/categories/SJ0599", json={**body, **change}, headers=KEY)
        assert bad.status_code == 400, (change, bad.text)
        assert bad.headers["content-type"] == "application/problem+json"
        assert bad.json()["parameter"] == field, (change, bad.json())
    for raw in ("[" * 100_000, '{"name": NaN, "attach_radius_m": 1e999}', "not json"):
        sent = staff.put("/categories/SJ0599", content=raw, headers={**KEY,
                         "Content-Type": "application/json"})  # fmt: skip
        assert sent.status_code == 400, (raw[:20], sent.text)
    huge = staff.put("/categories/SJ0599", content=b" " * (101 * 1024 * 1024),
                     headers={**KEY, "Content-Type": "application/json"})  # fmt: skip
    assert huge.status_code == 413
    # A child under the new one, a deep move refused, then delete: children and rules first.
    child = staff.put("/categories/SJ059901", json={**body, "parent_code": "SJ0599"}, headers=KEY)
    assert child.status_code == 201
    loop = staff.put("/categories/SJ0599", json={**body, "parent_code": "SJ059901"}, headers=KEY)
    assert loop.status_code == 400 and "cycle" in loop.json()["detail"]
    assert staff.delete("/categories/SJ0599", headers=KEY).status_code == 409
    rule = {"category_code": "SJ059901", "jurisdiction_code": "310199000000",
            "unit_code": "U-310199-CITYMGMT", "note": "试点"}  # fmt: skip
    added = staff.post("/responsibilities", json=rule, headers=KEY)
    assert added.status_code == 201, added.text
    rule_id = added.json()["id"]
    assert added.json()["unit_name"].endswith("城管执法局")
    assert staff.post("/responsibilities", json=rule, headers=KEY).status_code == 409
    for change, field in (({"unit_code": "U-NOBODY"}, "unit_code"),
                          ({"jurisdiction_code": 12}, "jurisdiction_code"),
                          ({"asset_owner": "x\x00"}, "asset_owner"),
                          ({"category_code": None}, "category_code"),
                          ({"extra": 1}, "extra")):  # fmt: skip
        bad = staff.post("/responsibilities", json={**rule, **change}, headers=KEY)
        assert bad.status_code == 400 and bad.json()["parameter"] == field, bad.text
    assert staff.post("/responsibilities", json=[rule], headers=KEY).status_code == 400
    assert staff.delete("/categories/SJ059901", headers=KEY).status_code == 409
    listed = staff.get("/responsibilities?category=SJ0599", headers=KEY).json()
    assert [r["id"] for r in listed["rules"]] == [rule_id]
    assert staff.get("/responsibilities").status_code == 401
    by_unit = staff.get("/responsibilities?unit=U-310199-WATERCO", headers=KEY).json()
    assert by_unit["count"] > 0 and all(
        "U-310199-WATERCO" in (r["unit_code"], r["asset_owner"]) for r in by_unit["rules"]
    )
    for query in ("limit=0", "limit=1e3", "offset=-1", "offset=99999999999999999999",
                  "colour=red"):  # fmt: skip
        assert staff.get(f"/responsibilities?{query}", headers=KEY).status_code == 400, query
    assert staff.delete(f"/responsibilities/{rule_id}", headers=KEY).status_code == 204
    assert staff.delete(f"/responsibilities/{rule_id}", headers=KEY).status_code == 404
    assert staff.delete("/responsibilities/99999999999999999999", headers=KEY).status_code == 400
    assert staff.delete("/categories/SJ059901", headers=KEY).status_code == 204
    assert staff.delete("/categories/SJ0599", headers=KEY).status_code == 204
    # Files over HTTP: the report, and 422 naming the rows when nothing could be stored.
    good = tmp_path / "c.csv"
    good.write_text(HEADER + "\nQ,新类,,,10,1,1,1\nQ1,坏,Q,,x,1,1,1\n", encoding="utf-8")
    with good.open("rb") as f:
        sent = staff.post("/categories/import", files={"file": ("c.csv", f)}, headers=KEY)
    assert sent.status_code == 200, sent.text
    assert (
        sent.json()["inserted"] == 1 and "is not a number" in sent.json()["rejected"][0]["reason"]
    )
    rules_json = json.dumps([{"category_code": "Q", "jurisdiction_code": "nowhere",
                              "unit_code": "U-310199-CENTRE"}])  # fmt: skip
    sent = staff.post("/responsibilities/import", files={"file": ("r.json", rules_json)},
                      headers=KEY)  # fmt: skip
    assert sent.status_code == 422 and sent.json()["rejected"][0]["reason"].startswith(
        "jurisdiction_code 'nowhere'"
    )
    sent = staff.post("/categories/import", files={"file": ("c.shp", b"x")}, headers=KEY)
    assert sent.status_code == 400
    sent = staff.post("/categories/import", files={"file": ("c.csv", b"a")},
                      data={"crs": "4326"}, headers=KEY)  # fmt: skip
    assert sent.status_code == 400 and "unknown form field 'crs'" in sent.json()["detail"]
