"""Deterministic generator of a fictional demo city district in Shanghai (~121.40E, 31.24N).

``generate_city(size, seed)`` returns column-oriented tables ready for the
loader to COPY into PostGIS: jurisdictions, units, buildings, public_spaces,
pipe_nodes, pipes and sensors.  Geometries are shapely objects in lon/lat
(EPSG:4326); everything is built in a local metric frame first (see ``_geo``).

Pure computation: no database, no file or network I/O, no clock.  The same
``size`` and ``seed`` always give identical output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import shapely

from ._areas import district_faces, split, split_superblocks, superblocks
from ._buildings import USES, district_buildings
from ._geo import Elevation, Warp, as_multipolygon, multipolygons_fast, to_lonlat
from ._names import PLACE, cn_number, district_name
from ._networks import build_networks
from ._roads import City, Layout, build_city

SIZES = ("small", "default", "large")

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class _SizeConfig:
    nx: int
    ny: int
    width: float
    height: float
    streets: tuple[int, int]
    grids: tuple[int, int]  # grids per street
    services: bool  # a service connection for every building


_CONFIG = {
    "small": _SizeConfig(1, 1, 1800.0, 1400.0, (4, 4), (5, 7), True),
    "default": _SizeConfig(1, 1, 5600.0, 4600.0, (6, 6), (18, 22), True),
    # 49 districts of the default size tile a ~39 x 32 km city.  Service
    # connections are skipped here: +1M nodes and pipes for little demo value.
    "large": _SizeConfig(7, 7, 5600.0, 4600.0, (4, 6), (18, 22), False),
}

# km² per square degree at the city's latitude (for the area_km2 property only).
_KM2_PER_DEG2 = 111.32**2 * float(np.cos(np.radians(31.24)))
BASE_TIME = datetime(2026, 11, 1, 8, 0, tzinfo=timezone(timedelta(hours=8)))


@dataclass
class DemoCity:
    """Generated tables: ``tables[name][column]`` is a list or 1-D numpy array."""

    size: str
    seed: int
    tables: dict[str, dict[str, Any]]


def _noop(step: str, done: int, total: int) -> None:
    del step, done, total


def generate_city(
    size: str = "default", seed: int = 1, progress: Progress | None = None
) -> DemoCity:
    """Generate the demo city.

    Args:
        size: ``"small"`` (one ~3 km² district, ~1.5k buildings, for tests),
            ``"default"`` (one ~26 km² district, 6 streets, ~25k buildings) or
            ``"large"`` (7 x 7 districts, >1M buildings; water service
            connections are not generated for this size).
        seed: seed for ``numpy.random.default_rng``; same seed + size => same output.
        progress: optional ``progress(step_name, done, total)`` callback.

    Returns:
        A :class:`DemoCity` whose ``tables`` follow the loader contract: explicit
        integer ids (1..n) in buildings, public_spaces, pipe_nodes, pipes and
        sensors; string codes as keys in jurisdictions and units.

    Raises:
        ValueError: if ``size`` is not one of :data:`SIZES`.
    """
    if size not in _CONFIG:
        raise ValueError(f"unknown demo city size {size!r}; expected one of {', '.join(SIZES)}")
    cfg = _CONFIG[size]
    report = progress or _noop
    rng = np.random.default_rng(seed)
    warp = Warp.random(rng)
    elev = Elevation.random(rng)

    report("roads", 0, 1)
    city = build_city(rng, Layout(cfg.nx, cfg.ny, cfg.width, cfg.height), warp)
    report("roads", 1, 1)

    buildings, bld_service = _buildings(rng, city, elev, report)
    public = _public_spaces(city, buildings.pop("_open"))
    report("networks", 0, 1)
    nodes, pipes = build_networks(rng, city, elev, bld_service if cfg.services else None, report)
    report("jurisdictions", 0, 1)
    juris, dcodes = _jurisdictions(rng, city, cfg)
    report("jurisdictions", 1, 1)
    units = _units(rng, juris, dcodes)
    _owners(city, dcodes, nodes, pipes)
    report("sensors", 0, 1)
    sensors = _sensors(rng, buildings, public, nodes, pipes, elev)
    _more_owners(city, dcodes, public, sensors, {"pipe_nodes": nodes, "pipes": pipes})
    report("sensors", 1, 1)

    # One conversion to lon/lat at the very end, table by table.
    tables = {
        "jurisdictions": juris,
        "units": units,
        "buildings": buildings,
        "public_spaces": public,
        "pipe_nodes": nodes,
        "pipes": pipes,
        "sensors": sensors,
    }
    names = list(tables)
    for i, name in enumerate(names):
        report("project", i, len(names))
        if name in ("jurisdictions", "units"):
            continue  # built directly in lon/lat
        geom = tables[name]["geom"]
        if isinstance(geom, np.ndarray) and geom.dtype != object:
            geom = shapely.points(geom)
        tables[name]["geom"] = to_lonlat(np.asarray(geom, dtype=object))
    report("project", len(names), len(names))
    return DemoCity(size=size, seed=seed, tables=tables)


def _buildings(
    rng: np.random.Generator, city: City, elev: Elevation, report: Progress
) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Buildings of all districts with ids, addresses and ground elevation."""
    main_roads = city.road_polys[city.road_main]
    road_tree = shapely.STRtree(main_roads)
    parts = []
    opens: list[tuple[Any, str, str | None]] = []
    nd = len(city.district_poly)
    for d, poly in enumerate(city.district_poly):
        report("buildings", d, nd)
        near = road_tree.query(poly, predicate="intersects")
        db = district_buildings(
            rng, city.blocks[d], poly, city.main_crossings, city.river, main_roads[near]
        )
        parts.append(db)
        opens += list(zip(db.open_geom, db.open_kind, db.open_name, strict=True))
    report("buildings", nd, nd)
    geom = np.concatenate([p.geom for p in parts])
    use = np.concatenate([p.use for p in parts])
    floors = np.concatenate([p.floors for p in parts])
    height = np.concatenate([p.height for p in parts])
    name: list[str | None] = [x for p in parts for x in p.name]
    n = len(geom)
    ids = np.arange(1, n + 1)

    # Address: nearest road, house number from the position along it, odd/even by side.
    r = city.roads
    edges = r.lines.geoms()
    cen = shapely.centroid(geom)
    _, e = shapely.STRtree(edges).query_nearest(cen, all_matches=False)
    s = shapely.line_locate_point(edges[e], cen)
    pt, tan = r.lines.interpolate(e, s)
    cxy = shapely.get_coordinates(cen)
    side = ((cxy - pt)[:, 1] * tan[:, 0] - (cxy - pt)[:, 0] * tan[:, 1]) > 0
    number = 2 * np.floor((r.edge_base[e] + s) / 14.0).astype(np.int64) + 1 + side
    road = [r.line_name[i] for i in r.edge_line[e].tolist()]
    address = [f"{a}{b}号" for a, b in zip(road, number.tolist(), strict=True)]

    table = {
        "id": ids,
        "source_id": [f"B{i:07d}" for i in ids.tolist()],
        "name": name,
        "address": address,
        "use": np.array(USES, dtype=object)[use],
        "height_m": height.astype(float),
        "height_estimated": np.zeros(n, bool),
        "floors": floors.astype(np.int64),
        "base_elevation_m": np.round(elev(cxy), 2),
        "properties": [{} for _ in range(n)],
        "geom": multipolygons_fast(geom),
        "_open": opens,
    }
    gfa = shapely.area(geom) * floors
    return table, (geom, ids, gfa)


