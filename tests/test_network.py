"""Pipe networks end to end: networks imported from files as a GIS holds them (pipes as lines
with no node ids, valves as points on the pipes), their topology, the connectivity report,
traces and valve isolation through the API, checked against USEPA WNTR's valve segments.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import shapely
import wntr
from fastapi.testclient import TestClient

from api.app import create_app
from tests.helpers import demo_water_mains, make_data_dir, run_twin, settings_for

KEY = {"X-API-Key": "test-key"}
NET3 = Path(wntr.__file__).parent / "library" / "networks" / "Net3.inp"
# Net3's coordinates are in no unit; scaled to metres and put in UTM zone 51N (Shanghai),
# its shortest pipe is 51 m long, so valves 1 m from a junction are well apart.
SCALE, X0, Y0 = 300.0, 347_000.0, 3_450_000.0
CRS = "EPSG:32651"


def _xy(coordinates: tuple[float, float]) -> tuple[float, float]:
    return X0 + SCALE * coordinates[0], Y0 + SCALE * coordinates[1]


def _feature(properties: dict[str, Any], geometry: Any) -> dict[str, Any]:
    return {"type": "Feature", "properties": properties,
            "geometry": shapely.geometry.mapping(geometry)}  # fmt: skip


def net3_as_gis(wn: Any, valve_layer: Any) -> tuple[list[dict], list[dict]]:
    """Net3 as a utility GIS holds it: every link a line (pumps too) with no node ids;
    junctions, reservoirs and tanks as points; each valve of the layer a point on its link,
    1 m from the node it guards."""
    lines = {}
    pipes = []
    for name, link in wn.links():
        a, b = wn.get_node(link.start_node_name), wn.get_node(link.end_node_name)
        line = shapely.LineString(
            [_xy(a.coordinates), *map(_xy, link.vertices), _xy(b.coordinates)]
        )
        lines[name] = (line, link.start_node_name)
        diameter = getattr(link, "diameter", None)
        pipes.append(_feature({"id": name, "diameter_mm": round(diameter * 1000, 1) if diameter else None,
                               "role": link.link_type.lower()}, line))  # fmt: skip
    kinds = {"Junction": "junction", "Reservoir": "source", "Tank": "tank"}
    nodes = [_feature({"id": f"N-{name}", "kind": kinds[node.node_type]}, shapely.Point(_xy(node.coordinates)))
             for name, node in wn.nodes()]  # fmt: skip
    for i, row in valve_layer.iterrows():
        line, start = lines[row["link"]]
        at = 1.0 if row["node"] == start else line.length - 1.0
        nodes.append(_feature({"id": f"V{i}", "kind": "valve", "state": "open"},
                              line.interpolate(at)))  # fmt: skip
    return pipes, nodes


def _upload(
    client: TestClient, layer: str, features: list[dict], dataset: str, **values: Any
) -> None:
    body = json.dumps({"type": "FeatureCollection", "features": features})
    answer = client.post(
        f"/layers/{layer}/import",
        files={"file": (f"{dataset}.geojson", body, "application/geo+json")},
        data={"dataset": dataset, "crs": CRS, "values": json.dumps(values)},
        headers=KEY,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["rejected"] == [], answer.text


@pytest.fixture(scope="module")
def net3() -> tuple[Any, Any, Any]:
    wn = wntr.network.WaterNetworkModel(str(NET3))
    layer = wntr.network.generate_valve_layer(wn, "strategic", 2, seed=123)
    return wn, layer, wn.to_graph()


@pytest.fixture(scope="module")
def staff(module_url: str, net3: tuple[Any, Any, Any]) -> Iterator[TestClient]:
    """Net3 imported as the heat network (the demo city has none), from GeoJSON files."""
    wn, layer, _ = net3
    settings = settings_for(make_data_dir("twin-network-"), api={"api_keys": {"test-key": "t"}})
    with TestClient(create_app(settings, database_url=module_url)) as client:
        pipes, nodes = net3_as_gis(wn, layer)
        _upload(client, "pipe_nodes", nodes, "net3-nodes", network="heat")
        _upload(client, "pipes", pipes, "net3", network="heat")
        yield client


def _segments(graph: Any, layer: Any) -> tuple[dict[str, int], dict[str, int]]:
    nodes, links, _ = wntr.metrics.valve_segments(graph, layer)
    return dict(nodes.items()), dict(links.items())


def _expected(link: str, graph: Any, layer: Any) -> tuple[set[str], set[str]]:
    """WNTR's answer for a burst on ``link``: the links of its valve segment, and the valves
    between that segment and the rest."""
    node_seg, link_seg = _segments(graph, layer)
    segment = link_seg[link]
    links = {name for name, s in link_seg.items() if s == segment}
    valves = {
        f"V{i}" for i, row in layer.iterrows()
        if (link_seg[row["link"]] == segment) != (node_seg[row["node"]] == segment)
    }  # fmt: skip
    return links, valves


def _isolate(client: TestClient, body: dict[str, Any], network: str = "heat") -> dict[str, Any]:
    answer = client.post(f"/network/{network}/isolate", json=body, headers=KEY)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_isolation_is_wntrs_valve_segment_for_every_pipe_of_net3(staff: TestClient, net3):
    wn, layer, graph = net3
    for link in wn.link_name_list:
        found = _isolate(staff, {"pipe": {"source_id": link}})
        links, valves = _expected(link, graph, layer)
        assert {p["source_id"] for p in found["isolated_pipes"]} == links, link
        assert {v["source_id"] for v in found["valves"]} == valves, link
        assert found["total_length_m"] >= sum(p["length_m"] for p in found["isolated_pipes"])


def test_failed_valves_grow_the_isolation_as_wntr_does_without_them(staff: TestClient, net3):
    wn, layer, graph = net3
    chosen = random.Random(7)
    for link in chosen.sample(wn.link_name_list, 25):
        first = _isolate(staff, {"pipe": {"source_id": link}})
        if not first["valves"]:
            continue
        failed = chosen.sample(
            [v["source_id"] for v in first["valves"]], 1 + len(first["valves"]) // 2
        )
        found = _isolate(staff, {"pipe": {"source_id": link},
                                 "failed_valves": [{"source_id": v} for v in failed]})  # fmt: skip
        rest = layer.drop(index=[int(v[1:]) for v in failed])
        links, valves = _expected(link, graph, rest)
        assert {p["source_id"] for p in found["isolated_pipes"]} == links, (link, failed)
        assert {v["source_id"] for v in found["valves"]} == valves, (link, failed)
        assert {v["source_id"] for v in found["valves_skipped"]} >= set(failed)
        assert all(v["reason"] == "failed" for v in found["valves_skipped"])


def test_net3_imported_from_lines_and_points_is_one_network_with_its_sources(
    staff: TestClient, net3
):
    wn, layer, _ = net3
    report = staff.get("/network/heat/check", headers=KEY).json()
    assert report["pipes"] == wn.num_links
    assert report["component_count"] == 1 and report["components"][0]["has_source"]
    assert report["sources"] == wn.num_reservoirs + wn.num_tanks
    assert report["valves"] == len(layer.drop_duplicates())
    assert report["off_network_count"] == 0 and report["near_miss_count"] == 0
    # Net3's dead ends are pipes to a junction with nothing else there: a node, not dangling.
    assert report["dangling_end_count"] == 0


def test_a_burst_at_a_point_is_on_the_nearest_pipe_and_says_how_far(staff: TestClient, net3):
    wn, _, _ = net3
    by_id = _isolate(staff, {"pipe": {"source_id": "20"}})
    line = shapely.LineString([_xy(wn.get_node(n).coordinates) for n in
                               (wn.get_link("20").start_node_name, wn.get_link("20").end_node_name)])  # fmt: skip
    x, y = line.interpolate(0.5, normalized=True).coords[0]
    at_point = _isolate(staff, {"point": {"lon": x + 3, "lat": y, "crs": CRS}})
    assert at_point["burst"]["pipe"]["source_id"] == "20"
    assert 0 < at_point["burst"]["distance_m"] < 3.5
    assert at_point["valves"] == by_id["valves"]
    far = staff.post("/network/heat/isolate", json={"point": {"lon": x + 5000, "lat": y, "crs": CRS}},
                     headers=KEY)  # fmt: skip
    assert far.status_code == 400 and "the nearest is" in far.json()["detail"], far.text


# -- a small network drawn by hand ------------------------------------------------------

# Metres east and north of a corner of the demo district, in UTM 51N.
ORIGIN = (347_500.0, 3_457_000.0)


def _at(dx: float, dy: float) -> tuple[float, float]:
    return ORIGIN[0] + dx, ORIGIN[1] + dy


def _line(*points: tuple[float, float]) -> shapely.LineString:
    return shapely.LineString([_at(*p) for p in points])


@pytest.fixture(scope="module")
def hand(staff: TestClient, module_url: str) -> TestClient:
    """A gas network drawn as a surveyor would: a source, a main with valves a metre from
    its junctions, a branch behind a valve, an end that misses its pipe by 0.5 m, ends 5 cm
    apart that meet, a valve closed already, and a valve that will not turn."""
    pipes = [
        ({"id": "M1", "diameter_mm": 200}, _line((0, 0), (100, 0))),           # source -> J1
        ({"id": "M2", "diameter_mm": 200}, _line((100, 0), (200, 0))),         # J1 -> J2
        ({"id": "M3", "diameter_mm": 200}, _line((200.05, 0), (300, 0))),      # J2 (5 cm off) -> end
        ({"id": "B1"}, _line((100, 0), (100, 100))),       # branch from J1
        ({"id": "B2"}, _line((100, 100), (100, 200))),     # branch on
        ({"id": "L1"}, _line((200, 0), (200, 100))),       # branch from J2, behind the closed valve
        ({"id": "X1"}, _line((150, 50.5), (150, 150))),    # misses M2?  no: misses nothing near
        ({"id": "X2"}, _line((250, 0.5), (250, 80))),      # an end 0.5 m from M3: a near miss
    ]  # fmt: skip
    nodes = [
        ({"id": "S", "kind": "source"}, shapely.Point(_at(0, 0))),
        ({"id": "VA", "kind": "valve", "state": "open"}, shapely.Point(_at(99, 0))),     # on M1
        ({"id": "VB", "kind": "valve", "state": "open"}, shapely.Point(_at(101, 0))),    # on M2
        ({"id": "VC", "kind": "valve", "state": "open"}, shapely.Point(_at(199, 0))),    # on M2
        ({"id": "VD", "kind": "valve", "state": "open", "operable": False},
         shapely.Point(_at(100, 1))),                                                    # on B1
        ({"id": "VE", "kind": "valve", "state": "open"}, shapely.Point(_at(100, 101))),  # on B2
        ({"id": "VF", "kind": "valve", "state": "closed"}, shapely.Point(_at(200, 1))),  # on L1
        ({"id": "H1", "kind": "hydrant"}, shapely.Point(_at(150, 0))),                   # on M2
        ({"id": "FAR", "kind": "junction"}, shapely.Point(_at(260, 30))),                # 10 m off X2
    ]  # fmt: skip
    with psycopg.connect(module_url) as conn:
        (gas_company,) = conn.execute(
            "SELECT code FROM units WHERE code LIKE 'U-%%-GAS' ORDER BY code LIMIT 1"
        ).fetchone()
    _upload(staff, "pipe_nodes", [_feature(p, g) for p, g in nodes], "hand-nodes", network="gas",
            owner_unit=gas_company)  # fmt: skip
    clinic = shapely.Polygon([_at(108, 140), _at(120, 140), _at(120, 160), _at(108, 160)])
    _upload(staff, "buildings", [_feature({"id": "HB1", "name": "社区卫生服务中心", "households": 3}, clinic)],
            "hand-buildings")  # fmt: skip
    _upload(
        staff,
        "pipes",
        [_feature(p, g) for p, g in pipes],
        "hand",
        network="gas",
        owner_unit=gas_company,
    )
    return staff


def _ids(rows: list[dict[str, Any]]) -> set[str]:
    return {r["source_id"] for r in rows}


def _gas(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    answer = client.post("/network/gas/isolate", json=body, headers=KEY)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _hand(pipe: str) -> dict[str, Any]:
    return {"pipe": {"source_id": pipe, "dataset": "hand"}}


def test_a_valve_a_metre_from_a_junction_splits_the_pipe_there(hand: TestClient):
    found = _gas(hand, _hand("M2"))
    assert _ids(found["isolated_pipes"]) == {"M2"}
    assert _ids(found["valves"]) == {"VB", "VC"}
    assert _ids(found["hydrants"]) == {"H1"}
    assert found["total_length_m"] == pytest.approx(98, abs=0.5)  # from valve to valve


def test_ends_a_few_centimetres_apart_meet_and_half_a_metre_apart_do_not(hand: TestClient):
    found = _gas(hand, _hand("M3"))
    # M3 meets M2 at J2 through the 5 cm gap: J2's side of VC is in M3's part.
    assert _ids(found["isolated_pipes"]) == {"M3"}
    assert _ids(found["valves"]) == {"VC"}
    assert _ids(found["valves_closed_already"]) == {"VF"}
    report = hand.get("/network/gas/check", headers=KEY).json()
    misses = {
        m["pipe"]["source_id"]: m for m in report["near_misses"] if m["pipe"]["dataset"] == "hand"
    }
    assert set(misses) == {"X2"} and misses["X2"]["near_pipe"]["source_id"] == "M3"
    assert misses["X2"]["gap_m"] == pytest.approx(0.5, abs=0.01)
    off = {n["source_id"]: n for n in report["off_network_nodes"] if n["dataset"] == "hand-nodes"}
    assert set(off) == {"FAR"} and off["FAR"]["nearest_pipe_m"] == pytest.approx(10, abs=0.05)


def test_an_inoperable_valve_is_passed_and_the_isolation_grows_to_the_next_ring(hand: TestClient):
    found = _gas(hand, _hand("B1"))
    # VD (on B1, 1 m from J1) will not turn: J1's part joins, bounded by VA, VB and VE.
    assert _ids(found["valves"]) == {"VA", "VB", "VE"}
    assert _ids(found["valves_skipped"]) == {"VD"}
    assert found["valves_skipped"][0]["reason"] == "inoperable"
    assert _ids(found["isolated_pipes"]) == {"B1"}


def test_closing_the_valves_cuts_off_what_lies_beyond_them(hand: TestClient):
    found = _gas(hand, _hand("M1"))
    assert _ids(found["valves"]) == {"VA"}
    # Everything past VA loses the source, except what was cut off already (L1, behind VF).
    cut = _ids(found["cut_off_pipes"])
    assert {"M2", "M3", "B1", "B2"} <= cut and "L1" not in cut
    # The clinic 8 m from B2 has no service connection: the nearest gas pipe serves it.
    clinic = next(b for b in found["buildings"] if b["source_id"] == "HB1")
    assert clinic == {
        **clinic,
        "part": "cut_off",
        "served_by": "nearest_pipe",
        "sensitive": True,
        "households": 3,
    }
    assert found["buildings"][0]["sensitive"]  # sensitive sites first
    assert [j["level"] for j in clinic["jurisdictions"]][:1] == ["city"]
    again = _gas(
        hand, {**_hand("M2"), "failed_valves": [{"source_id": "VC", "dataset": "hand-nodes"}]}
    )
    assert _ids(again["valves"]) == {"VB"} and _ids(again["isolated_pipes"]) == {"M2", "M3"}


def test_traces_follow_the_pipes_and_stop_at_closed_valves(hand: TestClient):
    def trace(body: dict[str, Any]) -> dict[str, Any]:
        answer = hand.post("/network/gas/trace", json=body, headers=KEY)
        assert answer.status_code == 200, answer.text
        return answer.json()

    connected = trace({"trace": "connected", "from": _hand("M1")})
    pipes = {f["properties"]["source_id"]: f["properties"] for f in connected["features"]
             if f["properties"]["layer"] == "pipes" and f["properties"]["dataset"] == "hand"}  # fmt: skip
    assert set(pipes) == {"M1", "M2", "M3", "B1", "B2", "L1"}  # not X1 nor X2
    # L1 only up to the closed valve VF, a metre from the junction.
    assert not pipes["L1"]["whole"] and pipes["L1"]["length_m"] == pytest.approx(1, abs=0.05)
    assert all(p["whole"] for name, p in pipes.items() if name != "L1")
    path = trace({"trace": "path", "from": _hand("B2"), "to": _hand("M3")})
    assert {f["properties"]["source_id"] for f in path["features"]
            if f["properties"]["layer"] == "pipes"} == {"B2", "B1", "M2", "M3"}  # fmt: skip
    assert path["found"] and path["total_length_m"] == pytest.approx(400, abs=1)  # both pipes whole
    apart = trace({"trace": "path", "from": _hand("M1"), "to": _hand("L1")})
    assert apart["found"] is False and "closed valve" in apart["message"]


def test_the_topology_follows_every_change(hand: TestClient):
    before = _gas(hand, _hand("B2"))
    assert _ids(before["valves"]) == {"VE"}
    # A new valve on B2, near its far end: B2's part now ends there too.
    _upload(hand, "pipe_nodes", [_feature({"id": "VG", "kind": "valve", "state": "open"},
                                          shapely.Point(_at(100, 199)))], "hand-more", network="gas")  # fmt: skip
    after = _gas(hand, _hand("B2"))
    assert _ids(after["valves"]) == {"VE", "VG"}


def test_drainage_flows_downstream_to_its_outfalls(staff: TestClient):
    # A drainage pipe of the demo city, and what flows from it: every piece leads on down.
    first = staff.post("/network/drainage/trace", json={"trace": "downstream",
                       "from": {"point": {"lon": 121.40, "lat": 31.24}}}, headers=KEY)  # fmt: skip
    assert first.status_code == 200, first.text
    found = first.json()
    assert found["features"] and found["total_length_m"] > 0
    up = staff.post("/network/drainage/trace", json={"trace": "upstream",
                    "from": {"point": {"lon": 121.40, "lat": 31.24}}}, headers=KEY).json()  # fmt: skip
    ups = {f["properties"]["id"] for f in up["features"] if f["properties"]["layer"] == "pipes"}
    downs = {
        f["properties"]["id"] for f in found["features"] if f["properties"]["layer"] == "pipes"
    }
    assert len(ups & downs) == 1  # only the pipe traced from


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("/network/sewer/isolate", {"pipe": {"id": 1}}, 404, "no pipe network 'sewer'"),
        ("/network/heat/isolate", {"pipe": {"id": 999_999_999}}, 404, "no pipe with id 999999999"),
        ("/network/heat/isolate", {"pipe": {"id": 2**64}}, 400, "pipe"),
        ("/network/heat/isolate", {"pipe": {"id": "12"}}, 400, "pipe"),
        ("/network/heat/isolate", {"pipe": {"source_id": "x\u0000"}}, 400, "NUL"),
        ("/network/heat/isolate", {"point": {"lon": float("nan"), "lat": 1}}, 400, "lon"),
        ("/network/heat/isolate", {}, 400, "pipe"),
        (
            "/network/heat/isolate",
            {"pipe": {"id": 1}, "point": {"lon": 1, "lat": 1}},
            400,
            "one of",
        ),
        ("/network/heat/isolate", {"pipe": {"source_id": "20"}, "colour": 1}, 400, "colour"),
        (
            "/network/heat/isolate",
            {"pipe": {"source_id": "20"}, "failed_valves": [{"source_id": "N-10"}]},
            400,
            "not a valve",
        ),
        (
            "/network/heat/trace",
            {"trace": "sideways", "from": {"pipe": {"source_id": "20"}}},
            400,
            "trace",
        ),
        (
            "/network/heat/trace",
            {"trace": "path", "from": {"pipe": {"source_id": "20"}}},
            400,
            "to",
        ),
    ],
)
def test_bad_requests_say_what_is_wrong(staff: TestClient, path, body, status, words):
    answer = staff.post(
        path,
        content=json.dumps(body, allow_nan=True),
        headers={**KEY, "Content-Type": "application/json"},
    )
    assert answer.status_code == status, answer.text
    assert words in answer.text


def test_a_source_id_in_several_datasets_must_be_told_apart(hand: TestClient):
    # "M1" is a pipe of the hand-drawn network; Net3 has a link "1" but no "M1": add one.
    _upload(
        hand,
        "pipes",
        [_feature({"id": "M1", "diameter_mm": 200}, _line((0, 500), (50, 500)))],
        "hand-copy",
        network="gas",
    )
    answer = hand.post("/network/gas/isolate", json={"pipe": {"source_id": "M1"}}, headers=KEY)
    assert answer.status_code == 400 and "several datasets" in answer.json()["detail"]
    assert "hand" in answer.json()["detail"] and "hand-copy" in answer.json()["detail"]


def test_network_routes_need_a_key_of_staff(staff: TestClient):
    assert staff.post("/network/heat/isolate", json={"pipe": {"id": 1}}).status_code == 401
    assert staff.get("/network/heat/check").status_code == 401


def test_twin_network_check_prints_the_report_and_fails_on_problems(
    hand: TestClient, module_url: str
):
    clean = run_twin("network", "check", "heat", env={"TWIN_DATABASE_URL": module_url})
    assert clean.returncode == 0, clean.stderr
    assert "heat: 119 pipes" in clean.stdout and "parts: 1" in clean.stdout
    found = run_twin("network", "check", "gas", env={"TWIN_DATABASE_URL": module_url})
    assert found.returncode == 1, found.stderr
    assert "misses pipe" in found.stdout and "by 0.5" in found.stdout, found.stdout
    wrong = run_twin("network", "check", "sewer", env={"TWIN_DATABASE_URL": module_url})
    assert wrong.returncode != 0 and "no pipe network 'sewer'" in wrong.stderr
    assert "Traceback" not in wrong.stderr


# -- the burst workflow -------------------------------------------------------------------


def _water_main_with_valves(client: TestClient, module_url: str) -> tuple[int, dict[str, Any]]:
    """A water main of the demo city whose isolation closes valves and empties buildings."""
    mains = demo_water_mains(module_url, 200)
    for pipe in mains:
        found = _isolate(client, {"pipe": {"id": pipe}}, "water")
        if found["valves"] and found["buildings"]:
            return pipe, found
    raise AssertionError("no demo water main with valves and buildings")


def _nearest_address(url: str, incident: dict[str, Any]) -> str:
    """The address of the building nearest the incident that has one (the demo city has
    one in every street block, so one lies within the burst's 150 m)."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT address FROM buildings WHERE address <> '' ORDER BY"
            " ST_Distance(geom::geography, ST_SetSRID(ST_MakePoint(%s, %s), 4326)::geography)"
            " LIMIT 1", (incident["location"]["lon"], incident["location"]["lat"]),
        ).fetchone()  # fmt: skip
    assert row is not None
    return row[0]


