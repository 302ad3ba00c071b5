"""``twin network …``: the pipe networks from the command line. ``twin network excavation
FILE``: every pipe and node under a planned dig, gas and power first, with the owners to
call."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import shapely
from rich.table import Table
from rich.text import Text

from cli.common import as_json, out, prepare
from layers.readers import read_features
from twin import db
from twin.errors import InvalidInput
from twin.network import excavation
from twin.settings import Settings


def cmd_network_excavation(settings: Settings, args: argparse.Namespace) -> int:
    """Print what lies under the dig in ``args.path``: a table, owners, warnings."""
    area, crs = read_dig(args.path)
    with db.connect(prepare(settings)) as conn:
        answer = excavation.excavation_check(conn, area, margin_m=args.margin, crs=args.crs or crs)
    if args.json:
        out.print_json(as_json(answer))
        return 0
    print_excavation(answer)
    return 0


def read_dig(path: Path) -> tuple[Any, str | None]:
    """The dig's outline in a file (GeoJSON, or any vector format the imports read) and the
    CRS the file states: its polygons as one (a works plan may hold several pits)."""
    frame = read_features(path)
    name = frame.source
    if frame.geometry_reasons is not None:
        for i, why in enumerate(frame.geometry_reasons):
            if why is not None:
                raise InvalidInput(f"{name}: feature {i}: {why}")
    geoms = [g for g in frame.geoms if g is not None and not g.is_empty]
    if not geoms:
        raise InvalidInput(f"{name} holds no polygon: give the dig's outline as a Polygon")
    for i, geom in enumerate(frame.geoms):
        if geom is not None and geom.geom_type not in ("Polygon", "MultiPolygon"):
            raise InvalidInput(
                f"{name}: feature {i} is a {geom.geom_type}; the dig's outline is a Polygon "
                "or MultiPolygon"
            )
    if len(geoms) == 1:
        return geoms[0], frame.crs
    # Several pits, each checked as a polygon would be; overlapping ones as one.
    invalid = next((i for i, g in enumerate(geoms) if not g.is_valid), None)
    if invalid is not None:
        return geoms[invalid], frame.crs  # the check names what is wrong with it
    return shapely.union_all(geoms), frame.crs


def _metres(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"


def print_excavation(answer: dict[str, Any]) -> None:
    """The answer as a person reads it: one table, gas and power first, then who to call
    and what to mind."""
    counts = answer["counts"]
    margin = answer["margin_m"]
    out.print(
        f"dig of {answer['area_m2']:,.0f} m², margin {margin:g} m: {counts['pipes']:,} pipes "
        f"and {counts['nodes']:,} nodes under it or within {margin:g} m",
        highlight=False,
        markup=False,
    )
    if not counts["pipes"] and not counts["nodes"]:
        return
    table = Table("network", "what", "id", "depth m", "⌀ mm", "material", "status", "in dig m",
                  "owner")  # fmt: skip
    nodes_by_network: dict[str, list[dict[str, Any]]] = {}
    for node in answer["nodes"]:
        nodes_by_network.setdefault(node["network"], []).append(node)
    pipes_by_network: dict[str, list[dict[str, Any]]] = {}
    for pipe in answer["pipes"]:
        pipes_by_network.setdefault(pipe["network"], []).append(pipe)
    for network in excavation.NETWORK_ORDER:
        for pipe in pipes_by_network.get(network, []):
            depth = _metres(pipe["depth_m"])
            if pipe["depth_from"] == "inverts and ground":
                depth += " *"
            table.add_row(  # names come from files and people: text, never rich markup
                network, "pipe", Text(str(pipe["source_id"] or pipe["id"])), depth,
                _metres(pipe["diameter_mm"]), Text(pipe["material"] or ""), pipe["status"],
                _metres(pipe["length_m"]), Text(_owner(pipe["owner"])),
            )  # fmt: skip
        for node in nodes_by_network.get(network, []):
            table.add_row(
                network, node["kind"], Text(str(node["source_id"] or node["id"])),
                _metres(node["depth_m"]), "", "", node["state"] or "", "",
                Text(_owner(node["owner"])),
            )  # fmt: skip
    out.print(table)
    if any(p["depth_from"] == "inverts and ground" for p in answer["pipes"]):
        out.print("* depth worked out from invert and ground elevations", highlight=False)
    if answer["truncated"]:
        out.print(f"(the first {len(answer['pipes']):,} pipes and {len(answer['nodes']):,} nodes; "
                  "--json lists the same)", highlight=False)  # fmt: skip
    calls = [
        Text(f"  {n['network']}: {o['name'] or o['code']} ({o['code']})"
             + (f", {o['phone']}" if o["phone"] else ""))
        for n in answer["networks"] for o in n["owners"]
    ]  # fmt: skip
    if calls:
        out.print("owners to call:", highlight=False)
        for line in calls:
            out.print(line, highlight=False)
    if answer["warnings"]:
        out.print("warnings:", highlight=False)
        for warning in answer["warnings"]:
            out.print(Text(f"  ! {warning}"), highlight=False)


def _owner(owner: dict[str, Any] | None) -> str:
    if owner is None:
        return "(none recorded)"
    return owner["name"] or owner["code"]