def _public_spaces(city: City, opens: list[tuple[Any, str, str | None]]) -> dict[str, Any]:
    """Roads, river, green strips along it, parks, ponds, squares and plazas."""
    geoms: list[Any] = []
    kinds: list[str] = []
    names: list[str | None] = []
    props: list[dict[str, Any]] = []
    r = city.roads
    for g, line, main, width in zip(
        city.road_polys, city.road_line, city.road_main, city.road_width, strict=True
    ):
        geoms.append(g)
        kinds.append("road")
        names.append(r.line_name[int(line)])
        props.append({"class": "main" if main else "secondary", "width_m": float(width)})
    tree = shapely.STRtree(city.road_polys)
    for poly in city.district_poly:
        water = shapely.intersection(city.river, poly)
        if shapely.is_empty(water) or shapely.area(water) < 100:
            continue
        geoms.append(water)
        kinds.append("water")
        names.append("苏州河")
        props.append({"type": "river", "width_m": 66.0})
        near = tree.query(poly, predicate="intersects")
        strip = shapely.difference(
            shapely.intersection(city.river_zone, poly),
            shapely.union_all(np.append(city.road_polys[near], city.river)),
        )
        if not shapely.is_empty(strip):
            geoms.append(strip)
            kinds.append("green")
            names.append("滨河绿带")
            props.append({"type": "riverside_green"})
    for g, k, nm in opens:
        geoms.append(g)
        kinds.append(k)
        names.append(nm)
        props.append({"type": "pond"} if k == "water" else {})
    n = len(geoms)
    ids = np.arange(1, n + 1)
    return {
        "id": ids,
        "source_id": [f"P{i:07d}" for i in ids.tolist()],
        "kind": kinds,
        "name": names,
        "properties": props,
        "geom": as_multipolygon(np.array(geoms, dtype=object)),
    }