def test_a_burst_becomes_an_incident_valve_work_orders_and_notices(
    staff: TestClient, module_url: str
):
    pipe, isolation = _water_main_with_valves(staff, module_url)
    answer = staff.post("/network/water/bursts", json={"pipe": {"id": pipe}, "note": "路面冒水"},
                        headers={**KEY, "Idempotency-Key": "burst-1"})  # fmt: skip
    assert answer.status_code == 201, answer.text
    burst = answer.json()
    incident = burst["incident"]
    assert incident["category"]["code"] == "SJ040101" and incident["status"] == "dispatched"
    owner = isolation["burst"]["pipe"]["owner_unit"]
    assert incident["unit"]["code"] == owner and "路面冒水" in incident["description"]
    assert any(a["layer"] == "pipes" and a["id"] == pipe for a in incident["assets"])
    # The crew finds it by the nearest building's address, as the valves' crews do theirs.
    assert incident["address"] == f"near {_nearest_address(module_url, incident)}"
    # One work order per valve to close, each to the valve's owner.
    assert sorted(o["valve"] for o in burst["work_orders"]) == sorted(
        v["id"] for v in isolation["valves"]
    )
    owners = {v["id"]: v["owner_unit"] for v in isolation["valves"]}
    for order in burst["work_orders"]:
        assert order["unit"]["code"] == owners[order["valve"]], order
        got = staff.get(f"/incidents/{order['incident_id']}", headers=KEY).json()
        assert got["category"]["code"] == "SJ040105" and str(incident["id"]) in got["description"]
        assert got["address"] == f"near {_nearest_address(module_url, got)}"
    # The notice list: every building that loses supply, sensitive sites first.
    assert [n["building"] for n in burst["notices"]] == [b["id"] for b in isolation["buildings"]]
    flags = [n["sensitive"] for n in burst["notices"]]
    assert flags == sorted(flags, reverse=True)
    assert all(n["jurisdictions"] for n in burst["notices"])
    assert burst["overlapping"] == []

    # A retry with the same key is the same burst; another burst under it is refused.
    again = staff.post("/network/water/bursts", json={"pipe": {"id": pipe}, "note": "路面冒水"},
                       headers={**KEY, "Idempotency-Key": "burst-1"})  # fmt: skip
    assert again.status_code == 200 and again.json()["id"] == burst["id"]
    other = staff.post("/network/water/bursts", json={"pipe": {"id": pipe}},
                       headers={**KEY, "Idempotency-Key": "burst-1"})  # fmt: skip
    assert other.status_code == 409, other.text

    # A second burst on the same part while the first is open: each reports the other.
    second = staff.post("/network/water/bursts", json={"pipe": {"id": pipe}}, headers=KEY).json()
    assert [o["id"] for o in second["overlapping"]] == [burst["id"]]
    assert second["overlapping"][0]["shared_valves"] == sorted(owners)
    first_now = staff.get(f"/network/bursts/{burst['id']}", headers=KEY).json()
    assert [o["id"] for o in first_now["overlapping"]] == [second["id"]]
    listed = staff.get("/network/bursts?network=water&status=open", headers=KEY).json()["bursts"]
    assert {b["id"] for b in listed} >= {burst["id"], second["id"]}

    # Closing: who closed it and how it was mended are kept; a body it cannot take closes
    # nothing.
    close = f"/network/bursts/{burst['id']}/close"
    for bad, words in (({"notes": "typo"}, "notes"), ({"note": "a\u0000b"}, "NUL"),
                       ({"note": 5}, "note"), ([1], "body")):  # fmt: skip
        refused = staff.post(close, json=bad, headers=KEY)
        assert refused.status_code == 400 and words in refused.json()["detail"], refused.text
    assert staff.get(f"/network/bursts/{burst['id']}", headers=KEY).json()["status"] == "open"
    closed = staff.post(close, json={"note": "换管 DN300，已恢复供水"}, headers=KEY)
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    assert (
        closed.json()["closed_by"] == "t"
        and closed.json()["close_note"] == "换管 DN300，已恢复供水"
    )
    listed = staff.get("/network/bursts?status=closed", headers=KEY).json()["bursts"]
    assert {"id": burst["id"], "closed_by": "t"}.items() <= next(
        b for b in listed if b["id"] == burst["id"]
    ).items()
    assert staff.post(close, headers=KEY).status_code == 409
    assert (
        staff.post(f"/network/bursts/{second['id']}/close", headers=KEY).json()["close_note"]
        is None
    )
    assert staff.get(f"/network/bursts/{second['id']}", headers=KEY).json()["overlapping"] == []
    assert staff.get("/network/bursts/999999", headers=KEY).status_code == 404
    assert staff.post("/network/water/bursts", json={"pipe": {"id": pipe}}).status_code == 401
    unknown = staff.post("/network/heat/bursts", json={"pipe": {"source_id": "20"},
                         "category": "NOPE"}, headers=KEY)  # fmt: skip
    assert unknown.status_code == 400 and "NOPE" in unknown.json()["detail"]


