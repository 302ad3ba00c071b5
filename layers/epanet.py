"""Water networks from EPANET ``.inp`` files, the format water engineers model in.

wntr reads the file (units converted to SI). Junctions, reservoirs (sources) and tanks become
pipe nodes; pipes keep their vertices. EPANET models valves and pumps as links; in the one
map a valve is a node, so each valve or pump link becomes a node at its middle with the two
halves of the link as pipes. Pipes are then tied to their nodes by source id.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import shapely
from shapely.ops import substring

from layers.ingest.pipeline import import_frame
from layers.ingest.report import ImportOptions, ImportReport, Progress, check_stored
from layers.kinds import KINDS, LayerKind
from layers.readers import FeatureFrame
from twin import changes
from twin.errors import InvalidInput


def read_epanet(path: Path, source: str | None = None) -> tuple[FeatureFrame, FeatureFrame]:
    """Nodes and pipes of an EPANET file, in the file's own coordinates; ``source`` is
    what messages call the file (by default its name)."""
    import wntr  # imported here: it is slow to import and only .inp files need it

    source = source or path.name
    try:
        network = wntr.network.WaterNetworkModel(str(path))
    except Exception as exc:  # wntr raises many kinds; all mean the file is not usable
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        message = message.replace(str(path), source)
        raise InvalidInput(f"cannot read {source} as an EPANET file: {message}") from exc

    nodes: list[dict[str, Any]] = []
    for name, node in network.nodes():
        kind = {"Junction": "junction", "Reservoir": "source", "Tank": "tank"}[node.node_type]
        record: dict[str, Any] = {
            "id": name,
            "kind": kind,
            "geometry": shapely.Point(node.coordinates),
            "epanet_type": node.node_type,
        }
        if node.node_type in ("Junction", "Tank"):
            record["ground_elevation_m"] = float(node.elevation)
        if node.node_type == "Reservoir":
            record["head_m"] = float(node.base_head)
        if node.node_type == "Tank":
            record["max_level_m"] = float(node.max_level)
            record["tank_diameter_m"] = float(node.diameter)
        nodes.append(record)

    pipes: list[dict[str, Any]] = []
    node_names = {n["id"] for n in nodes}
    for name, link in network.links():
        start = network.get_node(link.start_node_name).coordinates
        end = network.get_node(link.end_node_name).coordinates
        line = shapely.LineString([start, *link.vertices, end])
        status = str(link.initial_status).lower()
        if link.link_type == "Pipe":
            pipes.append(
                {
                    "id": name,
                    "geometry": line,
                    "diameter_mm": round(float(link.diameter) * 1000, 1),
                    "from_node": link.start_node_name,
                    "to_node": link.end_node_name,
                    "length_m": float(link.length),
                    "roughness": float(link.roughness),
                    "initial_status": status,
                    "flow_direction": "forward" if link.check_valve else "both",
                }
            )
            continue
        # A valve or pump link: a node at its middle, and the two halves as pipes. EPANET
        # names links and nodes apart (Net3 has pump 10 and junction 10): a link's name
        # taken by a node gets its kind in front, so neither node replaces the other.
        middle = line.interpolate(0.5, normalized=True)
        if name in node_names:
            name = f"{link.link_type.lower()}-{name}"
        node: dict[str, Any] = {"id": name, "geometry": middle, "epanet_type": link.link_type}
        if link.link_type == "Valve":
            node.update(kind="valve", state="closed" if status == "closed" else "open",
                        valve_type=str(link.valve_type), setting=_number(link.initial_setting))  # fmt: skip
        else:
            node.update(kind="junction", role="pump")
        nodes.append(node)
        diameter = getattr(link, "diameter", None)
        for suffix, part, a, b in (
            ("a", substring(line, 0, 0.5, normalized=True), link.start_node_name, name),
            ("b", substring(line, 0.5, 1, normalized=True), name, link.end_node_name),
        ):
            pipes.append(
                {
                    "id": f"{name}-{suffix}",
                    "geometry": part,
                    "diameter_mm": round(float(diameter) * 1000, 1) if diameter else None,
                    "from_node": a,
                    "to_node": b,
                    "flow_direction": "forward",
                }
            )
    return _frame(nodes, f"{source} (nodes)"), _frame(pipes, f"{source} (pipes)")


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _frame(records: list[dict[str, Any]], source: str) -> FeatureFrame:
    names = sorted({k for r in records for k in r} - {"geometry"})
    return FeatureFrame(
        fields={n: np.array([r.get(n) for r in records], dtype=object) for n in names},
        geoms=np.array([r["geometry"] for r in records], dtype=object),
        fids=np.array([r["id"] for r in records], dtype=object),
        crs=None,
        source=source,
    )


NETWORK_LAYERS = ("pipes", "pipe_nodes")  # an EPANET file fills both; either is asked


def import_epanet(
    conn: psycopg.Connection,
    kind: LayerKind,
    path: Path,
    options: ImportOptions,
    *,
    dataset: str,
    progress: Progress | None = None,
) -> ImportReport:
    """Import an EPANET network's nodes and pipes (asked for as ``kind``, either of them)
    and tie them together; one transaction. NothingStored when neither stored a feature."""
    if kind.name not in NETWORK_LAYERS:
        raise InvalidInput(
            f"an EPANET file holds a water network: import it into pipes, not {kind.name}"
        )
    if not options.crs:
        raise InvalidInput(
            f"{options.source or path.name}: EPANET files do not say their CRS; give it, "
            "e.g. EPSG:4549",
            option="crs",
        )
    nodes, pipes = read_epanet(path, options.source)
    values = {"network": "water", **options.values}
    node_options = replace(options, values=values, mapping={})
    pipe_values = {k: v for k, v in values.items() if k in {f.name for f in KINDS["pipes"].fields}}
    pipe_options = replace(options, values=pipe_values, mapping={})
    with conn.transaction():
        # Each part may store nothing (a network of nodes alone): the whole is checked below.
        node_report = import_frame(
            conn, KINDS["pipe_nodes"], nodes, node_options, dataset=dataset, progress=progress,
            refuse_empty=False,
        )  # fmt: skip
        report = import_frame(
            conn, KINDS["pipes"], pipes, pipe_options, dataset=dataset, progress=progress,
            refuse_empty=False,
        )  # fmt: skip
        tied = conn.execute(
            """
            WITH tied AS (
                UPDATE pipes p SET from_node_id = a.id, to_node_id = b.id
                FROM pipe_nodes a, pipe_nodes b
                WHERE p.dataset = %(dataset)s
                  AND a.dataset = %(dataset)s AND a.source_id = p.properties->>'from_node'
                  AND b.dataset = %(dataset)s AND b.source_id = p.properties->>'to_node'
                RETURNING p.geom
            )
            SELECT n, ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e)
            FROM (SELECT count(*) AS n, ST_Extent(geom) AS e FROM tied) AS x
            """,
            {"dataset": dataset},
        ).fetchone()
        if tied is not None and tied[0]:  # the network's topology changed: say so
            changes.record(
                conn, "pipes", "topology", box=(tied[1], tied[2], tied[3], tied[4]),
                dataset=dataset, features=int(tied[0]), table="pipes",
            )  # fmt: skip
        report.related.append(node_report)
        check_stored(report)
    return report