def _union(faces: np.ndarray, members: np.ndarray) -> Any:
    """The area made of ``faces[members]``, which share their edges exactly."""
    return faces[members[0]] if len(members) == 1 else shapely.coverage_union_all(faces[members])


def _jurisdictions(
    rng: np.random.Generator, city: City, cfg: _SizeConfig
) -> tuple[dict[str, Any], list[str]]:
    """City > districts > streets > grids > communities, siblings tiling parents."""
    code: list[str] = []
    name: list[str] = []
    level: list[str] = []
    parent: list[str | None] = []
    props: list[dict[str, Any]] = []
    geoms: list[Any] = []

    def add(c: str, n: str, lv: str, p: str | None, g: Any, extra: dict[str, Any]) -> None:
        code.append(c)
        name.append(n)
        level.append(lv)
        parent.append(p)
        geoms.append(g)
        props.append({"area_km2": round(float(shapely.area(g)) * _KM2_PER_DEG2, 4), **extra})

    # Every area is a union of whole faces of the road net (see _areas), projected
    # once: neighbours share the very same vertices, so they tile their parent exactly.
    single = len(city.district_poly) == 1
    dpolys = to_lonlat(np.array(city.district_poly, dtype=object))
    city_geom = shapely.union_all(dpolys)
    add("310000000000", "上海市", "city", None, city_geom, {})
    edges = city.roads.lines.geoms()
    mids = shapely.line_interpolate_point(edges, 0.5, normalized=True)
    tree = shapely.STRtree(edges)
    dcodes = []
    word = 0
    for d, dpoly in enumerate(dpolys):
        dc = "310199" if single else f"{310181 + d}"
        dcodes.append(dc)
        dname = district_name(d, single)
        add(dc + "000000", dname, "district", "310000000000", dpoly, {})
        faces, graph = district_faces(city, d, edges, mids, tree)
        faces = to_lonlat(faces)
        label = superblocks(graph)
        blocks = graph.coarsen(label)

        ns = int(rng.integers(cfg.streets[0], cfg.streets[1] + 1))
        for si, parts in enumerate(split(blocks, np.arange(blocks.n), ns)):
            sc = f"{dc}{si + 1:03d}"
            sword = PLACE[(word * 7 + 3) % len(PLACE)]
            word += 1
            add(sc + "000", f"{sword}路街道", "street", dc + "000000",
                _union(faces, np.flatnonzero(np.isin(label, parts))), {})  # fmt: skip
            ng = int(rng.integers(cfg.grids[0], cfg.grids[1] + 1))
            cn = 0
            for gi, members in enumerate(split_superblocks(graph, label, blocks, parts, ng)):
                gc = f"{sc}G{gi + 1:02d}"
                add(gc, f"{sword}第{cn_number(gi + 1)}网格", "grid", sc + "000",
                    _union(faces, members), {})  # fmt: skip
                nc = int(rng.integers(1, 4))
                for cm in split(graph, members, nc):
                    cg = _union(faces, cm)
                    cn += 1
                    cword = PLACE[int(rng.integers(len(PLACE)))]
                    suffix = ("居委会", "社区", "第一居委会", "第二居委会")[int(rng.integers(4))]
                    households = int(shapely.area(cg) * _KM2_PER_DEG2 * rng.uniform(2500, 6000))
                    add(
                        f"{sc}{cn:03d}",
                        f"{cword}{suffix}",
                        "community",
                        gc,
                        cg,
                        {"households": households},
                    )
    table = {
        "code": code,
        "name": name,
        "level": level,
        "parent_code": parent,
        "properties": props,
        "geom": as_multipolygon(np.array(geoms, dtype=object)),
    }
    return table, dcodes


