"""The demo city: a district a planner recognises, whole and consistent, from a seed."""

from __future__ import annotations

import hashlib
from collections import Counter

import networkx as nx
import numpy as np
import psycopg
import pytest
import shapely
from shapely.geometry import Point

from cli import main
from layers.demo.generate import DemoCity, generate_city

LEVELS = ("city", "district", "street", "grid", "community")


def test_small_city_has_every_layer_in_the_data_base(conn: psycopg.Connection):
    def count(query: str) -> int:
        return conn.execute(query).fetchone()[0]

    assert count("SELECT count(*) FROM buildings") >= 1000
    assert count("SELECT count(*) FROM public_spaces WHERE kind = 'road'") > 10
    assert count("SELECT count(DISTINCT kind) FROM public_spaces") >= 5
    assert count("SELECT count(*) FROM sensors") >= 150
    assert count("SELECT count(DISTINCT kind) FROM sensors") >= 8
    assert count("SELECT count(*) FROM units") >= 10
    networks = {r[0] for r in conn.execute("SELECT DISTINCT network FROM pipes")}
    assert {"water", "drainage", "gas", "power"} <= networks
    node_kinds = {r[0] for r in conn.execute("SELECT DISTINCT kind FROM pipe_nodes")}
    assert {"valve", "hydrant", "manhole", "junction", "service_connection"} <= node_kinds
    assert node_kinds & {"source", "tank"}
    levels = dict(conn.execute("SELECT level, count(*) FROM jurisdictions GROUP BY level"))
    assert levels["city"] == 1 and levels["district"] == 1
    assert 4 <= levels["street"] <= 6
    assert levels["grid"] >= 20 and levels["community"] >= levels["grid"]


def test_demo_city_lies_in_shanghai(conn: psycopg.Connection):
    west, south, east, north = conn.execute(
        "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e)"
        " FROM (SELECT ST_Extent(geom) AS e FROM buildings) x"
    ).fetchone()
    assert 121.2 < west < east < 121.7
    assert 31.0 < south < north < 31.5


def test_children_cover_their_parent_without_gaps_or_overlaps(conn: psycopg.Connection):
    rows = conn.execute(
        """
        SELECT p.code, p.level, ST_Area(p.geom) AS parent_area,
               ST_Area(ST_Union(c.geom)) AS union_area, sum(ST_Area(c.geom)) AS sum_area,
               bool_and(ST_CoveredBy(c.geom, ST_Buffer(p.geom, 1e-9))) AS inside
        FROM jurisdictions p JOIN jurisdictions c ON c.parent_code = p.code
        GROUP BY p.code, p.level, p.geom
        """
    ).fetchall()
    assert {level for _, level, *_ in rows} == {"city", "district", "street", "grid"}
    for code, _, parent_area, union_area, sum_area, inside in rows:
        assert abs(union_area - parent_area) / parent_area < 1e-6, f"gap under {code}"
        assert abs(sum_area - parent_area) / parent_area < 1e-6, f"overlap under {code}"
        assert inside, f"a child of {code} lies outside it"


def test_every_point_falls_in_exactly_one_unit_of_each_level(conn: psycopg.Connection):
    district = shapely.from_wkb(
        conn.execute(
            "SELECT ST_AsBinary(geom) FROM jurisdictions WHERE level = 'district'"
        ).fetchone()[0]
    )
    rng = np.random.default_rng(7)
    west, south, east, north = district.bounds
    points = [
        p
        for p in (Point(x, y) for x, y in rng.uniform((west, south), (east, north), (400, 2)))
        if district.contains(p)
    ][:200]
    assert len(points) > 100
    for point in points:
        levels = Counter(
            level
            for (level,) in conn.execute(
                "SELECT level FROM jurisdictions WHERE ST_Intersects(geom, ST_GeomFromWKB(%s, 4326))",
                (shapely.to_wkb(point),),
            )
        )
        assert all(levels[level] == 1 for level in LEVELS), (point, levels)


def test_each_level_tiles_the_district_exactly(conn: psycopg.Connection):
    district_area = conn.execute(
        "SELECT ST_Area(geom) FROM jurisdictions WHERE level = 'district'"
    ).fetchone()[0]
    rows = conn.execute(
        "SELECT level, ST_Area(ST_Union(geom)), sum(ST_Area(geom)) FROM jurisdictions"
        " WHERE level IN ('street', 'grid', 'community') GROUP BY level"
    ).fetchall()
    assert len(rows) == 3
    for level, union_area, sum_area in rows:
        assert abs(union_area - district_area) / district_area < 1e-9, f"gaps among {level}s"
        assert abs(sum_area - district_area) / district_area < 1e-9, f"{level}s overlap"


