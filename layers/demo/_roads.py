"""Street grid, river and blocks of the demo city (metric frame).

The grid is designed as straight lines in a design plane: main roads every
~800 m, secondary roads every ~200 m inside each superblock (offset at the main
roads, as in real cities, unless close enough to continue straight across).
A smooth warp then bends it.  District boundaries run along main-road
centrelines, so every district is a set of whole superblocks.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import shapely

from ._geo import Polylines, Warp
from ._names import road_name

MAIN_SPACING = 820.0
SEC_SPACING = 215.0
SNAP_DIST = 45.0
DENSIFY = 30.0


@dataclass
class Layout:
    """Design of the city: district grid sizes in design metres."""

    nx: int
    ny: int
    width: float
    height: float


@dataclass
class RoadNet:
    """The road graph, warped into the metric frame."""

    node_xy: np.ndarray  # (n, 2)
    edge_u: np.ndarray
    edge_v: np.ndarray
    edge_line: np.ndarray  # road line index
    edge_main: np.ndarray  # bool
    edge_width: np.ndarray
    edge_district: np.ndarray
    lines: Polylines  # one polyline per edge, u -> v
    line_name: list[str]
    line_main: np.ndarray
    edge_base: np.ndarray  # position of the edge start along its road (for house numbers)
    bridges: dict[int, tuple[float, float]] = field(default_factory=dict)

    @property
    def n_nodes(self) -> int:
        """Number of road nodes."""
        return len(self.node_xy)

    @property
    def degree(self) -> np.ndarray:
        """Edge count per node."""
        return np.bincount(np.concatenate([self.edge_u, self.edge_v]), minlength=self.n_nodes)


@dataclass
class City:
    """Road net, districts, water and the buildable blocks of each district."""

    layout: Layout
    roads: RoadNet
    district_poly: list[shapely.Geometry]
    district_rc: list[tuple[int, int]]
    river: shapely.Geometry  # water polygon(s)
    river_line: shapely.Geometry  # its centre line(s)
    river_zone: shapely.Geometry  # water + green strip along it
    road_polys: np.ndarray  # one (Multi)Polygon per (road line, district)
    road_line: np.ndarray
    road_district: np.ndarray
    road_main: np.ndarray
    road_width: np.ndarray
    blocks: list[np.ndarray]  # per district, Polygons
    main_crossings: np.ndarray  # (k, 2) metric points of main x main crossings
    design_extent: tuple[float, float, float, float]


def _positions(rng: np.random.Generator, lo: float, hi: float, spacing: float, jit: float) -> list:
    """Interior positions between lo and hi about ``spacing`` apart, jittered."""
    n = max(0, round((hi - lo) / spacing) - 1)
    out = []
    for k in range(n):
        out.append(float(lo + (hi - lo) * (k + 1) / (n + 1) + rng.uniform(-jit, jit)))
    return out


def _snap(pos: list, prev: list) -> list:
    """Continue a secondary road straight across a main road when nearly aligned."""
    out = []
    for p in pos:
        near = [q for q in prev if abs(q - p) < SNAP_DIST]
        out.append(near[0] if near else p)
    return out


def _design(rng: np.random.Generator, lay: Layout) -> tuple[list, list, list, dict, dict]:
    """Main road positions and secondary positions per superblock (design plane)."""
    x0 = -lay.nx * lay.width / 2
    y0 = -lay.ny * lay.height / 2
    main_x: list[float] = []
    for c in range(lay.nx):
        a = x0 + c * lay.width
        main_x += [a, *_positions(rng, a, a + lay.width, MAIN_SPACING, 70.0)]
    main_x.append(x0 + lay.nx * lay.width)
    main_y: list[float] = []
    for r in range(lay.ny):
        a = y0 + r * lay.height
        main_y += [a, *_positions(rng, a, a + lay.height, MAIN_SPACING, 70.0)]
    main_y.append(y0 + lay.ny * lay.height)
    sec_x: dict[tuple[int, int], list] = {}
    sec_y: dict[tuple[int, int], list] = {}
    for c in range(len(main_x) - 1):
        prev: list = []
        for r in range(len(main_y) - 1):
            # A few superblocks keep no secondary roads one way: long blocks for
            # schools, factories and parks.
            pos = (
                []
                if rng.random() < 0.08
                else _positions(rng, main_x[c], main_x[c + 1], SEC_SPACING, 22.0)
            )
            sec_x[r, c] = prev = _snap(pos, prev)
    for r in range(len(main_y) - 1):
        prev = []
        for c in range(len(main_x) - 1):
            pos = (
                []
                if rng.random() < 0.08
                else _positions(rng, main_y[r], main_y[r + 1], SEC_SPACING, 22.0)
            )
            sec_y[r, c] = prev = _snap(pos, prev)
    return main_x, main_y, [x0, y0], sec_x, sec_y


def _river_line(rng: np.random.Generator, lay: Layout, axis: int, frac: float) -> np.ndarray:
    """A meandering centreline across the city (axis 0: west-east, 1: south-north)."""
    span = (lay.nx * lay.width, lay.ny * lay.height)[axis]
    across = (lay.ny * lay.height, lay.nx * lay.width)[axis]
    t = np.arange(-span / 2 - 1500, span / 2 + 1500, 15.0)
    ph = rng.uniform(0, 2 * np.pi, 3)
    a1 = min(380.0, across * 0.12)
    off = across * (frac - 0.5) + rng.uniform(-0.05, 0.05) * across
    lat = (
        off
        + a1 * np.sin(2 * np.pi * t / 3900 + ph[0])
        + 0.35 * a1 * np.sin(2 * np.pi * t / 1350 + ph[1])
    )
    # Tighter meanders (like Suzhou Creek) come from a lengthwise wobble.
    lon = t + 0.22 * a1 * np.sin(2 * np.pi * t / 1950 + ph[2])
    return np.column_stack([lon, lat]) if axis == 0 else np.column_stack([lat, lon])


def build_city(rng: np.random.Generator, lay: Layout, warp: Warp) -> City:
    """Lay out roads, river and blocks for the whole city."""
    main_x, main_y, (x0, y0), sec_x, sec_y = _design(rng, lay)
    nbx, nby = len(main_x) - 1, len(main_y) - 1

    # Road lines: (axis, fixed coordinate, crossing coordinates, main?)
    lines: list[tuple[int, float, list, bool]] = []
    for i, y in enumerate(main_y):
        xs = set(main_x)
        for r in (i - 1, i):
            if 0 <= r < nby:
                for c in range(nbx):
                    xs.update(sec_x[r, c])
        lines.append((0, y, sorted(xs), True))
    for j, x in enumerate(main_x):
        ys = set(main_y)
        for c in (j - 1, j):
            if 0 <= c < nbx:
                for r in range(nby):
                    ys.update(sec_y[r, c])
        lines.append((1, x, sorted(ys), True))
    for r in range(nby):
        for c in range(nbx):
            xs_in = [main_x[c], *sec_x[r, c], main_x[c + 1]]
            ys_in = [main_y[r], *sec_y[r, c], main_y[r + 1]]
            for y in sec_y[r, c]:
                lines.append((0, y, xs_in, False))
            for x in sec_x[r, c]:
                lines.append((1, x, ys_in, False))

    # Names: continuations of a road across a main road keep their name.
    name_of: dict[tuple[int, float], int] = {}
    line_name_idx = []
    for axis, pos, _, _main in lines:
        key = (axis, pos)
        if key not in name_of:
            name_of[key] = len(name_of)
        line_name_idx.append(name_of[key])
    line_main = np.array([ln[3] for ln in lines])
    line_name = [road_name(line_name_idx[i], bool(line_main[i])) for i in range(len(lines))]
    widths = np.where(
        line_main,
        rng.choice([30.0, 34.0, 38.0, 42.0, 46.0, 50.0], size=len(lines)),
        np.round(rng.uniform(14.0, 20.0, size=len(lines)) * 2) / 2,
    )

    node_id: dict[tuple[float, float], int] = {}
    eu, ev, el = [], [], []
    for li, (axis, pos, cross, main) in enumerate(lines):
        ids = []
        for q in cross:
            key = (q, pos) if axis == 0 else (pos, q)
            if key not in node_id:
                node_id[key] = len(node_id)
            ids.append(node_id[key])
        for a, b in itertools.pairwise(ids):
            # Drop a few secondary segments: dead ends and merged blocks.
            if not main and rng.random() < 0.06:
                continue
            eu.append(a)
            ev.append(b)
            el.append(li)
    node_d = np.array(list(node_id.keys()), dtype=float)
    eu_a, ev_a, el_a = np.array(eu), np.array(ev), np.array(el)

    # Rivers in the metric frame; secondary roads do not bridge them.
    rivers = [_river_line(rng, lay, 0, rng.uniform(0.35, 0.65))]
    if lay.nx * lay.ny > 4:
        rivers.append(_river_line(rng, lay, 1, rng.uniform(0.3, 0.7)))
    river_lines = (
        shapely.linestrings(rivers[0])
        if len(rivers) == 1
        else shapely.multilinestrings([shapely.linestrings(r) for r in rivers])
    )
    river = shapely.buffer(river_lines, 33.0, quad_segs=4)
    river_zone = shapely.buffer(river_lines, 33.0 + 28.0, quad_segs=4)

    node_xy = warp(node_d)
    lines_pl = _edge_polylines(node_d, node_xy, eu_a, ev_a, warp)
    geoms = lines_pl.geoms()
    # STRtree query: the river polygon is huge, so let the index do the pruning.
    wet = np.zeros(len(geoms), bool)
    wet[shapely.STRtree(geoms).query(shapely.buffer(river, 15.0), predicate="intersects")[1]] = True
    keep = ~wet | line_main[el_a]
    eu_a, ev_a, el_a = eu_a[keep], ev_a[keep], el_a[keep]
    # Re-index nodes, dropping those left without edges.
    used = np.zeros(len(node_d), bool)
    used[eu_a] = used[ev_a] = True
    remap = np.cumsum(used) - 1
    node_d, node_xy = node_d[used], node_xy[used]
    eu_a, ev_a = remap[eu_a], remap[ev_a]
    lines_pl = _edge_polylines(node_d, node_xy, eu_a, ev_a, warp)
    geoms = lines_pl.geoms()

    # District owning each edge (edges on a boundary go to the east/north one).
    bx = np.array([x0 + c * lay.width for c in range(lay.nx + 1)])
    by = np.array([y0 + r * lay.height for r in range(lay.ny + 1)])
    mid = (node_d[eu_a] + node_d[ev_a]) / 2
    col = np.clip(np.searchsorted(bx, mid[:, 0], side="right") - 1, 0, lay.nx - 1)
    row = np.clip(np.searchsorted(by, mid[:, 1], side="right") - 1, 0, lay.ny - 1)
    edge_district = row * lay.nx + col

    roads = RoadNet(
        node_xy=node_xy,
        edge_u=eu_a,
        edge_v=ev_a,
        edge_line=el_a,
        edge_main=line_main[el_a],
        edge_width=widths[el_a],
        edge_district=edge_district,
        lines=lines_pl,
        line_name=line_name,
        line_main=line_main,
        edge_base=np.where(
            np.array([ln[0] for ln in lines])[el_a] == 0,
            node_d[eu_a, 0] - x0,
            node_d[eu_a, 1] - y0,
        ),
    )
    wet_idx = np.unique(shapely.STRtree(geoms).query(river, predicate="intersects")[1])
    for e in wet_idx:
        g = geoms[e]
        inter = shapely.intersection(g, river)
        pts = shapely.get_coordinates(inter)
        s = shapely.line_locate_point(g, shapely.points(pts))
        roads.bridges[int(e)] = (float(s.min()), float(s.max()))

    district_poly, district_rc = [], []
    line_axis = np.array([ln[0] for ln in lines])
    line_pos = np.array([ln[1] for ln in lines])
    for r in range(lay.ny):
        for c in range(lay.nx):
            district_poly.append(
                _district_polygon(
                    roads, node_d, line_axis, line_pos, bx[c], bx[c + 1], by[r], by[r + 1]
                )
            )
            district_rc.append((r, c))

    # Road surfaces: one feature per road line and district.
    key = el_a * (lay.nx * lay.ny) + edge_district
    order = np.argsort(key, kind="stable")
    uniq, first = np.unique(key[order], return_index=True)
    group = np.empty(len(key), np.int64)
    group[order] = np.searchsorted(uniq, key[order])
    multis = shapely.multilinestrings(geoms, indices=group)
    rl = el_a[order][first]
    rd = edge_district[order][first]
    road_polys = shapely.buffer(multis, widths[rl] / 2, quad_segs=4)

    main_nodes = np.zeros(len(node_d), bool)
    deg_main = np.bincount(
        np.concatenate([eu_a[line_main[el_a]], ev_a[line_main[el_a]]]), minlength=len(node_d)
    )
    main_nodes = deg_main >= 3
    city = City(
        layout=lay,
        roads=roads,
        district_poly=district_poly,
        district_rc=district_rc,
        river=river,
        river_line=river_lines,
        river_zone=river_zone,
        road_polys=road_polys,
        road_line=rl,
        road_district=rd,
        road_main=line_main[rl],
        road_width=widths[rl],
        blocks=[],
        main_crossings=node_xy[main_nodes],
        design_extent=(x0, y0, bx[-1], by[-1]),
    )
    city.blocks = _blocks(city)
    return city


def _edge_polylines(
    node_d: np.ndarray, node_xy: np.ndarray, eu: np.ndarray, ev: np.ndarray, warp: Warp
) -> Polylines:
    """Densify each design edge, warp it, and pin its ends to the node points."""
    p0, p1 = node_d[eu], node_d[ev]
    ln = np.hypot(*(p1 - p0).T)
    nseg = np.maximum(1, np.ceil(ln / DENSIFY).astype(np.int64))
    counts = nseg + 1
    off = np.concatenate([[0], np.cumsum(counts)])
    owner = np.repeat(np.arange(len(eu)), counts)
    k = np.arange(off[-1]) - off[owner]
    t = k / nseg[owner]
    design = p0[owner] + t[:, None] * (p1 - p0)[owner]
    xy = warp(design)
    # Exact node points at both ends so that everything built on the graph joins up.
    xy[off[:-1]] = node_xy[eu]
    xy[off[1:] - 1] = node_xy[ev]
    step = np.zeros(len(xy))
    step[1:] = np.hypot(*(xy[1:] - xy[:-1]).T)
    step[off[:-1]] = 0.0
    c = np.cumsum(step)
    c -= np.repeat(c[off[:-1]], counts)
    return Polylines(xy=xy, c=c, off=off)


def _district_polygon(
    roads: RoadNet,
    node_d: np.ndarray,
    line_axis: np.ndarray,
    line_pos: np.ndarray,
    xa: float,
    xb: float,
    ya: float,
    yb: float,
) -> shapely.Geometry:
    """District outline traced along the centrelines of its four boundary main roads."""
    du = node_d[roads.edge_u]
    dv = node_d[roads.edge_v]
    axis = line_axis[roads.edge_line]
    pos = line_pos[roads.edge_line]
    main = roads.edge_main
    pl = roads.lines

    def side(ax: int, p: float, lo: float, hi: float, rev: bool) -> list:
        m = main & (axis == ax) & (pos == p)
        m &= (np.minimum(du[:, ax], dv[:, ax]) >= lo) & (np.maximum(du[:, ax], dv[:, ax]) <= hi)
        idx = np.flatnonzero(m)
        idx = idx[np.argsort(du[idx, ax], kind="stable")]
        chunks = [pl.xy[pl.off[e] : pl.off[e + 1]] for e in idx]
        if rev:
            chunks = [ch[::-1] for ch in chunks[::-1]]
        return chunks

    parts = (
        side(0, ya, xa, xb, False)
        + side(1, xb, ya, yb, False)
        + side(0, yb, xa, xb, True)
        + side(1, xa, ya, yb, True)
    )
    ring = np.concatenate([p[:-1] for p in parts] + [parts[0][:1]])
    return shapely.make_valid(shapely.polygons(ring))


def _blocks(city: City) -> list[np.ndarray]:
    """Buildable blocks: each district minus road surfaces and the river corridor."""
    tree = shapely.STRtree(city.road_polys)
    out = []
    for poly in city.district_poly:
        near = tree.query(poly, predicate="intersects")
        zone = shapely.clip_by_rect(city.river_zone, *shapely.bounds(poly))
        cut = shapely.union_all(np.append(city.road_polys[near], zone))
        rest = shapely.difference(poly, cut)
        parts = np.asarray(shapely.get_parts(rest))
        parts = parts[shapely.get_type_id(parts) == 3]
        parts = parts[shapely.area(parts) > 1500.0]
        # Smooth away slivers and spikes left at road ends.
        out.append(parts)
    return out