def test_an_epanet_import_keeps_its_own_node_ids(fresh_url: str, tmp_path: Path):
    wn = wntr.network.WaterNetworkModel(str(NET3))
    for _, node in wn.nodes():
        node.coordinates = _xy(node.coordinates)
    for _, link in wn.links():
        link.vertices = [_xy(v) for v in link.vertices]
    path = tmp_path / "net3.inp"
    wntr.network.write_inpfile(wn, str(path))
    settings = settings_for(make_data_dir("twin-network-"), api={"api_keys": {"test-key": "t"}})
    with TestClient(create_app(settings, database_url=fresh_url)) as client:
        answer = client.post("/layers/pipes/import", headers=KEY,
                             files={"file": ("net3.inp", path.read_bytes(), "text/plain")},
                             data={"crs": CRS, "values": json.dumps({"network": "heat"})})  # fmt: skip
        assert answer.status_code == 200, answer.text
        report = client.get("/network/heat/check", headers=KEY).json()
        # Every EPANET node is a node of the network, tied by its name, none on no pipe.
        assert report["nodes"] == wn.num_nodes + wn.num_pumps + wn.num_valves
        assert report["component_count"] == 1 and report["off_network_count"] == 0
        assert report["sources"] == wn.num_reservoirs + wn.num_tanks
        found = client.post("/network/heat/trace", headers=KEY, json={
            "trace": "path", "from": {"node": {"source_id": "River"}},
            "to": {"node": {"source_id": "Lake"}}}).json()  # fmt: skip
        assert found["found"] and found["total_length_m"] > 0
        names = {f["properties"]["source_id"] for f in found["features"]
                 if f["properties"]["layer"] == "pipe_nodes"}  # fmt: skip
        assert {"River", "Lake"} <= names


