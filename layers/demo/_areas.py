"""Jurisdiction areas of the demo city as unions of whole blocks (metric frame).

The atoms are the faces of the road net: a district cut along the centre line of
every road and of the river.  Each face holds its block (or nothing but road), so an
area made of whole faces never cuts a block, and no building, standing inside its
block, is split by a boundary; faces share their edges exactly, so unions of them
tile their parent without gaps or overlaps.  Faces that share a secondary road lie in
one superblock; main roads and the river separate superblocks.  Streets (街道) are
groups of whole superblocks, so their boundaries run along main roads and the river;
grids split a street's superblocks into a few faces each, communities split grids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

from ._roads import City

# A face smaller than this (m²) holds no block worth a grid or community of its own:
# a sliver between the river and a road, a traffic island.
SUBSTANTIAL = 4000.0
# A group under this share of its siblings' mean area joins a neighbour.
SMALL_SHARE = 0.4
# Offset (m) from an edge to the faces on either side of it, and the tolerance within
# which a noded piece of line is taken to lie on a main road or the river.
_SIDE = 0.05
_ON = 1e-4


@dataclass
class Graph:
    """Pieces of a district (faces, or groups of them) and which of them share a road.

    ``pairs[i] = (a, b)`` with a < b share roads of total length ``length[i]``;
    ``main[i]`` is whether a main road or the river separates them (else a
    secondary road does).
    """

    xy: np.ndarray  # (n, 2) area-weighted centroids
    area: np.ndarray
    pairs: np.ndarray  # (m, 2)
    length: np.ndarray
    main: np.ndarray

    @property
    def n(self) -> int:
        """Number of pieces."""
        return len(self.area)

    def coarsen(self, label: np.ndarray) -> Graph:
        """The graph of groups of pieces (``label[i]``: group of piece i, 0..k-1)."""
        k = int(label.max()) + 1
        area = np.bincount(label, self.area, minlength=k)
        xy = np.column_stack(
            [np.bincount(label, self.area * self.xy[:, i], minlength=k) / area for i in (0, 1)]
        )
        a, b = label[self.pairs[:, 0]], label[self.pairs[:, 1]]
        cross = a != b
        lo, hi = np.minimum(a, b)[cross], np.maximum(a, b)[cross]
        key, inv = np.unique(lo * k + hi, return_inverse=True)
        return Graph(
            xy=xy,
            area=area,
            pairs=np.column_stack([key // k, key % k]),
            length=np.bincount(inv, self.length[cross], minlength=len(key)),
            main=np.bincount(inv, self.main[cross], minlength=len(key)) > 0,
        )


def district_faces(
    city: City, d: int, edges: np.ndarray, mids: np.ndarray, tree: shapely.STRtree
) -> tuple[np.ndarray, Graph]:
    """Faces of district ``d`` (Polygons) and their graph.

    ``edges`` are the road edges as LineStrings, ``mids`` their midpoints and
    ``tree`` an index of ``edges`` (built once for all districts).
    """
    poly = city.district_poly[d]
    ring = shapely.get_exterior_ring(poly)
    shapely.prepare([poly, ring])  # for the point tests below
    near = tree.query(poly, predicate="intersects")
    # Edges along the district's outline are the ring itself; edges of the
    # neighbouring districts only touch it.
    inner = near[shapely.contains(poly, mids[near]) & ~shapely.dwithin(ring, mids[near], _ON)]
    river = np.asarray(shapely.get_parts(shapely.intersection(city.river_line, poly)))
    river = river[shapely.get_type_id(river) == 1]
    mains = np.concatenate([edges[inner][city.roads.edge_main[inner]], [ring], river])
    noded = np.asarray(shapely.get_parts(shapely.union_all(np.concatenate([edges[inner], mains]))))
    faces = np.asarray(shapely.get_parts(shapely.polygonize(noded)))

    # Each noded piece of line: a point just to its left and right, on its longest
    # segment, tells which two faces it lies between.
    xy, owner = shapely.get_coordinates(noded, return_index=True)
    seg = xy[1:] - xy[:-1]
    seglen = np.hypot(seg[:, 0], seg[:, 1])
    seglen[owner[1:] != owner[:-1]] = -1.0  # not a segment: from one piece to the next
    order = np.lexsort((-seglen, owner[:-1]))
    first = order[np.searchsorted(owner[:-1][order], np.arange(len(noded)))]
    mid = (xy[first] + xy[first + 1]) / 2
    normal = np.column_stack([-seg[first, 1], seg[first, 0]]) / seglen[first, None]
    tree = shapely.STRtree(faces)
    side = []
    for sign in (1.0, -1.0):
        at = np.full(len(noded), -1)
        pt, face = tree.query(shapely.points(mid + sign * _SIDE * normal), predicate="within")
        at[pt] = face
        side.append(at)
    both = (side[0] >= 0) & (side[1] >= 0) & (side[0] != side[1])
    # Main roads, the outline and the river cut into their segments: short ones keep
    # the index quick where a whole river or outline would be one huge candidate.
    mxy, mown = shapely.get_coordinates(mains, return_index=True)
    cont = np.flatnonzero(mown[1:] == mown[:-1])
    segments = shapely.linestrings(
        np.stack([mxy[cont], mxy[cont + 1]], 1).reshape(-1, 2),
        indices=np.repeat(np.arange(len(cont)), 2),
    )
    on_main = np.zeros(len(noded), bool)
    hit = shapely.STRtree(segments).query(shapely.points(mid), predicate="dwithin", distance=_ON)
    on_main[hit[0]] = True
    a, b = side[0][both], side[1][both]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    n = len(faces)
    key, inv = np.unique(lo * n + hi, return_inverse=True)
    area = shapely.area(faces)
    graph = Graph(
        xy=shapely.get_coordinates(shapely.centroid(faces)),
        area=area,
        pairs=np.column_stack([key // n, key % n]),
        length=np.bincount(inv, shapely.length(noded[both]), minlength=len(key)),
        main=np.bincount(inv, on_main[both], minlength=len(key)) > 0,
    )
    return faces, graph


def components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected component (0..k-1, in order of first member) of each of ``n`` nodes."""
    root = np.arange(n)

    def find(a: int) -> int:
        while root[a] != a:
            root[a] = root[root[a]]
            a = root[a]
        return a

    for a, b in pairs.tolist():
        ra, rb = find(a), find(b)
        if ra != rb:
            root[max(ra, rb)] = min(ra, rb)
    tops = np.array([find(a) for a in range(n)], dtype=np.int64)
    return np.unique(tops, return_inverse=True)[1]


