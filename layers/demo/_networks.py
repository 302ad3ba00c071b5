"""Underground networks under the road graph (metric frame, vectorised).

Every network runs along the road edges, translated by its own small offset
vector so networks do not lie on top of each other but stay inside the road
surface.  Pressure networks (water, gas, power, telecom) are looped: a node at
every road node, split points along edges (valves, hydrant tees, taps,
cable pits).  Gravity networks (drainage, sewage) flow down a shortest-path
forest towards outfalls at the river bank or pump stations.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely

from ._geo import Elevation
from ._roads import City

# Offsets (m) of each network from the road centreline: x matters on N-S roads,
# y on E-W roads.  Kept under the 7 m half-width of the narrowest road.
SHIFT = {
    "water": np.array([3.0, 3.0]),
    "gas": np.array([-3.0, -3.0]),
    "power": np.array([4.4, -4.4]),
    "telecom": np.array([-4.4, 4.4]),
    "drainage": np.array([0.5, 0.5]),
    "sewage": np.array([-1.3, -1.3]),
}
DEPTH = {
    "water": (1.0, 1.8),
    "gas": (0.8, 1.2),
    "power": (0.7, 1.2),
    "telecom": (0.6, 1.0),
}


@dataclass
class Table:
    """Column lists for one table, filled in chunks and concatenated at the end."""

    cols: dict[str, list[Any]] = field(default_factory=dict)
    n: int = 0

    def add(self, **cols: Any) -> np.ndarray:
        """Append a chunk; scalars are broadcast.  Returns the new 1-based ids."""
        size = max(len(v) for v in cols.values() if isinstance(v, list | np.ndarray))
        for k, v in cols.items():
            if not isinstance(v, list | np.ndarray):
                v = (
                    np.full(size, v, dtype=object)
                    if not isinstance(v, float | int)
                    else (np.full(size, v))
                )
            self.cols.setdefault(k, []).append(v)
        ids = np.arange(self.n + 1, self.n + size + 1)
        self.n += size
        return ids

    def finish(self) -> dict[str, Any]:
        """Concatenate chunks into one array per column."""
        out: dict[str, Any] = {}
        for k, parts in self.cols.items():
            arrs = [np.asarray(p, dtype=object) if isinstance(p, list) else p for p in parts]
            if any(a.dtype == object for a in arrs):
                arrs = [a.astype(object) for a in arrs]
            out[k] = np.concatenate(arrs) if arrs else np.zeros(0)
        return out


def _spread(key: np.ndarray, s: np.ndarray, gap: float) -> np.ndarray:
    """Push sorted positions apart so consecutive ones on an edge differ by >= gap."""
    if len(s) == 0:
        return s
    start = np.r_[True, key[1:] != key[:-1]]
    grp = np.cumsum(start) - 1
    first = np.flatnonzero(start)
    rank = np.arange(len(s)) - first[grp]
    big = grp * 1.0e7
    adj = np.maximum.accumulate(big + s - gap * rank) - big + gap * rank
    return adj


def _status(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.choice(
        np.array(["in_service", "planned", "under_repair", "abandoned"], dtype=object),
        size=n,
        p=[0.94, 0.02, 0.02, 0.02],
    )


def _district_sources(
    rng: np.random.Generator, city: City, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """Main-road edges near each district's edge to host plants / stations."""
    r = city.roads
    mid = (r.node_xy[r.edge_u] + r.node_xy[r.edge_v]) / 2
    edges, which = [], []
    for d, poly in enumerate(city.district_poly):
        cand = np.flatnonzero((r.edge_district == d) & r.edge_main & (r.lines.length > 80))
        if len(cand) == 0:
            continue
        c = np.array(shapely.get_coordinates(shapely.centroid(poly))[0])
        far = cand[np.argmax(np.hypot(*(mid[cand] - c).T))]
        picks = [far]
        for _ in range(count - 1):
            dmin = np.min(
                np.hypot(
                    mid[cand, None, 0] - mid[None, picks, 0],
                    mid[cand, None, 1] - mid[None, picks, 1],
                ),
                axis=1,
            )
            picks.append(cand[int(np.argmax(dmin + rng.uniform(0, 50, len(cand))))])
        edges += picks
        which += list(range(len(picks)))
    return np.array(edges, dtype=np.int64), np.array(which, dtype=np.int64)


