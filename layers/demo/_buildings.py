"""Land use per block and building footprints (metric frame, vectorised per district).

Each block gets one typology (old lanes, walk-up slabs, mid-rise, towers,
offices, shops, factories, school, hospital, park, square).  Footprints are laid
out on a lattice in the block's own frame, aligned with its longest near-E-W
edge so slabs face south as Shanghai housing does, then kept only when they
lie wholly inside the block shrunk by the setback.  Lattice cells never
overlap, so neither do buildings, and the shrunk block keeps them off roads
and water.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

from ._geo import rect_coords
from ._names import (
    COMMERCIAL_SUFFIX,
    ESTATE_SUFFIX,
    FACTORY_SUFFIX,
    LANE_SUFFIX,
    OFFICE_SUFFIX,
    PARK_SUFFIX,
    PLACE,
)

USES = (
    "residential",
    "commercial",
    "office",
    "industrial",
    "public",
    "education",
    "health",
    "mixed",
)
U = {u: i for i, u in enumerate(USES)}


@dataclass(frozen=True)
class Typology:
    """Lattice and building parameters of one kind of block."""

    use: str
    setback: float
    cell_w: tuple[float, float]  # lattice cell along the block (m)
    gap_w: tuple[float, float]  # free space between neighbours in a row
    cell_h: tuple[float, float]  # lattice cell across (row pitch)
    depth: tuple[float, float]  # footprint depth
    floors: tuple[int, int]
    floor_h: float
    fill: float  # share of cells that get a building


TYPES: dict[str, Typology] = {
    # 里弄 / old low-rise: dense rows of 2-3 storey terraces along narrow lanes.
    "lane": Typology(
        "residential", 3.0, (12, 24), (2.0, 3.5), (13, 15), (8.5, 10.5), (2, 3), 3.2, 0.97
    ),
    # 1980s-90s 新村: six-storey walk-up slabs, 50-70 x 10-14 m, sunlight spacing.
    "walkup": Typology(
        "residential", 8.0, (58, 78), (8, 14), (31, 35), (10, 13.5), (5, 7), 2.9, 0.95
    ),
    "midrise": Typology(
        "residential", 10.0, (50, 66), (10, 16), (44, 50), (14, 17), (11, 18), 3.0, 0.92
    ),
    "tower": Typology(
        "residential", 12.0, (44, 56), (14, 22), (60, 72), (18, 24), (25, 33), 3.0, 0.9
    ),
    "office": Typology("office", 12.0, (64, 84), (18, 30), (64, 84), (34, 52), (20, 60), 4.0, 0.75),
    "shops": Typology("commercial", 8.0, (60, 100), (10, 20), (48, 70), (34, 52), (2, 6), 4.2, 0.9),
    "industrial": Typology(
        "industrial", 10.0, (80, 150), (14, 28), (62, 100), (44, 80), (1, 3), 4.2, 0.85
    ),
    "school": Typology("education", 10.0, (76, 92), (10, 16), (66, 76), (52, 60), (3, 5), 3.8, 0.6),
    "hospital": Typology(
        "health", 10.0, (80, 96), (10, 16), (70, 82), (56, 66), (6, 14), 3.9, 0.85
    ),
}
OPEN_KINDS = ("park", "square")


@dataclass
class DistrictBuildings:
    """Buildings of one district plus the open spaces carved out of its blocks."""

    geom: np.ndarray  # Polygons (rings for courtyard buildings)
    use: np.ndarray  # int index into USES
    floors: np.ndarray
    height: np.ndarray
    name: list[str | None]
    open_geom: list[shapely.Geometry]
    open_kind: list[str]
    open_name: list[str | None]


def _frame_angle(blocks: np.ndarray) -> np.ndarray:
    """Block orientation: the edge of the minimum rectangle nearest to east-west."""
    mrr = shapely.minimum_rotated_rectangle(blocks)
    xy = shapely.get_coordinates(mrr).reshape(len(blocks), -1, 2)[:, :3]
    d = xy[:, 1] - xy[:, 0]
    a = np.arctan2(d[:, 1], d[:, 0])
    # Fold into (-45, 45] degrees: slabs run roughly east-west and face south.
    return (a + np.pi / 4) % (np.pi / 2) - np.pi / 4


def _zone(
    rng: np.random.Generator,
    blocks: np.ndarray,
    district: shapely.Geometry,
    crossings: np.ndarray,
    river: shapely.Geometry,
) -> np.ndarray:
    """Typology name per block from a few planning rules and smooth random zones."""
    n = len(blocks)
    cen = shapely.get_coordinates(shapely.centroid(blocks))
    area = shapely.area(blocks)
    if len(crossings):
        dc = np.sqrt(((cen[:, None, :] - crossings[None, :, :]) ** 2).sum(-1)).min(1)
    else:
        dc = np.full(n, 1e9)
    near_river = shapely.dwithin(river, shapely.points(cen), 260.0)
    minx, miny, maxx, maxy = shapely.bounds(district)
    diag = float(np.hypot(maxx - minx, maxy - miny))
    r_ind = min(900.0, 0.12 * diag)
    r_old = min(1700.0, 0.24 * diag)
    # An industrial belt (historically along the creek) and an old core of lanes.
    ind_c = np.array([rng.uniform(minx, maxx), rng.uniform(miny, maxy)])
    old_c = np.array([rng.uniform(minx, maxx), rng.uniform(miny, maxy)])
    d_ind = np.hypot(*(cen - ind_c).T)
    d_old = np.hypot(*(cen - old_c).T)
    u = rng.random(n)
    v = rng.random(n)
    kind = np.where(v < 0.40, "walkup", np.where(v < 0.72, "midrise", "tower")).astype(object)
    kind[(d_old < r_old) & (u < 0.8)] = "lane"
    kind[(rng.random(n) < 0.28)] = "lane"
    kind[(d_ind < r_ind) & (u < 0.85)] = "industrial"
    comm = (dc < 220) & (u < 0.65)
    kind[comm] = np.where(rng.random(comm.sum()) < 0.55, "office", "shops")
    mid_size = (area > 14000) & (area < 70000)
    kind[mid_size & (rng.random(n) < 0.06)] = "school"
    kind[mid_size & (rng.random(n) < 0.015)] = "hospital"
    kind[(area > 12000) & (rng.random(n) < 0.045)] = "park"
    kind[near_river & (area > 6000) & (rng.random(n) < 0.15)] = "park"
    kind[(area < 9000) & (dc < 200) & (rng.random(n) < 0.5)] = "square"
    return kind


def _estate_name(rng: np.random.Generator, kind: str) -> str:
    word = PLACE[int(rng.integers(len(PLACE)))]
    if kind == "lane":
        return word + LANE_SUFFIX[int(rng.integers(len(LANE_SUFFIX)))]
    if kind == "industrial":
        return word + FACTORY_SUFFIX[int(rng.integers(len(FACTORY_SUFFIX)))]
    if kind == "office":
        return word + OFFICE_SUFFIX[int(rng.integers(len(OFFICE_SUFFIX)))]
    if kind == "shops":
        return word + COMMERCIAL_SUFFIX[int(rng.integers(len(COMMERCIAL_SUFFIX)))]
    if kind == "school":
        return word + ("小学", "中学", "实验学校", "幼儿园")[int(rng.integers(4))]
    if kind == "hospital":
        return word + ("医院", "社区卫生服务中心", "中心医院")[int(rng.integers(3))]
    return word + ESTATE_SUFFIX[int(rng.integers(len(ESTATE_SUFFIX)))]


def district_buildings(
    rng: np.random.Generator,
    blocks: np.ndarray,
    district: shapely.Geometry,
    crossings: np.ndarray,
    river: shapely.Geometry,
    main_roads: np.ndarray,
) -> DistrictBuildings:
    """Lay out all buildings of one district's blocks."""
    kinds = _zone(rng, blocks, district, crossings, river)
    ang = _frame_angle(blocks)
    cen = shapely.get_coordinates(shapely.centroid(blocks))

    open_geom: list = []
    open_kind: list[str] = []
    open_name: list[str | None] = []
    build_idx = []
    for b, k in enumerate(kinds):
        if k in OPEN_KINDS:
            g = shapely.buffer(blocks[b], -2.0)
            if shapely.is_empty(g):
                continue
            word = PLACE[int(rng.integers(len(PLACE)))]
            if k == "park":
                # A pond in most parks: an ellipse well inside the park.
                inner = shapely.buffer(g, -25.0)
                if (
                    not shapely.is_empty(inner)
                    and shapely.area(inner) > 3000
                    and rng.random() < 0.8
                ):
                    c = shapely.point_on_surface(inner)
                    r = np.sqrt(shapely.area(inner)) * rng.uniform(0.12, 0.22)
                    pond = shapely.affinity.scale(
                        shapely.buffer(c, r, quad_segs=8), rng.uniform(1.2, 2.0), 1.0
                    )
                    pond = shapely.affinity.rotate(pond, float(rng.uniform(0, 180)))
                    pond = shapely.intersection(pond, inner)
                    if not shapely.is_empty(pond) and shapely.area(pond) > 300:
                        g = shapely.difference(g, pond)
                        open_geom.append(pond)
                        open_kind.append("water")
                        open_name.append(word + "湖")
                open_geom.append(g)
                open_kind.append("park")
                open_name.append(word + PARK_SUFFIX[int(rng.integers(len(PARK_SUFFIX)))])
            else:
                open_geom.append(g)
                open_kind.append("square")
                open_name.append(word + "广场" if rng.random() < 0.6 else None)
        else:
            build_idx.append(b)
    bi = np.array(build_idx, dtype=np.int64)
    setback = np.array([TYPES[kinds[b]].setback for b in bi])
    inset = shapely.buffer(blocks[bi], -setback, quad_segs=2, join_style="mitre")

    # Plazas in front of some office / shop blocks, at the corner nearest a crossing.
    for j, b in enumerate(bi):
        if kinds[b] in ("office", "shops") and len(crossings) and rng.random() < 0.45:
            d = np.hypot(*(crossings - cen[b]).T)
            corner = shapely.points(crossings[int(np.argmin(d))])
            plaza = shapely.intersection(inset[j], shapely.buffer(corner, rng.uniform(70, 110)))
            if shapely.area(plaza) > 600:
                open_geom.append(plaza)
                open_kind.append("plaza")
                open_name.append(None)
                inset[j] = shapely.difference(inset[j], shapely.buffer(plaza, 6.0))

    # Block frame: rotate inset outlines by -angle about the block centroid.
    coords, owner = shapely.get_coordinates(inset, return_index=True)
    a = ang[bi][owner]
    rel = coords - cen[bi][owner]
    fx = rel[:, 0] * np.cos(a) + rel[:, 1] * np.sin(a)
    fy = -rel[:, 0] * np.sin(a) + rel[:, 1] * np.cos(a)
    nb = len(bi)
    bx0 = np.full(nb, np.inf)
    by0 = np.full(nb, np.inf)
    bx1 = np.full(nb, -np.inf)
    by1 = np.full(nb, -np.inf)
    np.minimum.at(bx0, owner, fx)
    np.minimum.at(by0, owner, fy)
    np.maximum.at(bx1, owner, fx)
    np.maximum.at(by1, owner, fy)

    # Per-block lattice parameters (one draw per block keeps estates uniform).
    cw = np.empty(nb)
    ch = np.empty(nb)
    gw = np.empty(nb)
    dp = np.empty(nb)
    for j, b in enumerate(bi):
        t = TYPES[kinds[b]]
        cw[j] = rng.uniform(*t.cell_w)
        ch[j] = rng.uniform(*t.cell_h)
        gw[j] = rng.uniform(*t.gap_w)
        dp[j] = min(rng.uniform(*t.depth), ch[j] - 4.0)
    ok = np.isfinite(bx0)
    ncy = np.where(ok, np.maximum(np.floor((by1 - by0) / ch), 1), 0).astype(np.int64)
    jmax = np.clip((ch - 4.0 - dp) / 2, 0.0, 2.0)

    # Rows: find where each row's footprint band fits inside the block, so
    # skewed and tapering blocks still fill from edge to edge.
    rb = np.repeat(np.arange(nb), ncy)
    iy = np.arange(len(rb)) - np.repeat(np.cumsum(ncy) - ncy, ncy)
    b0, b1 = np.where(ok, by0, 0.0), np.where(ok, by1, 0.0)
    sy = b0 + ((b1 - b0) - ncy * ch) / 2
    yc = sy[rb] + (iy + 0.5) * ch[rb]
    half = dp[rb] / 2 + jmax[rb]
    lx = np.stack([bx0[rb] - 5, bx1[rb] + 5], 1)
    ca = np.cos(ang[bi][rb])[:, None]
    sa = np.sin(ang[bi][rb])[:, None]
    lo_x = np.full(len(rb), -np.inf)
    hi_x = np.full(len(rb), np.inf)
    for sign in (-1.0, 1.0):
        ly = (yc + sign * half)[:, None] * np.ones((1, 2))
        wx = cen[bi][rb, :1] + lx * ca - ly * sa
        wy = cen[bi][rb, 1:] + lx * sa + ly * ca
        seg = shapely.linestrings(np.stack([wx, wy], -1))
        inter = shapely.intersection(inset[rb], seg)
        pts, idx = shapely.get_coordinates(inter, return_index=True)
        rel = pts - cen[bi][rb][idx]
        a_i = ang[bi][rb][idx]
        px = rel[:, 0] * np.cos(a_i) + rel[:, 1] * np.sin(a_i)
        mn = np.full(len(rb), np.inf)
        mx = np.full(len(rb), -np.inf)
        np.minimum.at(mn, idx, px)
        np.maximum.at(mx, idx, px)
        lo_x = np.maximum(lo_x, mn)
        hi_x = np.minimum(hi_x, mx)
    span = np.where(np.isfinite(lo_x) & np.isfinite(hi_x), hi_x - lo_x, 0.0)
    cwr = cw[rb]
    ncx = np.floor(span / cwr).astype(np.int64)
    # A row too short for one standard cell still gets one shorter building.
    short = (ncx == 0) & (span > 0.55 * cwr) & (span > 14.0)
    cwr = np.where(short, span, cwr)
    ncx[short] = 1
    ncx = np.maximum(ncx, 0)
    cb_row = np.repeat(np.arange(len(rb)), ncx)
    cb = rb[cb_row]
    k = np.arange(len(cb_row)) - np.repeat(np.cumsum(ncx) - ncx, ncx)
    m = len(cb)
    cwc = cwr[cb_row]
    sx = lo_x[cb_row] + (span[cb_row] - ncx[cb_row] * cwc) / 2
    w = np.maximum(cwc - gw[cb] - rng.uniform(0, 4, m), 6.0)
    h = np.maximum(dp[cb] - rng.uniform(0, 1.5, m), 6.0)
    jx = (cwc - gw[cb] - w) * rng.uniform(-0.5, 0.5, m)
    jy = jmax[cb] * rng.uniform(-1, 1, m)
    lx = sx + (k + 0.5) * cwc + jx
    ly = yc[cb_row] + jy
    aa = ang[bi][cb]
    cx = cen[bi][cb, 0] + lx * np.cos(aa) - ly * np.sin(aa)
    cy = cen[bi][cb, 1] + lx * np.sin(aa) + ly * np.cos(aa)
    fill = np.array([TYPES[kinds[b]].fill for b in bi])
    keep = rng.random(m) < fill[cb]
    rings = rect_coords(cx, cy, w, h, aa)
    cand = shapely.polygons(rings)
    shapely.prepare(inset)
    keep &= shapely.contains_properly(inset[cb], cand)
    cand, cb, rings = cand[keep], cb[keep], rings[keep]
    cx, cy, w, h, aa = cx[keep], cy[keep], w[keep], h[keep], aa[keep]
    n = len(cand)

    kind_of = kinds[bi][cb]
    use = np.array([U[TYPES[kd].use] for kd in kind_of], dtype=np.int64)
    lo = np.array([TYPES[kd].floors[0] for kd in kind_of])
    hi = np.array([TYPES[kd].floors[1] for kd in kind_of])
    fh = np.array([TYPES[kd].floor_h for kd in kind_of])
    r = rng.random(n)
    # Skew storeys low inside a range: few towers reach the top of it.
    floors = (lo + np.floor((hi - lo + 1) * r**1.6)).astype(np.int64)
    walk = kind_of == "walkup"
    floors[walk] = np.where(r[walk] < 0.8, 6, floors[walk])

    # Courtyard buildings for schools and hospitals: rings with a hole.
    court = np.isin(kind_of, ["school", "hospital"]) & (rng.random(n) < 0.6)
    for i in np.flatnonzero(court):
        wing = 13.0 if kind_of[i] == "school" else 16.0
        if w[i] > 2 * wing + 10 and h[i] > 2 * wing + 10:
            hole = rect_coords(
                cx[i : i + 1],
                cy[i : i + 1],
                w[i : i + 1] - 2 * wing,
                h[i : i + 1] - 2 * wing,
                aa[i : i + 1],
            )[0]
            cand[i] = shapely.Polygon(rings[i], [hole[::-1]])

    # Shops on the ground floor along main roads: residential there becomes mixed.
    if len(main_roads) and n:
        tree = shapely.STRtree(main_roads)
        hit = np.zeros(n, bool)
        hit[tree.query(cand, predicate="dwithin", distance=30.0)[0]] = True
        use[hit & (use == U["residential"])] = U["mixed"]
    # A kindergarten or community centre in some housing estates.
    pub = (use == U["residential"]) & (rng.random(n) < 0.025)
    use[pub] = U["public"]
    floors[pub] = np.minimum(floors[pub], 3)

    roof = rng.uniform(0.3, 1.5, n)
    height = np.round(floors * fh + roof, 1)

    est = [_estate_name(rng, kinds[b]) for b in bi]
    name: list[str | None] = [None] * n
    seq = np.zeros(nb, np.int64)
    for i in range(n):
        j = cb[i]
        seq[j] += 1
        kd = kind_of[i]
        if kd in ("office", "shops", "school", "hospital") or (kd == "industrial" and seq[j] == 1):
            name[i] = est[j] if seq[j] == 1 else f"{est[j]}{seq[j]}号楼"
        elif kd in ("walkup", "midrise", "tower"):
            name[i] = f"{est[j]}{seq[j]}号楼"
        elif use[i] == U["public"]:
            name[i] = PLACE[int(rng.integers(len(PLACE)))] + "社区文化活动中心"
    return DistrictBuildings(
        geom=cand,
        use=use,
        floors=floors,
        height=height,
        name=name,
        open_geom=open_geom,
        open_kind=open_kind,
        open_name=open_name,
    )