_DEPARTMENTS = (
    ("CENTRE", "区城运中心", "centre", "operations"),
    ("WATER", "水务局", "department", "water"),
    ("GAS", "燃气公司", "company", "gas"),
    ("POWER", "电力公司", "company", "power"),
    ("HOUSING", "房管局", "department", "housing"),
    ("CITYMGMT", "城管执法局", "department", "city management enforcement"),
    ("GREEN", "绿化市容局", "department", "greening sanitation"),
    ("POLICE", "公安分局", "department", "police"),
    ("FIRE", "消防救援支队", "department", "fire"),
    ("ENV", "生态环境局", "department", "environment"),
    ("ROADS", "建设和管理委员会", "department", "roads construction"),
    ("MARKET", "市场监管局", "department", "market supervision"),
)
_STREET_UNITS = (
    ("OFFICE", "街道办事处", "street_office", "street administration"),
    ("CENTRE", "街道城运中心", "centre", "operations"),
    ("CMTEAM", "城管中队", "team", "city management enforcement"),
    ("HOUSING", "房办", "team", "housing"),
)


_WATER_COMPANY = ("WATERCO", "自来水公司", "company", "water supply")
# Which district unit owns each network's pipes and nodes (telecom: no unit of the demo).
NETWORK_OWNERS = {"water": "WATERCO", "drainage": "WATER", "sewage": "WATER", "gas": "GAS",
                  "power": "POWER"}  # fmt: skip