def test_no_building_is_split_by_a_boundary(conn: psycopg.Connection):
    # A building's share of each unit it meets: all of it in one, nothing but numeric
    # slivers elsewhere (as a street office, a grid workstation or a community knows it).
    rows = conn.execute(
        """
        WITH share AS (
          SELECT b.id, j.level, ST_Area(ST_Intersection(b.geom, j.geom)) / ST_Area(b.geom) AS s
          FROM buildings b JOIN jurisdictions j
            ON j.level IN ('street', 'grid', 'community') AND ST_Intersects(b.geom, j.geom))
        SELECT level, count(DISTINCT id) FILTER (WHERE s > 1 - 1e-6),
               count(DISTINCT id) FILTER (WHERE s BETWEEN 1e-6 AND 1 - 1e-6)
        FROM share GROUP BY level
        """
    ).fetchall()
    buildings = conn.execute("SELECT count(*) FROM buildings").fetchone()[0]
    assert len(rows) == 3
    for level, whole, split in rows:
        assert split == 0, f"{split} buildings cut by a {level} boundary"
        assert whole == buildings, level


def _share_along(conn: psycopg.Connection, level: str, roads: str) -> list[tuple[str, float]]:
    """Per unit of ``level``: the share of its boundary (the district's outline left
    out) within 3 m of the centre line of a road of class ``roads`` or over the river."""
    return conn.execute(
        """
        WITH district AS (
          SELECT ST_Boundary(ST_Transform(geom, 32651)) AS edge FROM jurisdictions
          WHERE level = 'district'),
        inner_edge AS (
          SELECT j.code, ST_Difference(ST_Boundary(ST_Transform(j.geom, 32651)),
                                       ST_Buffer(d.edge, 1)) AS line
          FROM jurisdictions j, district d WHERE j.level = %(level)s),
        along AS (
          SELECT ST_Union(g) AS g FROM (
            SELECT ST_Buffer(ST_Transform(geom, 32651),
                             3 - (properties->>'width_m')::float / 2) AS g
            FROM public_spaces
            WHERE kind = 'road' AND properties->>'class' = ANY(%(roads)s)
            UNION ALL
            SELECT ST_Buffer(ST_Transform(geom, 32651), 3) FROM public_spaces
            WHERE kind = 'water' AND properties->>'type' = 'river') x)
        SELECT code, ST_Length(ST_Intersection(line, along.g)) / ST_Length(line)
        FROM inner_edge, along WHERE ST_Length(line) > 0
        """,
        {"level": level, "roads": ["main"] if roads == "main" else ["main", "secondary"]},
    ).fetchall()


def test_streets_end_at_main_roads_and_the_river(conn: psycopg.Connection):
    shares = _share_along(conn, "street", "main")
    assert len(shares) >= 4
    for code, share in shares:
        assert share > 0.95, f"street {code}: {share:.0%} of its boundary along main roads"


def test_grids_and_communities_follow_streets(conn: psycopg.Connection):
    for level in ("grid", "community"):
        shares = _share_along(conn, level, "all")
        assert len(shares) >= 20
        for code, share in shares:
            assert share > 0.95, f"{level} {code}: {share:.0%} of its boundary along roads"


def test_grids_are_a_few_hundred_metres_across(conn: psycopg.Connection):
    rows = conn.execute(
        "SELECT code, level, ST_Area(geom::geography), ST_NumGeometries(geom) FROM jurisdictions"
        " WHERE level IN ('grid', 'community')"
    ).fetchall()
    for code, level, area, parts in rows:
        assert parts == 1, f"{level} {code} is in {parts} pieces"
        across = area**0.5
        assert (100 if level == "grid" else 60) < across < 900, (code, across)


