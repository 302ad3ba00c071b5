"""The connectivity report (拓扑检查) of a network: its components, dangling ends, pipes that
nearly touch but do not connect (with the gap), nodes off the network, parts with no source.
What a data steward fixes before the network can be trusted for isolation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import shapely
from scipy import sparse
from scipy.sparse import csgraph

from twin.network.topology import PRESSURE_NETWORKS, Topology

MAX_LISTED = 1000  # of each kind of finding; the counts count them all
ENDING_KINDS = ("hydrant", "service_connection", "source", "tank")  # a pipe may end at these


def _lonlat(t: Topology, xy: np.ndarray) -> list[list[float]]:
    return [[round(float(x), 7), round(float(y), 7)] for x, y in t.frame.lonlat(xy)]


def connectivity(t: Topology, near_miss_m: float) -> dict[str, Any]:
    """The connectivity report of the topology; ``near_miss_m``: how close a pipe end may be
    to a pipe it does not meet before it is reported."""
    vertices = len(t.vertex_xy)
    graph = sparse.coo_matrix(
        (np.ones(len(t.piece_u)), (t.piece_u, t.piece_v)), shape=(vertices, vertices)
    )
    _, label = csgraph.connected_components(graph, directed=False)
    piece_label = label[t.piece_u]
    labels = np.unique(piece_label)
    length_in = np.bincount(piece_label, weights=t.piece_length_m, minlength=vertices)[labels]
    sourced = np.isin(labels, label[t.vertex_source])
    pressure = t.network in PRESSURE_NETWORKS
    # Per component, the box of its pieces' ends: pieces sorted by component, reduced.
    by = np.argsort(piece_label, kind="stable")
    starts = np.searchsorted(piece_label[by], labels)
    xy_u, xy_v = t.vertex_xy[t.piece_u[by]], t.vertex_xy[t.piece_v[by]]
    lo = np.minimum.reduceat(np.minimum(xy_u, xy_v), starts) if len(by) else np.zeros((0, 2))
    hi = np.maximum.reduceat(np.maximum(xy_u, xy_v), starts) if len(by) else np.zeros((0, 2))
    pipes_in = np.array([len(np.unique(chunk)) for chunk in np.split(t.piece_pipe[by], starts[1:])])
    components = []
    for i in np.argsort(-length_in, kind="stable")[:MAX_LISTED].tolist():
        (x0, y0), (x1, y1) = t.frame.lonlat(np.array([lo[i], hi[i]]))
        components.append({
            "pipes": int(pipes_in[i]),
            "length_m": round(float(length_in[i]), 1),
            "has_source": bool(sourced[i]),
            "bbox": [round(float(v), 7) for v in (x0, y0, x1, y1)],
        })  # fmt: skip

    degree = np.bincount(t.piece_u, minlength=vertices) + np.bincount(t.piece_v, minlength=vertices)
    has_node = np.zeros(vertices, dtype=bool)
    ends_well = np.zeros(vertices, dtype=bool)
    on = np.flatnonzero(t.node_vertex >= 0)
    has_node[t.node_vertex[on]] = True
    ends_well[t.node_vertex[on[np.isin(t.node_kind[on], ENDING_KINDS)]]] = True
    dangling = np.flatnonzero((degree == 1) & ~has_node)
    loose = np.flatnonzero((degree == 1) & ~ends_well)  # ends that may be meant to meet a pipe
    near = _near_misses(t, loose, near_miss_m)

    off = np.flatnonzero(t.node_vertex < 0)
    off_rows = [
        {
            "id": int(t.node_id[n]),
            "source_id": t.node_source_id[n],
            "dataset": t.node_dataset[n],
            "kind": t.node_kind[n],
            "location": [round(float(c), 7) for c in t.node_lonlat[n]],
            "nearest_pipe_m": None
            if np.isnan(t.node_gap_m[n])
            else round(float(t.node_gap_m[n]), 2),
        }
        for n in off[:MAX_LISTED].tolist()
    ]
    dangling_rows = [
        {"location": loc, "pipe": _pipe_at(t, int(v))}
        for v, loc in zip(dangling[:MAX_LISTED].tolist(), _lonlat(t, t.vertex_xy[dangling[:MAX_LISTED]]), strict=True)
    ]  # fmt: skip
    problems = []
    if pressure and not t.vertex_source.any() and len(t.piece_pipe):
        problems.append(f"the {t.network} network has no source or tank: nothing feeds it, so "
                        "isolation cannot tell what the closed valves cut off")  # fmt: skip
    unfed = int((~sourced).sum()) if pressure else 0
    if unfed and t.vertex_source.any():
        problems.append(f"{unfed} of {len(labels)} parts of the network reach no source")
    if len(labels) > 1:
        problems.append(f"the network is in {len(labels)} parts that do not connect")
    return {
        "network": t.network,
        "snap_m": t.snap_m,
        "near_miss_m": near_miss_m,
        "pipes": len(t.pipe_id),
        "nodes": len(t.node_id),
        "length_m": round(float(t.pipe_length_m.sum()), 1),
        "valves": int((t.vertex_valve >= 0).sum()),
        "sources": int(t.vertex_source.sum()),
        "segments": t.segments,
        "component_count": len(labels),
        "components_without_source": unfed,
        "components": components,
        "dangling_end_count": len(dangling),
        "dangling_ends": dangling_rows,
        "near_miss_count": len(near),
        "near_misses": near[:MAX_LISTED],
        "off_network_count": len(off),
        "off_network_nodes": off_rows,
        "problems": problems,
        "built_s": round(t.built_s, 3),
    }


def _pipe_at(t: Topology, vertex: int) -> dict[str, Any]:
    """The pipe whose piece ends at ``vertex`` (a dangling end has one)."""
    piece = int(np.flatnonzero((t.piece_u == vertex) | (t.piece_v == vertex))[0])
    p = int(t.piece_pipe[piece])
    return {"id": int(t.pipe_id[p]), "source_id": t.pipe_source_id[p], "dataset": t.pipe_dataset[p]}


def _near_misses(t: Topology, ends: np.ndarray, near_miss_m: float) -> list[dict[str, Any]]:
    """Pipe ends within ``near_miss_m`` of a pipe they do not meet, nearest first."""
    if not len(ends) or not len(t.pipe_lines):
        return []
    points = shapely.points(t.vertex_xy[ends])
    tree = shapely.STRtree(t.pipe_lines)
    which, pipe = tree.query(points, predicate="dwithin", distance=near_miss_m)
    if not len(which):
        return []
    # The pipes an end belongs to do not count: a pipe always touches its own end.
    own = np.zeros(len(which), dtype=bool)
    index = {int(v): i for i, v in enumerate(ends.tolist())}
    touching: dict[int, set[int]] = {}
    for e in np.flatnonzero(np.isin(t.piece_u, ends) | np.isin(t.piece_v, ends)).tolist():
        for v in (int(t.piece_u[e]), int(t.piece_v[e])):
            if v in index:
                touching.setdefault(index[v], set()).add(int(t.piece_pipe[e]))
    for k, (i, p) in enumerate(zip(which.tolist(), pipe.tolist(), strict=True)):
        own[k] = p in touching.get(i, ())
    which, pipe = which[~own], pipe[~own]
    gap = shapely.distance(points[which], t.pipe_lines[pipe])
    best: dict[int, tuple[float, int]] = {}
    for i, p, g in zip(which.tolist(), pipe.tolist(), gap.tolist(), strict=True):
        if g > t.snap_m and (i not in best or g < best[i][0]):
            best[i] = (g, p)
    rows = []
    for i, (g, p) in sorted(best.items(), key=lambda item: item[1][0]):
        v = int(ends[i])
        rows.append({
            "location": _lonlat(t, t.vertex_xy[[v]])[0],
            "gap_m": round(g, 3),
            "pipe": _pipe_at(t, v),
            "near_pipe": {"id": int(t.pipe_id[p]), "source_id": t.pipe_source_id[p],
                          "dataset": t.pipe_dataset[p]},
        })  # fmt: skip
    return rows
