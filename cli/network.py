"""``twin network …``: the pipe networks from the command line. ``twin network excavation
FILE``: every pipe and node under a planned dig, gas and power first, with the owners to
call. ``twin network check``: the connectivity report of each network."""

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
from twin.network import excavation, queries
from twin.network.topology import check_network
from twin.schema import PIPE_NETWORKS
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


def cmd_network_check(settings: Settings, args: argparse.Namespace) -> int:
    """Print the connectivity report of each network asked (every network with pipes by
    default); exit 1 when a report finds a problem."""
    for name in args.networks:
        check_network(name)
    with db.connect(prepare(settings)) as conn:
        names = args.networks or [
            n for (n,) in conn.execute("SELECT DISTINCT network FROM pipes ORDER BY 1")
            if n in PIPE_NETWORKS
        ]  # fmt: skip
        reports = [
            queries.run_check(conn, name, snap_m=settings.network.network_snap_m,
                              near_miss_m=settings.network.network_near_miss_m)
            for name in names
        ]  # fmt: skip
    if args.json:
        out.print_json(as_json(reports))
    else:
        for report in reports:
            print_check(report)
    found = any(r["problems"] or r["near_miss_count"] or r["off_network_count"] for r in reports)
    return 1 if found else 0


def print_check(report: dict[str, Any]) -> None:
    """One network's connectivity report, in a few lines a data steward reads (whole lines:
    a location or an id cut in two is no use)."""

    def say(text: str, **options: Any) -> None:
        out.print(text, soft_wrap=True, **options)

    say(
        f"[bold]{report['network']}[/]: {report['pipes']:,} pipes, {report['nodes']:,} nodes, "
        f"{report['length_m'] / 1000:,.1f} km, {report['valves']:,} valves, "
        f"{report['sources']} sources"
        + (f"; {report['segments']:,} valve segments" if report["valves"] else "")
        + f" (snapped at {report['snap_m']} m, built in {report['built_s']:.2f} s)"
    )
    parts = report["component_count"]
    unfed = report["components_without_source"]
    say(f"  parts: {parts:,}" + (f", {unfed:,} of them reach no source" if unfed else ""))
    say(f"  dangling ends (a pipe end meeting nothing): {report['dangling_end_count']:,}")
    say(f"  near misses (an end within {report['near_miss_m']} m of a pipe it does not "
              f"meet): {report['near_miss_count']:,}")  # fmt: skip
    for miss in report["near_misses"][:10]:
        say(f"    pipe {miss['pipe']['id']} ({miss['pipe']['source_id']}) misses pipe "
                  f"{miss['near_pipe']['id']} ({miss['near_pipe']['source_id']}) by "
                  f"{miss['gap_m']} m at {miss['location']}", highlight=False)  # fmt: skip
    say(f"  nodes on no pipe: {report['off_network_count']:,}")
    for node in report["off_network_nodes"][:10]:
        gap = node["nearest_pipe_m"]
        say(f"    {node['kind']} {node['id']} ({node['source_id']}) at {node['location']}"
                  + (f", {gap} m from the nearest pipe" if gap is not None else ""),
                  highlight=False)  # fmt: skip
    for problem in report["problems"]:
        say(f"  [yellow]problem:[/] {problem}")


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