def test_a_burst_on_a_network_imported_from_files_goes_to_its_owner(hand: TestClient):
    answer = hand.post("/network/gas/bursts", json=_hand("M1"), headers=KEY)
    assert answer.status_code == 201, answer.text
    burst = answer.json()
    owner = burst["isolation"]["burst"]["pipe"]["owner_unit"]
    assert owner and burst["incident"]["unit"]["code"] == owner
    assert burst["incident"]["category"]["code"] == "SJ040104"  # 燃气管道破损
    assert [o["valve_source_id"] for o in burst["work_orders"]] == ["VA"]
    assert burst["work_orders"][0]["unit"]["code"] == owner
    # The clinic beyond VA is told first: a sensitive site.
    assert burst["notices"][0]["source_id"] == "HB1" and burst["notices"][0]["sensitive"]
    assert hand.post(f"/network/bursts/{burst['id']}/close", headers=KEY).status_code == 200


def test_a_burst_behind_a_closed_valve_says_its_part_reaches_no_source(hand: TestClient):
    found = _gas(hand, _hand("L1"))
    assert _ids(found["valves_closed_already"]) == {"VF"} and found["cut_off_pipes"] == []
    assert any("reaches no source" in w for w in found["warnings"]), found["warnings"]
    fed = _gas(hand, _hand("M2"))
    assert not any("reaches no source" in w for w in fed["warnings"])