def test_pipes_start_and_end_at_their_nodes(conn: psycopg.Connection):
    loose = conn.execute(
        """
        SELECT count(*) FROM pipes p
        JOIN pipe_nodes a ON a.id = p.from_node_id JOIN pipe_nodes b ON b.id = p.to_node_id
        WHERE NOT ST_DWithin(ST_StartPoint(p.geom), a.geom, 1e-9)
           OR NOT ST_DWithin(ST_EndPoint(p.geom), b.geom, 1e-9)
           OR a.network <> p.network OR b.network <> p.network
        """
    ).fetchone()[0]
    # Only the planned and abandoned mains, each beside the live one, are tied to no node.
    unlinked = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE status IN ('planned', 'abandoned')"
        " AND properties->>'role' = status || '_main') FROM pipes"
        " WHERE from_node_id IS NULL OR to_node_id IS NULL"
    ).fetchone()
    assert loose == 0 and unlinked[0] == unlinked[1] > 0


def test_water_supply_is_one_looped_network_fed_by_a_source(conn: psycopg.Connection):
    graph = nx.Graph()
    graph.add_edges_from(
        conn.execute(
            "SELECT from_node_id, to_node_id FROM pipes"
            " WHERE network = 'water' AND status IN ('in_service', 'under_repair')"
        )
    )
    biggest = max(nx.connected_components(graph), key=len)
    assert len(biggest) == graph.number_of_nodes()  # planned or abandoned pipes cut nothing
    # Loops mean a burst can be isolated and fed from the other side.
    cycle_rank = (
        graph.number_of_edges() - graph.number_of_nodes() + nx.number_connected_components(graph)
    )
    assert cycle_rank >= 10
    sources = {
        r[0]
        for r in conn.execute(
            "SELECT id FROM pipe_nodes WHERE network = 'water' AND kind IN ('source', 'tank')"
        )
    }
    assert sources & biggest
    valves = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE state = 'closed') FROM pipe_nodes"
        " WHERE network = 'water' AND kind = 'valve'"
    ).fetchone()
    assert valves[0] > 20 and valves[1] < valves[0] * 0.2


def test_drainage_runs_downhill(conn: psycopg.Connection):
    uphill, total = conn.execute(
        "SELECT count(*) FILTER (WHERE invert_end_m > invert_start_m), count(*) FROM pipes"
        " WHERE network = 'drainage'"
    ).fetchone()
    assert total > 20 and uphill == 0


def test_buildings_stand_clear_of_roads_water_and_each_other(conn: psycopg.Connection):
    on_public_space = conn.execute(
        """
        SELECT count(*) FROM buildings b JOIN public_spaces s
          ON s.kind IN ('road', 'water') AND ST_Intersects(b.geom, s.geom)
        WHERE ST_Area(ST_Intersection(b.geom, s.geom)) > 1e-12
        """
    ).fetchone()[0]
    overlapping = conn.execute(
        """
        SELECT count(*) FROM buildings a JOIN buildings b
          ON a.id < b.id AND ST_Intersects(a.geom, b.geom)
        WHERE ST_Area(ST_Intersection(a.geom, b.geom)) > 1e-12
        """
    ).fetchone()[0]
    assert on_public_space == 0 and overlapping == 0


def test_buildings_range_from_low_rise_to_towers(conn: psycopg.Connection):
    low, towers, uses, bad_ratio = conn.execute(
        """
        SELECT count(*) FILTER (WHERE height_m <= 12), count(*) FILTER (WHERE height_m >= 80),
               count(DISTINCT use),
               count(*) FILTER (WHERE height_m / floors NOT BETWEEN 2.5 AND 6.5)
        FROM buildings
        """
    ).fetchone()
    assert low > 50 and towers > 5 and uses >= 5 and bad_ratio == 0


def test_sensors_sit_on_their_assets(conn: psycopg.Connection):
    for layer in ("pipe_nodes", "pipes", "buildings", "public_spaces"):
        far = conn.execute(
            f"SELECT count(*) FROM sensors s JOIN {layer} a ON a.id = s.asset_id"
            " WHERE s.asset_layer = %s AND NOT ST_DWithin(s.geom::geography, a.geom::geography, 30)",
            (layer,),
        ).fetchone()[0]
        assert far == 0, layer
    orphans = conn.execute(
        "SELECT count(*) FROM sensors WHERE asset_layer IS NULL OR asset_id IS NULL"
    ).fetchone()[0]
    assert orphans == 0