def superblocks(graph: Graph) -> np.ndarray:
    """Superblock of each face: faces joined across secondary roads only."""
    return components(graph.n, graph.pairs[~graph.main])


def split(graph: Graph, members: np.ndarray, k: int) -> list[np.ndarray]:
    """Split ``members`` (piece indices) into ``k`` connected groups of similar area.

    Recursive bisection across the longer axis of the members, then any piece of a
    group cut off from the rest of it joins the neighbouring group it shares the most
    road with.  Fewer than ``k`` groups when there are fewer substantial members.
    """
    k = max(1, min(k, int((graph.area[members] >= SUBSTANTIAL).sum())))
    groups = _bisect(graph, members, k)
    return _merge_small(graph, _contiguous(graph, members, groups))


def _bisect(graph: Graph, members: np.ndarray, k: int) -> list[np.ndarray]:
    if k == 1:
        return [members]
    k1 = k // 2
    w = graph.area[members]
    xy = graph.xy[members]
    centre = (w[:, None] * xy).sum(0) / w.sum()
    rel = xy - centre
    # The principal axis of the weighted centroids: the direction the members spread.
    sxx, syy, sxy = (
        (w * rel[:, 0] ** 2).sum(),
        (w * rel[:, 1] ** 2).sum(),
        (w * rel[:, 0] * rel[:, 1]).sum(),
    )
    angle = 0.5 * np.arctan2(2 * sxy, sxx - syy)
    axis = np.array([np.cos(angle), np.sin(angle)])
    order = np.argsort(rel @ axis, kind="stable")
    big = w[order] >= SUBSTANTIAL
    cum = np.cumsum(w[order])
    cut = int(np.searchsorted(cum, cum[-1] * k1 / k)) + 1
    # Each side keeps at least as many substantial pieces as the groups it gets.
    nbig = np.cumsum(big)
    lo = int(np.searchsorted(nbig, k1)) + 1
    hi = int(np.searchsorted(nbig, nbig[-1] - (k - k1), side="right"))
    cut = min(max(cut, lo), hi)
    return _bisect(graph, members[order[:cut]], k1) + _bisect(graph, members[order[cut:]], k - k1)