def test_answers_hold_numbers_as_numbers(hand: TestClient):
    found = _gas(hand, _hand("M2"))
    assert all(isinstance(p["length_m"], float) for p in found["isolated_pipes"])
    traced = hand.post("/network/gas/trace", json={"from": _hand("M2")}, headers=KEY).json()
    sizes = {f["properties"]["source_id"]: f["properties"].get("diameter_mm")
             for f in traced["features"] if f["properties"]["layer"] == "pipes"}  # fmt: skip
    assert sizes["M1"] == 200.0 and sizes["B1"] is None
    # 98 m of DN200 between the valves: π × 0.1² × 98.
    assert found["volume_m3"] == pytest.approx(3.08, abs=0.02) and found["volume_known_share"] == 1
    assert isinstance(traced["total_length_m"], float) and isinstance(traced["pipe_count"], int)


def test_traces_say_when_mains_flow_both_ways_and_households_are_null_when_unknown(
    staff: TestClient, module_url: str
):
    pipe, isolation = _water_main_with_valves(staff, module_url)
    down = staff.post("/network/water/trace", headers=KEY,
                      json={"trace": "downstream", "from": {"pipe": {"id": pipe}}, "limit": 5}).json()  # fmt: skip
    assert any("flow both ways" in w for w in down["warnings"]), down.get("warnings")
    # The demo's buildings record no households: none known is null, not 0.
    assert isolation["households"] is None and isolation["households_known_for"] == 0