def _pressure(
    rng: np.random.Generator,
    city: City,
    elev: Elevation,
    nodes: Table,
    pipes: Table,
    net: str,
    bld: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
) -> None:
    """A looped pressure network (water, gas, power, telecom) on every road edge."""
    r = city.roads
    pl = r.lines
    shift = SHIFT[net]
    ne = pl.n
    length = pl.length
    deg = r.degree
    dlo, dhi = DEPTH[net]

    # Junction node at every road node.
    jxy = r.node_xy + shift
    jdepth = rng.uniform(dlo, dhi, r.n_nodes)
    jid = nodes.add(
        network=net,
        kind=np.full(r.n_nodes, "junction", dtype=object),
        state=np.full(r.n_nodes, None, dtype=object),
        operable=np.ones(r.n_nodes, bool),
        depth_m=np.round(jdepth, 2),
        ground_elevation_m=np.round(elev(r.node_xy), 2),
        building_id=np.full(r.n_nodes, None, dtype=object),
        properties=[{} for _ in range(r.n_nodes)],
        geom=jxy,
    )

    se: list[np.ndarray] = []  # split points: edge, s, kind
    ss: list[np.ndarray] = []
    sk: list[np.ndarray] = []
    sb: list[np.ndarray] = []  # building served (taps only), -1 otherwise
    e_all = np.arange(ne)
    if net in ("water", "gas"):
        # Valves 5-15 m from every intersection, on each leg, so any block can be
        # isolated.  Gas only on the main roads and at crossings of them.
        for end, node in ((0, r.edge_u), (1, r.edge_v)):
            m = (deg[node] >= 3) & (length > 30)
            if net == "gas":
                m &= r.edge_main | (rng.random(ne) < 0.3)
            e = e_all[m]
            d = np.minimum(rng.uniform(5, 15, len(e)), 0.3 * length[e])
            se.append(e)
            ss.append(d if end == 0 else length[e] - d)
            sk.append(np.full(len(e), "valve", dtype=object))
            sb.append(np.full(len(e), -1))
    if net == "water":
        # Hydrant tees every ~110 m.
        nh = np.floor((length - 40) / 110).astype(np.int64) + 1
        nh = np.where(length > 60, np.maximum(nh, 1), 0)
        e = np.repeat(e_all, nh)
        k = np.arange(len(e)) - np.repeat(np.cumsum(nh) - nh, nh)
        step = (length[e] - 40) / np.maximum(nh[e], 1)
        s = 20 + (k + 0.5) * step + rng.uniform(-8, 8, len(e))
        se.append(e)
        ss.append(s)
        sk.append(np.full(len(e), "hydrant_tee", dtype=object))
        sb.append(np.full(len(e), -1))
    if net in ("power", "telecom"):
        spacing = 150.0 if net == "power" else 180.0
        nm = np.floor(length / spacing).astype(np.int64)
        e = np.repeat(e_all, nm)
        k = np.arange(len(e)) - np.repeat(np.cumsum(nm) - nm, nm)
        s = length[e] * (k + 1) / (nm[e] + 1)
        se.append(e)
        ss.append(s)
        sk.append(np.full(len(e), "manhole", dtype=object))
        sb.append(np.full(len(e), -1))
    src_count = {"water": 2, "gas": 1, "power": 2, "telecom": 1}[net]
    e, which = _district_sources(rng, city, src_count)
    se.append(e)
    ss.append(length[e] / 2 + 7.0)
    kinds = np.where(which == 0, "source", "tank" if net == "water" else "source").astype(object)
    sk.append(kinds)
    sb.append(np.full(len(e), -1))

    tap_pt = None
    if bld is not None:
        # Service taps: nearest main to each building, tapped at the closest point.
        bgeom, bid, gfa = bld
        geoms = pl.geoms(shift)
        tree = shapely.STRtree(geoms)
        bi, e = tree.query_nearest(bgeom, all_matches=False)
        sl = shapely.shortest_line(bgeom[bi], geoms[e])
        ends = shapely.get_coordinates(sl).reshape(-1, 2, 2)
        s = shapely.line_locate_point(geoms[e], shapely.points(ends[:, 1]))
        lo = np.minimum(18.0, length[e] * 0.35)
        s = np.clip(s, lo, length[e] - lo)
        se.append(e)
        ss.append(s)
        sk.append(np.full(len(e), "tap", dtype=object))
        sb.append(bi)
        tap_pt = ends[:, 0]

    e = np.concatenate(se)
    s = np.concatenate(ss)
    kind = np.concatenate(sk)
    bsrv = np.concatenate(sb)
    order = np.lexsort((s, e))
    e, s, kind, bsrv = e[order], s[order], kind[order], bsrv[order]
    s = np.minimum(_spread(e, s, 0.5), length[e] - 0.5)
    xy, tan = pl.interpolate(e, s)
    xy = xy + shift
    n = len(e)
    node_kind = np.where(np.isin(kind, ["hydrant_tee", "tap"]), "junction", kind).astype(object)
    is_valve = node_kind == "valve"
    state = np.full(n, None, dtype=object)
    state[is_valve] = np.where(rng.random(is_valve.sum()) < 0.02, "closed", "open")
    operable = np.ones(n, bool)
    operable[is_valve] = rng.random(is_valve.sum()) >= 0.03
    props: list[dict[str, Any]] = [{} for _ in range(n)]
    for i in np.flatnonzero(kind == "tap"):
        props[i] = {"role": "service_tap"}
    for i in np.flatnonzero(kind == "source"):
        props[i] = {
            "role": {
                "water": "water_plant",
                "gas": "gate_station",
                "power": "substation",
                "telecom": "exchange",
            }[net]
        }
    for i in np.flatnonzero(kind == "tank"):
        props[i] = {"role": "storage_tank"}
    sid = nodes.add(
        network=net,
        kind=node_kind,
        state=state,
        operable=operable,
        depth_m=np.round(rng.uniform(dlo, dhi, n), 2),
        ground_elevation_m=np.round(elev(xy - shift), 2),
        building_id=np.full(n, None, dtype=object),
        properties=props,
        geom=xy,
    )

    # Pieces between consecutive points on each edge, end nodes included.
    pe = np.concatenate([e_all, e, e_all])
    ps = np.concatenate([np.zeros(ne), s, length])
    pid = np.concatenate([jid[r.edge_u], sid, jid[r.edge_v]])
    pxy = np.concatenate([jxy[r.edge_u], xy, jxy[r.edge_v]])
    o = np.lexsort((ps, pe))
    pe, ps, pid, pxy = pe[o], ps[o], pid[o], pxy[o]
    same = pe[1:] == pe[:-1]
    a = np.flatnonzero(same)
    line = pe[a]
    geom = pl.pieces(line, ps[a], ps[a + 1], pxy[a], pxy[a + 1], shift)
    npc = len(a)
    main = r.edge_main[line]
    line_year = rng.integers(1962, 2024, r.edge_line.max() + 1)
    year = np.clip(line_year[r.edge_line[line]] + rng.integers(-3, 4, npc), 1960, 2024)
    if net == "water":
        dn_main = rng.choice([300.0, 400.0, 500.0, 600.0], r.edge_line.max() + 1)
        dn_sec = rng.choice([150.0, 200.0], r.edge_line.max() + 1)
        dn = np.where(main, dn_main[r.edge_line[line]], dn_sec[r.edge_line[line]])
        material = np.where(
            year < 1985, "grey cast iron", np.where(dn >= 300, "ductile iron", "PE")
        ).astype(object)
        flow = "both"
    elif net == "gas":
        dn = np.where(main, rng.choice([300.0, 400.0], npc), rng.choice([110.0, 160.0, 200.0], npc))
        material = np.where(dn >= 300, "steel", "PE").astype(object)
        flow = "forward"
    elif net == "power":
        dn = np.where(main, 300.0, 200.0)
        material = np.full(npc, "copper cable in PVC duct", dtype=object)
        flow = "unknown"
    else:
        dn = np.where(main, 150.0, 110.0)
        material = np.full(npc, "fibre in HDPE duct", dtype=object)
        flow = "unknown"
    pprops: list[dict[str, Any]] = (
        [{"voltage_kv": 35 if m else 10} for m in main] if net == "power" else [{} for _ in a]
    )
    pipes.add(
        network=net,
        diameter_mm=dn,
        material=material,
        depth_m=np.round(rng.uniform(dlo, dhi, npc), 2),
        invert_start_m=np.full(npc, None, dtype=object),
        invert_end_m=np.full(npc, None, dtype=object),
        install_year=year,
        status=_status(rng, npc),
        flow_direction=np.full(npc, flow, dtype=object),
        from_node_id=pid[a],
        to_node_id=pid[a + 1],
        properties=pprops,
        geom=geom,
    )

    if net != "water":
        return
    # Hydrants on short DN100 laterals to the kerb.
    t = np.flatnonzero(kind == "hydrant_tee")
    nrm = np.column_stack([-tan[t, 1], tan[t, 0]])
    off = (nrm * shift).sum(1)
    side = np.where(off >= 0, 1.0, -1.0)
    hw = r.edge_width[e[t]] / 2
    centre = xy[t] - shift
    hxy = centre + nrm * (side * (hw - 1.2))[:, None]
    nh = len(t)
    hid = nodes.add(
        network=net,
        kind=np.full(nh, "hydrant", dtype=object),
        state=np.full(nh, None, dtype=object),
        operable=rng.random(nh) >= 0.02,
        depth_m=np.zeros(nh),
        ground_elevation_m=np.round(elev(hxy), 2),
        building_id=np.full(nh, None, dtype=object),
        properties=[{"type": "above_ground"} for _ in range(nh)],
        geom=hxy,
    )
    pipes.add(
        network=net,
        diameter_mm=np.full(nh, 100.0),
        material=np.full(nh, "ductile iron", dtype=object),
        depth_m=np.round(rng.uniform(1.0, 1.3, nh), 2),
        invert_start_m=np.full(nh, None, dtype=object),
        invert_end_m=np.full(nh, None, dtype=object),
        install_year=rng.integers(1980, 2025, nh),
        status=np.full(nh, "in_service", dtype=object),
        flow_direction=np.full(nh, "forward", dtype=object),
        from_node_id=sid[t],
        to_node_id=hid,
        properties=[{"role": "hydrant_lateral"} for _ in range(nh)],
        geom=shapely.linestrings(np.stack([xy[t], hxy], 1)),
    )
    if bld is None or tap_pt is None:
        return
    # Service connections: node on the footprint edge, DN25-50 pipe from the tap.
    bgeom, bid, gfa = bld
    t = np.flatnonzero(kind == "tap")
    b = bsrv[t]
    cxy = tap_pt[order[t] - (len(order) - len(tap_pt))]
    nb = len(t)
    cid = nodes.add(
        network=net,
        kind=np.full(nb, "service_connection", dtype=object),
        state=np.full(nb, None, dtype=object),
        operable=np.ones(nb, bool),
        depth_m=np.round(rng.uniform(0.7, 1.0, nb), 2),
        ground_elevation_m=np.round(elev(cxy), 2),
        building_id=bid[b].astype(object),
        properties=[{} for _ in range(nb)],
        geom=cxy,
    )
    dn = np.select([gfa[b] < 1500, gfa[b] < 6000, gfa[b] < 20000], [25.0, 32.0, 40.0], 50.0)
    pipes.add(
        network=net,
        diameter_mm=dn,
        material=np.where(rng.random(nb) < 0.8, "PE", "galvanized steel").astype(object),
        depth_m=np.round(rng.uniform(0.7, 1.0, nb), 2),
        invert_start_m=np.full(nb, None, dtype=object),
        invert_end_m=np.full(nb, None, dtype=object),
        install_year=rng.integers(1985, 2025, nb),
        status=np.full(nb, "in_service", dtype=object),
        flow_direction=np.full(nb, "forward", dtype=object),
        from_node_id=sid[t],
        to_node_id=cid,
        properties=[{"role": "service"} for _ in range(nb)],
        geom=shapely.linestrings(np.stack([xy[t], cxy], 1)),
    )