def _contiguous(graph: Graph, members: np.ndarray, groups: list[np.ndarray]) -> list[np.ndarray]:
    group = np.full(graph.n, -1)
    for g, m in enumerate(groups):
        group[m] = g
    if len(groups) == 1:
        return groups
    inside = (group[graph.pairs[:, 0]] >= 0) & (group[graph.pairs[:, 1]] >= 0)
    pairs, length = graph.pairs[inside], graph.length[inside]
    for _ in range(len(members)):
        same = group[pairs[:, 0]] == group[pairs[:, 1]]
        local = np.full(graph.n, -1)
        local[members] = np.arange(len(members))
        comp = components(len(members), local[pairs[same]])
        # Keep each group's biggest part; every other part is an outlier.
        part_area = np.bincount(comp, graph.area[members])
        part_group = np.zeros(len(part_area), np.int64)
        part_group[comp] = group[members]
        best = np.full(len(groups), -1)
        for p in np.argsort(-part_area, kind="stable").tolist():
            if best[part_group[p]] < 0:
                best[part_group[p]] = p
        stray = np.setdiff1d(np.arange(len(part_area)), best)
        if not len(stray):
            break
        # Each stray part joins the other group it shares the longest border with.
        pa, pb = comp[local[pairs[:, 0]]], comp[local[pairs[:, 1]]]
        moved = False
        for p in stray.tolist():
            edge = ((pa == p) & (pb != p)) | ((pb == p) & (pa != p))
            other = np.where(pa[edge] == p, pb[edge], pa[edge])
            gain = np.bincount(part_group[other], length[edge], minlength=len(groups))
            gain[part_group[p]] = 0.0
            if gain.max() > 0:
                group[members[comp == p]] = int(np.argmax(gain))
                moved = True
        if not moved:
            break
    return [np.sort(members[group[members] == g]) for g in range(len(groups))]


def _merge_small(graph: Graph, groups: list[np.ndarray]) -> list[np.ndarray]:
    """Merge any group under ``SMALL_SHARE`` of the mean into the neighbour it shares
    the most road with (a lone small block is no grid or community of its own)."""
    area = [float(graph.area[g].sum()) for g in groups]
    least = SMALL_SHARE * sum(area) / len(groups)
    while len(groups) > 1:
        i = int(np.argmin(area))
        if area[i] >= least:
            break
        group = np.full(graph.n, -1)
        for j, g in enumerate(groups):
            group[g] = j
        a, b = group[graph.pairs[:, 0]], group[graph.pairs[:, 1]]
        edge = ((a == i) & (b >= 0) & (b != i)) | ((b == i) & (a >= 0) & (a != i))
        if not edge.any():
            break
        border = np.bincount(np.where(a[edge] == i, b[edge], a[edge]), graph.length[edge])
        j = int(np.argmax(border))
        groups[j] = np.sort(np.concatenate([groups[j], groups[i]]))
        area[j] += area[i]
        del groups[i], area[i]
    return groups


def _allocate(area: np.ndarray, k: int, cap: np.ndarray) -> np.ndarray:
    """Share ``k`` among parts by area (largest remainder), each at least 1, at most ``cap``."""
    share = k * area / area.sum()
    out = np.clip(np.floor(share).astype(np.int64), 1, cap)
    rest = share - np.floor(share)
    for i in np.argsort(-rest, kind="stable").tolist():
        if out.sum() >= k:
            break
        if out[i] < cap[i]:
            out[i] += 1
    while out.sum() > k and (out > 1).any():
        i = int(np.argmax(np.where(out > 1, out - share, -np.inf)))
        out[i] -= 1
    return out


def split_superblocks(
    graph: Graph, label: np.ndarray, blocks: Graph, parts: np.ndarray, k: int
) -> list[np.ndarray]:
    """Split superblocks ``parts`` (of ``blocks``, the graph ``graph.coarsen(label)``)
    into about ``k`` connected groups of faces, none across a main road or the river
    unless a superblock is too small for a group of its own (then it joins the
    neighbour it shares the most road with)."""
    target = blocks.area[parts].sum() / k
    region = {int(p): [int(p)] for p in parts}
    area = {int(p): float(blocks.area[p]) for p in parts}
    of = {int(p): int(p) for p in parts}
    while len(region) > 1:
        small = min(region, key=lambda r: (area[r], r))
        if area[small] >= 0.5 * target and len(region) <= k:
            break
        border: dict[int, float] = {}
        for (a, b), length in zip(blocks.pairs.tolist(), blocks.length.tolist(), strict=True):
            if a in of and b in of and (of[a] == small) != (of[b] == small):
                other = of[b] if of[a] == small else of[a]
                border[other] = border.get(other, 0.0) + length
        if not border:
            break
        into = max(border, key=lambda r: (border[r], -r))
        for p in region.pop(small):
            of[p] = into
            region[into].append(p)
        area[into] += area.pop(small)
    faces = [np.flatnonzero(np.isin(label, region[r])) for r in sorted(region)]
    cap = np.array([max(1, int((graph.area[f] >= SUBSTANTIAL).sum())) for f in faces])
    counts = _allocate(np.array([area[r] for r in sorted(region)]), k, cap)
    return [g for f, c in zip(faces, counts.tolist(), strict=True) for g in split(graph, f, c)]