def _fingerprint(city: DemoCity) -> str:
    digest = hashlib.sha256()
    for name in sorted(city.tables):
        for column in sorted(city.tables[name]):
            values = city.tables[name][column]
            if column == "geom":
                digest.update(b"".join(shapely.to_wkb(np.asarray(values, dtype=object))))
            else:
                digest.update(repr(list(values)).encode())
    return digest.hexdigest()


def test_same_seed_same_city_other_seed_other_city(small_city: DemoCity):
    assert _fingerprint(generate_city("small", seed=1)) == _fingerprint(small_city)
    assert _fingerprint(generate_city("small", seed=2)) != _fingerprint(small_city)


def test_unknown_size_is_refused():
    with pytest.raises(ValueError, match="size"):
        generate_city("enormous")


@pytest.mark.slow
def test_default_size_has_the_figures_of_a_real_district():
    city = generate_city("default", seed=1)
    tables = city.tables
    assert len(tables["buildings"]["id"]) >= 20_000
    assert len(tables["sensors"]["id"]) >= 2_000
    assert len(set(tables["sensors"]["kind"])) >= 8
    levels = Counter(tables["jurisdictions"]["level"])
    assert levels["district"] == 1 and 4 <= levels["street"] <= 6
    assert 100 <= levels["grid"] <= 140 and levels["community"] >= levels["grid"]
    # Grids cover the district exactly.
    by_level = {
        level: [
            g
            for g, lv in zip(
                tables["jurisdictions"]["geom"], tables["jurisdictions"]["level"], strict=True
            )
            if lv == level
        ]
        for level in ("district", "grid")
    }
    district = by_level["district"][0]
    grids = by_level["grid"]
    assert abs(shapely.union_all(grids).area - district.area) / district.area < 1e-6
    assert abs(sum(g.area for g in grids) - district.area) / district.area < 1e-6


def test_reloading_the_demo_replaces_only_the_demo(fresh_url: str, monkeypatch, capsys):
    with psycopg.connect(fresh_url) as conn:
        conn.execute(
            "INSERT INTO buildings (dataset, source_id, height_m, geom) VALUES ('survey', 'S-1', 9,"
            " ST_Multi(ST_GeomFromText('POLYGON((121.3 31.1, 121.3001 31.1, 121.3001 31.1001,"
            " 121.3 31.1001, 121.3 31.1))', 4326)))"
        )
        before = conn.execute("SELECT count(*) FROM buildings WHERE dataset = 'demo'").fetchone()[0]
    monkeypatch.setenv("TWIN_DATABASE_URL", fresh_url)
    assert main(["demo", "--size", "small", "--seed", "2"]) == 0
    said = capsys.readouterr().err
    assert "demo city (small, seed 2) loaded" in said
    assert "load buildings:" not in said  # a quick step is quiet in a log: the summary says it
    expected = len(generate_city("small", seed=2).tables["buildings"]["id"])
    with psycopg.connect(fresh_url) as conn:
        after = conn.execute("SELECT count(*) FROM buildings WHERE dataset = 'demo'").fetchone()[0]
        survey = conn.execute(
            "SELECT count(*) FROM buildings WHERE dataset = 'survey' AND source_id = 'S-1'"
        ).fetchone()[0]
        catalogued = conn.execute(
            "SELECT feature_count FROM layer_catalogue WHERE name = 'buildings'"
        ).fetchone()[0]
    assert before > 0 and after == expected
    assert survey == 1
    assert catalogued == expected + 1


def test_reloading_the_demo_under_a_citys_own_units_is_refused_with_nothing_changed(
    fresh_url: str, small_city: DemoCity
):
    from layers.demo.load import load_demo
    from twin.errors import Conflict

    with psycopg.connect(fresh_url) as conn:
        conn.execute(
            "INSERT INTO units (code, name, kind, jurisdiction_code, dataset)"
            " SELECT 'U-MINE', '我的单位', 'department', code, 'mine'"
            " FROM jurisdictions WHERE dataset = 'demo' AND level = 'street' LIMIT 1"
        )
        conn.commit()
        before = conn.execute("SELECT count(*) FROM buildings").fetchone()[0]
        with pytest.raises(Conflict, match="features of units that are not the demo's"):
            load_demo(conn, small_city)
        assert conn.execute("SELECT count(*) FROM buildings").fetchone()[0] == before
        assert conn.execute("SELECT count(*) FROM units WHERE code = 'U-MINE'").fetchone()[0] == 1