def _dijkstra(
    n: int, a: np.ndarray, b: np.ndarray, w: np.ndarray, sinks: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Multi-source shortest paths: distance, parent segment, settle order."""
    adj: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    for i, (u, v) in enumerate(zip(a.tolist(), b.tolist(), strict=True)):
        adj[u].append((v, i))
        adj[v].append((u, i))
    wl = w.tolist()
    dist = np.full(n, np.inf)
    par = np.full(n, -1, dtype=np.int64)
    heap = [(0.0, int(s)) for s in sinks]
    for s in sinks:
        dist[s] = 0.0
    heapq.heapify(heap)
    done = np.zeros(n, bool)
    order: list[int] = []
    dl = dist.tolist()
    pl = par.tolist()
    while heap:
        d, u = heapq.heappop(heap)
        if done[u]:
            continue
        done[u] = True
        order.append(u)
        for v, i in adj[u]:
            nd = d + wl[i]
            if nd < dl[v]:
                dl[v] = nd
                pl[v] = i
                heapq.heappush(heap, (nd, v))
    return np.array(dl), np.array(pl, dtype=np.int64), order


def _gravity(
    rng: np.random.Generator,
    city: City,
    elev: Elevation,
    nodes: Table,
    pipes: Table,
    net: str,
    pumps: np.ndarray,
) -> None:
    """Gravity network flowing to river outfalls (drainage) or pump stations."""
    r = city.roads
    pl = r.lines
    shift = SHIFT[net]
    length = pl.length
    nn = r.n_nodes
    seg_e, seg_s0, seg_s1, seg_a, seg_b = [], [], [], [], []
    bank_e, bank_s = [], []
    for e in range(pl.n):
        if e in r.bridges:
            if net != "drainage":
                continue
            s_in, s_out = r.bridges[e]
            for lo, hi, at_start in ((0.0, s_in - 4.0, False), (s_out + 4.0, length[e], True)):
                if hi - lo < 10.0:
                    continue
                bank = nn + len(bank_e)
                bank_e.append(e)
                bank_s.append(lo if at_start else hi)
                seg_e.append(e)
                seg_s0.append(lo)
                seg_s1.append(hi)
                seg_a.append(bank if at_start else int(r.edge_u[e]))
                seg_b.append(int(r.edge_v[e]) if at_start else bank)
        else:
            seg_e.append(e)
            seg_s0.append(0.0)
            seg_s1.append(float(length[e]))
            seg_a.append(int(r.edge_u[e]))
            seg_b.append(int(r.edge_v[e]))
    se, s0, s1 = np.array(seg_e), np.array(seg_s0), np.array(seg_s1)
    sa, sbn = np.array(seg_a), np.array(seg_b)
    nb = len(bank_e)
    bxy = (
        pl.interpolate(np.array(bank_e, dtype=np.int64), np.array(bank_s))[0]
        if nb
        else (np.zeros((0, 2)))
    )
    gxy = np.concatenate([r.node_xy, bxy]) + shift
    ng = nn + nb
    sinks = np.concatenate([np.arange(nn, ng), pumps])
    _, par, order = _dijkstra(ng, sa, sbn, s1 - s0, sinks)
    ground = elev(gxy - shift)

    # Node inverts down the forest: as shallow as cover allows, always falling.
    inv = np.full(ng, np.nan)
    inv[sinks] = ground[sinks] - rng.uniform(4.0, 4.8, len(sinks))
    smin = 0.0008 if net == "drainage" else 0.0012
    for u in order:
        p = par[u]
        if p < 0:
            continue
        up = sbn[p] if sa[p] == u else sa[p]
        seg_len = s1[p] - s0[p]
        inv[u] = max(inv[up] + smin * seg_len, min(ground[u] - 1.6, inv[up] + 0.002 * seg_len))
    reach = ~np.isnan(inv)
    inv[~reach] = ground[~reach] - 1.6

    # Upstream catchment length for pipe sizes.
    tree_up = np.full(len(se), -1)  # upstream node when the segment is a tree edge
    is_tree = np.zeros(len(se), bool)
    for u in range(ng):
        p = par[u]
        if p >= 0:
            is_tree[p] = True
            tree_up[p] = u
    acc = np.zeros(ng)
    ridge = ~is_tree
    np.add.at(acc, sa[ridge], (s1 - s0)[ridge] / 2)
    np.add.at(acc, sbn[ridge], (s1 - s0)[ridge] / 2)
    for u in reversed(order):
        p = par[u]
        if p >= 0:
            down = sbn[p] if sa[p] == u else sa[p]
            acc[down] += acc[u] + (s1[p] - s0[p])

    # Manholes every 40-80 m; ridge segments get an even count so the summit is a node.
    seg_len = s1 - s0
    m = np.maximum(1, np.round(seg_len / rng.uniform(45, 75, len(se)))).astype(np.int64)
    m = np.where(ridge & (m % 2 == 1), m + 1, m)
    k_seg = np.repeat(np.arange(len(se)), m - 1)
    k = np.arange(len(k_seg)) - np.repeat(np.cumsum(m - 1) - (m - 1), m - 1) + 1
    frac = k / m[k_seg]
    ms = s0[k_seg] + frac * seg_len[k_seg]
    mxy = pl.interpolate(se[k_seg], ms)[0] + shift
    mground = elev(mxy - shift)
    # Invert along each segment: linear between its two ends, or up to the summit.
    ia = inv[sa[k_seg]]
    ib = inv[sbn[k_seg]]
    top = np.maximum(
        elev(pl.interpolate(se, (s0 + s1) / 2)[0]) - 1.6,
        np.maximum(inv[sa], inv[sbn]) + smin * seg_len / 2,
    )
    rg = ridge[k_seg]
    minv = np.where(
        rg,
        np.where(
            frac <= 0.5,
            ia + (top[k_seg] - ia) * frac * 2,
            top[k_seg] + (ib - top[k_seg]) * (frac - 0.5) * 2,
        ),
        ia + (ib - ia) * frac,
    )
    minv = np.minimum(minv, mground - 1.2)

    props = [{} for _ in range(ng)]
    for i in range(nn, ng):
        props[i] = {"role": "outfall"}
    for p in pumps.tolist():
        props[p] = {"role": "pump_station"}
    gid = nodes.add(
        network=net,
        kind=np.full(ng, "manhole", dtype=object),
        state=np.full(ng, None, dtype=object),
        operable=np.ones(ng, bool),
        depth_m=np.round(ground - inv, 2),
        ground_elevation_m=np.round(ground, 2),
        building_id=np.full(ng, None, dtype=object),
        properties=props,
        geom=gxy,
    )
    nm = len(k_seg)
    mid = nodes.add(
        network=net,
        kind=np.full(nm, "manhole", dtype=object),
        state=np.full(nm, None, dtype=object),
        operable=np.ones(nm, bool),
        depth_m=np.round(mground - minv, 2),
        ground_elevation_m=np.round(mground, 2),
        building_id=np.full(nm, None, dtype=object),
        properties=[{} for _ in range(nm)],
        geom=mxy,
    )
    # Pieces between consecutive manholes along each segment.
    nseg = len(se)
    ps = np.concatenate([np.zeros(nseg), frac, np.ones(nseg)])
    pseg = np.concatenate([np.arange(nseg), k_seg, np.arange(nseg)])
    pid = np.concatenate([gid[sa], mid, gid[sbn]])
    pxy = np.concatenate([gxy[sa], mxy, gxy[sbn]])
    pinv = np.concatenate([inv[sa], minv, inv[sbn]])
    o = np.lexsort((ps, pseg))
    ps, pseg, pid, pxy, pinv = ps[o], pseg[o], pid[o], pxy[o], pinv[o]
    a = np.flatnonzero(pseg[1:] == pseg[:-1])
    sg = pseg[a]
    # Flow from the higher invert to the lower; enforce a small fall on every pipe.
    rev = pinv[a] < pinv[a + 1]
    l_s = s0[sg] + ps[a] * seg_len[sg]
    l_e = s0[sg] + ps[a + 1] * seg_len[sg]
    geom = pl.pieces(se[sg], l_s, l_e, pxy[a], pxy[a + 1], shift, reverse=rev)
    up_inv = np.where(rev, pinv[a + 1], pinv[a])
    dn_inv = np.where(rev, pinv[a], pinv[a + 1])
    plen = l_e - l_s
    up_inv = np.maximum(up_inv, dn_inv + 0.0005 * plen)
    frm = np.where(rev, pid[a + 1], pid[a])
    to = np.where(rev, pid[a], pid[a + 1])
    # Pipe size from the catchment upstream of the segment's downstream end.
    q = np.where(is_tree[sg], acc[np.maximum(tree_up[sg], 0)] + seg_len[sg], seg_len[sg] / 2)
    if net == "drainage":
        sizes = np.array([400.0, 500.0, 600.0, 800.0, 1000.0, 1200.0, 1500.0])
        dn = sizes[np.searchsorted([300, 800, 1600, 3200, 6400, 12000], q)]
        material = np.where(dn >= 600, "reinforced concrete", "concrete").astype(object)
    else:
        sizes = np.array([300.0, 400.0, 500.0, 600.0, 800.0])
        dn = sizes[np.searchsorted([600, 1600, 4000, 9000], q)]
        material = np.where(dn >= 500, "reinforced concrete", "HDPE").astype(object)
    npc = len(a)
    gmid = elev(pl.interpolate(se[sg], (l_s + l_e) / 2)[0])
    pipes.add(
        network=net,
        diameter_mm=dn,
        material=material,
        depth_m=np.round(np.maximum(gmid - up_inv - dn / 1000, 0.5), 2),
        invert_start_m=np.round(up_inv, 3).astype(object),
        invert_end_m=np.round(dn_inv, 3).astype(object),
        install_year=rng.integers(1960, 2025, npc),
        status=_status(rng, npc),
        flow_direction=np.full(npc, "forward", dtype=object),
        from_node_id=frm,
        to_node_id=to,
        properties=[{} for _ in range(npc)],
        geom=geom,
    )


def _beside(pipe_t: dict[str, Any]) -> dict[str, Any]:
    """A planned or abandoned main lies beside the live one, as in a real city: drawn as
    the live pipe it was, it would cut the network (a live main never ends where an old one
    begins). So each such pipe stays in service and its planned or abandoned twin is added,
    0.8 m aside and tied to no node, at the end (the other pipes keep their ids)."""
    status = pipe_t["status"]
    twin = np.flatnonzero((status == "planned") | (status == "abandoned"))
    copies = {k: v[twin].copy() for k, v in pipe_t.items()}
    copies["geom"] = shapely.offset_curve(copies["geom"], 0.8)
    copies["from_node_id"] = np.full(len(twin), None, dtype=object)
    copies["to_node_id"] = np.full(len(twin), None, dtype=object)
    copies["properties"] = np.array(
        [{"role": f"{s}_main"} for s in status[twin].tolist()], dtype=object
    )
    status[twin] = "in_service"
    return {k: np.concatenate([v, copies[k]]) for k, v in pipe_t.items()}


def build_networks(
    rng: np.random.Generator,
    city: City,
    elev: Elevation,
    bld: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    progress: Any,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """All networks; ``bld`` = (footprints, ids, floor area) for service connections."""
    nodes = Table()
    pipes = Table()
    r = city.roads
    # Pump stations: about one per 1.3 km square, at the road node nearest its centre.
    x0, y0 = r.node_xy.min(0)
    x1, y1 = r.node_xy.max(0)
    gx = np.arange(x0 + 650, x1, 1300.0)
    gy = np.arange(y0 + 650, y1, 1300.0)
    cx, cy = np.meshgrid(gx, gy)
    centres = np.column_stack([cx.ravel(), cy.ravel()])
    has = r.degree > 0
    idx = np.flatnonzero(has)
    tree = shapely.STRtree(shapely.points(r.node_xy[idx]))
    near = idx[tree.query_nearest(shapely.points(centres), all_matches=False)[1]]
    far = ~shapely.dwithin(city.river, shapely.points(centres), 900.0)
    pumps_all = np.unique(near)
    pumps_drain = np.unique(near[far])
    steps = ["water", "gas", "power", "telecom", "drainage", "sewage"]
    for i, net in enumerate(steps):
        progress("networks", i, len(steps))
        if net in ("drainage", "sewage"):
            _gravity(
                rng, city, elev, nodes, pipes, net, pumps_drain if net == "drainage" else pumps_all
            )
        else:
            _pressure(rng, city, elev, nodes, pipes, net, bld if net == "water" else None)
    progress("networks", len(steps), len(steps))
    node_t = {"id": np.arange(1, nodes.n + 1), **nodes.finish()}
    node_t["source_id"] = [f"N{i:07d}" for i in node_t["id"].tolist()]
    pipe_t = _beside(pipes.finish())
    pipe_t = {"id": np.arange(1, len(pipe_t["status"]) + 1), **pipe_t}
    pipe_t["source_id"] = [f"L{i:07d}" for i in pipe_t["id"].tolist()]
    return node_t, pipe_t