def _district_of(districts: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The index of the district each point lies in (the nearest one for a point outside
    every district). Asked from the districts' side, so that each outline (a union of
    blocks, thousands of vertices) is prepared once; a nearest query measured the distance
    to the outlines point by point."""
    district = np.full(len(points), -1, dtype=int)
    hit, inside = shapely.STRtree(points).query(districts, predicate="intersects")
    district[inside[::-1]] = hit[::-1]  # on a shared edge: the first district
    outside = np.flatnonzero(district < 0)
    if len(outside):
        pairs = shapely.STRtree(districts).query_nearest(points[outside], all_matches=False)
        district[outside[pairs[0]]] = pairs[1]
    return district


def _owners(city: City, dcodes: list[str], nodes: dict[str, Any], pipes: dict[str, Any]) -> None:
    """Each pipe and node's owner_unit: its network's unit of the district it lies in (a
    pipe: where it starts)."""
    districts = np.asarray(list(city.district_poly), dtype=object)
    for table in (nodes, pipes):
        geom = table["geom"]
        if isinstance(geom, np.ndarray) and geom.dtype != object:
            points = shapely.points(geom)
        else:
            points = shapely.get_point(np.asarray(geom, dtype=object), 0)
        district = _district_of(districts, points)
        keys = [NETWORK_OWNERS.get(net) for net in table["network"]]
        table["owner_unit"] = [
            None if key is None else f"U-{dcodes[d]}-{key}"
            for key, d in zip(keys, district.tolist(), strict=True)
        ]


# Who keeps each kind of public space. Water bodies have none of the demo's: the water
# bureau's owner rules are for its drains and manholes, and a street lamp by the river
# must not go to it.
SPACE_OWNERS = {"road": "ROADS", "park": "GREEN", "green": "GREEN", "square": "GREEN",
                "plaza": "GREEN"}  # fmt: skip


def _more_owners(city: City, dcodes: list[str], public: dict[str, Any], sensors: dict[str, Any],
                 networks: dict[str, dict[str, Any]]) -> None:  # fmt: skip
    """The owner_unit of public spaces (by kind, the unit of the district they lie in) and
    of sensors (the owner of the pipe or node a sensor watches, else the district's
    operations centre, which runs the sensing platform). No random draw: a seed's city
    stays as it was."""
    districts = np.asarray(list(city.district_poly), dtype=object)
    spots = shapely.point_on_surface(np.asarray(public["geom"], dtype=object))
    district = _district_of(districts, spots)
    public["owner_unit"] = [
        None if SPACE_OWNERS.get(kind) is None else f"U-{dcodes[d]}-{SPACE_OWNERS[kind]}"
        for kind, d in zip(public["kind"], district.tolist(), strict=True)
    ]
    geom = sensors["geom"]
    points = shapely.points(geom) if isinstance(geom, np.ndarray) and geom.dtype != object else (
        shapely.get_point(np.asarray(geom, dtype=object), 0))  # fmt: skip
    district = _district_of(districts, points)
    owners = []
    for layer, asset, d in zip(sensors["asset_layer"], np.asarray(sensors["asset_id"]).tolist(),
                               district.tolist(), strict=True):  # fmt: skip
        table = networks.get(layer)
        owner = table["owner_unit"][int(asset) - 1] if table is not None and asset else None
        owners.append(owner or f"U-{dcodes[d]}-CENTRE")
    sensors["owner_unit"] = owners


def _units(rng: np.random.Generator, juris: dict[str, Any], dcodes: list[str]) -> dict[str, Any]:
    """Operation centres, departments, street offices and grid workstations."""
    rows: list[tuple[str, str, str, str, dict[str, Any], Any]] = []
    geom_of = dict(zip(juris["code"], juris["geom"], strict=True))
    name_of = dict(zip(juris["code"], juris["name"], strict=True))

    def spot(code: str) -> Any:
        p = shapely.get_coordinates(shapely.point_on_surface(geom_of[code]))[0]
        return shapely.Point(p + rng.uniform(-0.0005, 0.0005, 2))

    rows.append(
        (
            "U-310000-CENTRE",
            "上海市城市运行管理中心",
            "centre",
            "310000000000",
            {"duty": "operations", "level": "city"},
            spot("310000000000"),
        )
    )
    for dc in dcodes:
        jc = dc + "000000"
        for key, nm, kind, duty in _DEPARTMENTS:
            rows.append((f"U-{dc}-{key}", name_of[jc] + nm, kind, jc, {"duty": duty}, spot(jc)))
    for jc, lv in zip(juris["code"], juris["level"], strict=True):
        if lv == "street":
            for key, nm, kind, duty in _STREET_UNITS:
                rows.append(
                    (f"U-{jc[:9]}-{key}", name_of[jc] + nm, kind, jc, {"duty": duty}, spot(jc))
                )
        elif lv == "grid":
            rows.append(
                (
                    f"U-{jc}-WS",
                    name_of[jc] + "工作站",
                    "team",
                    jc,
                    {"duty": "grid inspection"},
                    spot(jc),
                )
            )
    n = len(rows)
    phone = [
        f"021-{int(x):08d}" if rng.random() < 0.9 else None
        for x in rng.integers(52000000, 69999999, n)
    ]
    # The water company, beside each district's water bureau: added after every random
    # draw, so the rest of a seed's city stays as it was.
    at = {r[0]: r[5] for r in rows}
    for dc in dcodes:
        key, nm, kind, duty = _WATER_COMPANY
        spot_ = shapely.Point(shapely.get_coordinates(at[f"U-{dc}-WATER"])[0] + (0.0004, 0.0))
        rows.append((f"U-{dc}-{key}", name_of[dc + "000000"] + nm, kind, dc + "000000",
                     {"duty": duty}, spot_))  # fmt: skip
        phone.append(None)
    return {
        "code": [r[0] for r in rows],
        "name": [r[1] for r in rows],
        "kind": [r[2] for r in rows],
        "jurisdiction_code": [r[3] for r in rows],
        "phone": phone,
        "properties": [r[4] for r in rows],
        "geom": np.array([r[5] for r in rows], dtype=object),
    }


# kind -> (device prefix, unit, low, high, default count for ~25k buildings)
_SENSOR_KINDS: dict[str, tuple[str, str, float | None, float | None, int]] = {
    "water_pressure": ("WP", "kPa", 150.0, 600.0, 420),
    "water_flow": ("WF", "m3/h", None, None, 180),
    "manhole_tilt": ("MT", "degree", None, 5.0, 520),
    "water_level": ("WL", "m", None, 0.3, 260),
    "gas_concentration": ("GC", "%LEL", None, 20.0, 260),
    "smoke": ("SM", "dB/m", None, 0.2, 600),
    "noise": ("NS", "dB(A)", None, 70.0, 200),
    "air_quality": ("AQ", "µg/m3", None, 75.0, 110),
    "structure_tilt": ("ST", "degree", None, 1.0, 160),
    "elevator": ("EL", "m/s2", None, 1.5, 280),
    "electric_fire": ("EF", "mA", None, 300.0, 240),
}


def _sensors(
    rng: np.random.Generator,
    bld: dict[str, Any],
    pub: dict[str, Any],
    nodes: dict[str, Any],
    pipes: dict[str, Any],
    elev: Elevation,
) -> dict[str, Any]:
    """IoT sensors on nodes, pipes, buildings and public spaces (metric geoms)."""
    scale = len(bld["id"]) / 25000.0
    nxy = nodes["geom"]
    nnet = nodes["network"]
    nkind = nodes["kind"]
    ndepth = nodes["depth_m"].astype(float)
    nground = nodes["ground_elevation_m"].astype(float)
    buse = bld["use"]
    bfl = bld["floors"]
    pkind = np.asarray(pub["kind"], dtype=object)

    def pool(kind: str) -> tuple[str, np.ndarray]:
        if kind == "water_pressure":
            return "pipe_nodes", np.flatnonzero(
                (nnet == "water") & np.isin(nkind, ["junction", "hydrant"])
            )
        if kind == "water_flow":
            return "pipes", np.flatnonzero(
                (pipes["network"] == "water") & (pipes["diameter_mm"] >= 300)
            )
        if kind in ("manhole_tilt",):
            return "pipe_nodes", np.flatnonzero(nkind == "manhole")
        if kind == "water_level":
            return "pipe_nodes", np.flatnonzero((nnet == "drainage") & (nkind == "manhole"))
        if kind == "gas_concentration":
            return "pipe_nodes", np.flatnonzero((nnet == "gas") & (nkind == "valve"))
        if kind == "smoke":
            return "buildings", np.flatnonzero(
                np.isin(buse, ["commercial", "public", "education", "health", "mixed"]) | (bfl <= 3)
            )
        if kind == "noise":
            return "public_spaces", np.flatnonzero(pkind == "road")
        if kind == "air_quality":
            return "public_spaces", np.flatnonzero(np.isin(pkind, ["park", "road", "square"]))
        if kind == "structure_tilt":
            return "buildings", np.flatnonzero(bfl <= 3)
        if kind == "elevator":
            return "buildings", np.flatnonzero(bfl >= 11)
        return "buildings", np.flatnonzero(
            np.isin(buse, ["commercial", "mixed", "office"]) | (bfl <= 3)
        )

    cols: dict[str, list[Any]] = {
        k: []
        for k in (
            "kind",
            "unit_of_measure",
            "threshold_low",
            "threshold_high",
            "elevation_m",
            "asset_layer",
            "asset_id",
            "latest_value",
            "device_id",
            "geom",
        )
    }
    for kind, (prefix, unit, low, high, base) in _SENSOR_KINDS.items():
        layer, cand = pool(kind)
        n = min(len(cand), max(12, round(base * scale)))
        if n == 0:
            continue
        pick = np.sort(rng.choice(cand, size=n, replace=False))
        if layer == "pipe_nodes":
            xy = nxy[pick]
            el = nground[pick] - np.where(nkind[pick] == "hydrant", -0.8, ndepth[pick] * 0.5)
            ids = nodes["id"][pick]
        elif layer == "pipes":
            g = shapely.line_interpolate_point(pipes["geom"][pick], 0.5, normalized=True)
            xy = shapely.get_coordinates(g)
            el = elev(xy) - pipes["depth_m"][pick].astype(float)
            ids = pipes["id"][pick]
        elif layer == "buildings":
            xy = shapely.get_coordinates(shapely.point_on_surface(bld["geom"][pick]))
            el = bld["base_elevation_m"][pick] + bld["height_m"][pick] * rng.uniform(0.05, 0.9, n)
            ids = bld["id"][pick]
        else:
            g = shapely.point_on_surface(pub["geom"][pick])
            xy = shapely.get_coordinates(g)
            el = elev(xy) + (0.0 if kind == "water_level" else 4.0)
            ids = pub["id"][pick]
        val = _values(rng, kind, n, pipes["diameter_mm"][pick] if layer == "pipes" else None)
        hi = np.full(n, high, dtype=object)
        if kind == "water_level":
            # In manholes the alarm is the water nearing the cover, not road ponding.
            hi = np.round(ndepth[pick] - 0.5, 2).astype(object)
            val = np.round(rng.uniform(0.05, 0.5, n) * ndepth[pick], 2)
        if kind == "water_flow":
            hi = np.round(_capacity(pipes["diameter_mm"][pick]), 1).astype(object)
        # A few percent of sensors currently read beyond their thresholds.
        hif = np.array([np.nan if h is None else float(h) for h in hi])
        over = (rng.random(n) < 0.03) & np.isfinite(hif)
        val = np.where(over, hif * rng.uniform(1.03, 1.4, n), val)
        if low is not None:
            under = rng.random(n) < 0.015
            val = np.where(under, low * rng.uniform(0.5, 0.95, n), val)
        cols["kind"] += [kind] * n
        cols["unit_of_measure"] += [unit] * n
        cols["threshold_low"] += [low] * n
        cols["threshold_high"] += hi.tolist()
        cols["elevation_m"] += np.round(el, 2).tolist()
        cols["asset_layer"] += [layer] * n
        cols["asset_id"] += ids.astype(np.int64).tolist()
        cols["latest_value"] += np.round(val, 3).tolist()
        start = len(cols["device_id"]) + 1
        cols["device_id"] += [f"{prefix}-{start + i:06d}" for i in range(n)]
        cols["geom"].append(xy + rng.uniform(-0.5, 0.5, xy.shape))
    n = len(cols["kind"])
    online = rng.random(n) >= 0.03
    age = np.where(online, rng.integers(0, 900, n), rng.integers(3600, 14 * 86400, n))
    ids = np.arange(1, n + 1)
    return {
        "id": ids,
        "source_id": list(cols["device_id"]),
        "device_id": cols["device_id"],
        "kind": cols["kind"],
        "unit_of_measure": cols["unit_of_measure"],
        "threshold_low": cols["threshold_low"],
        "threshold_high": cols["threshold_high"],
        "elevation_m": np.array(cols["elevation_m"], dtype=float),
        "asset_layer": cols["asset_layer"],
        "asset_id": np.array(cols["asset_id"], dtype=np.int64),
        "latest_value": np.array(cols["latest_value"], dtype=float),
        "latest_at": [BASE_TIME - timedelta(seconds=int(a)) for a in age.tolist()],
        "online": online,
        "properties": [{} for _ in range(n)],
        "geom": np.concatenate(cols["geom"]),
    }


def _capacity(dn: np.ndarray) -> np.ndarray:
    """Flow (m3/h) at 2 m/s in a pipe of diameter ``dn`` mm: the alarm level."""
    return np.pi * (dn / 2000.0) ** 2 * 2.0 * 3600.0


def _values(rng: np.random.Generator, kind: str, n: int, dn: np.ndarray | None) -> np.ndarray:
    """Typical readings for a sensor kind."""
    if kind == "water_pressure":
        return rng.normal(330, 55, n)
    if kind == "water_flow":
        assert dn is not None
        return _capacity(dn) * rng.uniform(0.15, 0.7, n)
    if kind == "manhole_tilt":
        return np.abs(rng.normal(0.6, 0.7, n))
    if kind == "water_level":
        return np.abs(rng.normal(0.0, 0.04, n))
    if kind == "gas_concentration":
        return np.abs(rng.normal(0.5, 1.0, n))
    if kind == "smoke":
        return np.abs(rng.normal(0.01, 0.015, n))
    if kind == "noise":
        return rng.normal(60, 4, n)
    if kind == "air_quality":
        return rng.lognormal(np.log(32), 0.35, n)
    if kind == "structure_tilt":
        return np.abs(rng.normal(0.1, 0.12, n))
    if kind == "elevator":
        return np.abs(rng.normal(0.4, 0.15, n))
    return np.abs(rng.normal(60, 40, n))
