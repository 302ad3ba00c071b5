"""``main()``: the command line, settings read, the chosen command run, and errors a person
can act on turned into one line on stderr and a non-zero exit, never a traceback.

The command line is declared here, whole; each command runs from its group's module
(``twin db start`` is ``cli.db.cmd_db_start``), imported only when that command runs: a
command loads what it needs and no more (``twin db status`` neither FastAPI nor pandas,
some 1.4 s of imports). The group modules import at their top, so lint-imports sees them.
"""

from __future__ import annotations

import argparse
import importlib
import math
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import psycopg
from pydantic import ValidationError
from pydantic_settings import SettingsError

from cli.common import console
from twin.errors import InvalidInput, TwinError
from twin.settings import Settings

SIZES = ("small", "default", "large")  # of the demo city
Command = Callable[[Settings, argparse.Namespace], int]


def _command(group: str, name: str) -> Command:
    """The command ``name`` of the module ``cli.<group>``, imported when it runs."""

    def run(settings: Settings, args: argparse.Namespace) -> int:
        command: Command = getattr(importlib.import_module(f"cli.{group}"), name)
        return command(settings, args)

    run.__qualname__ = f"cli.{group}.{name}"
    return run


# The inputs the core may name as wrong, as this command line's flags.
OPTION_FLAGS = {
    "dataset": "--dataset", "crs": "--crs", "layer": "--layer", "mapping": "--map",
    "values": "--set", "defaults": "--default", "provider": "--provider",
    "owner_unit": "--owner", "licence": "--licence", "update_cadence": "--cadence",
    "jurisdiction": "--jurisdiction", "unit": "--unit", "role": "--role",
    "margin_m": "--margin",
}  # fmt: skip


def _worded(exc: TwinError) -> str:
    """An error as this command line says it: with the flag of the input that was wrong."""
    option = exc.option if isinstance(exc, InvalidInput) else None
    return f"{exc} (option {OPTION_FLAGS.get(option, option)})" if option else str(exc)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``twin`` console command."""
    parser = build_parser()
    args = parser.parse_args(_signed_values_joined(sys.argv[1:] if argv is None else argv))
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        settings = Settings()
        return int(args.run(settings, args) or 0)
    except ValidationError as exc:
        # The variable is the first of the error's place; the rest is inside its JSON value
        # (TWIN_API_KEYS='{"k": 1}': the value at "k").
        problems = "; ".join(
            f"TWIN_{str(e['loc'][0]).upper()}"
            + (f" (at {'.'.join(repr(str(p)) for p in e['loc'][1:])})" if len(e["loc"]) > 1 else "")
            + f"={str(e.get('input'))[:40]!r}: "
            + e["msg"].replace("Input should be", "must be").split(", unable")[0]
            for e in exc.errors()
        )
        console.print(f"twin: error: bad setting: {problems}", highlight=False, markup=False)
    except SettingsError as exc:
        # e.g. TWIN_API_KEYS that is not JSON: pydantic-settings names the field.
        field = re.search(r'field "(\w+)"', str(exc))
        said = (
            f"TWIN_{field[1].upper()} is not JSON of the form it takes"
            + (' ({"key": "caller"})' if field[1] == "api_keys" else "")
            if field
            else str(exc)
        )
        console.print(f"twin: error: bad setting: {said}", highlight=False, markup=False)
    except TwinError as exc:
        console.print(f"twin: error: {_worded(exc)}", highlight=False, markup=False)
    except psycopg.Error as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        console.print(f"twin: data base error: {message}", highlight=False, markup=False)
    except KeyboardInterrupt:
        console.print("twin: interrupted")
        return 130
    return 1


def build_parser() -> argparse.ArgumentParser:
    """The command line: ``twin db|demo|import|scene|terrain|datasets|incidents|keys|tiles|
    network|layers|serve|up``."""
    parser = argparse.ArgumentParser(
        prog="twin",
        description="The one map (一张图): a spatial digital twin of the city on PostGIS.",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    db_parser = commands.add_parser("db", help="manage the data base (embedded by default)")
    db_commands = db_parser.add_subparsers(title="db commands", metavar="ACTION", required=True)
    for name, run, text in (
        (
            "start",
            _command("db", "cmd_db_start"),
            "make (first time) and start the embedded PostGIS cluster",
        ),
        ("stop", _command("db", "cmd_db_stop"), "stop the embedded cluster"),
        ("status", _command("db", "cmd_db_status"), "say whether the data base is there and up"),
        (
            "url",
            _command("db", "cmd_db_url"),
            "print the data base URL (starts the embedded cluster)",
        ),
        ("migrate", _command("db", "cmd_db_migrate"), "bring the schema to the newest migration"),
    ):
        db_commands.add_parser(name, help=text, description=text).set_defaults(run=run)

    demo = commands.add_parser(
        "demo", help="generate and load the demo city (replaces only the previous demo)"
    )
    demo.add_argument("--size", choices=SIZES, default="default")
    demo.add_argument("--seed", type=_seed, default=1, help="same seed, same city (default 1)")
    demo.add_argument("--no-history", action="store_true",
                      help="no history of incidents (three months of them by default)")  # fmt: skip
    demo.set_defaults(run=_command("demo", "cmd_demo"))

    imports = commands.add_parser(
        "import",
        help="import a provider's file into a layer",
        description=(
            "Import a file (GeoJSON, GeoPackage, Shapefile or zipped Shapefile, CSV with "
            "lon/lat, x/y or WKT columns, FlatGeobuf, any GDAL format, EPANET .inp) into a "
            "layer. Features are matched by source id: importing the same dataset again "
            "updates it. Exit status: 0 all imported, 3 some features rejected (the rest "
            "imported), 1 nothing imported."
        ),
    )
    imports.add_argument(
        "layer",
        help="buildings, public_spaces, pipes, pipe_nodes, sensors, "
        "jurisdictions, units, or a scene's name; or categories or responsibilities "
        "(a CSV or JSON file of the incident categories or the responsibility list)",
    )
    imports.add_argument("path", type=Path, help="the file")
    imports.add_argument(
        "--crs",
        help="the file's CRS when it does not say (or says wrong): "
        "EPSG:4549, 4490, GCJ02, BD09 ...",
    )
    imports.add_argument("--layer", dest="source_layer", help="layer inside a multi-layer file")
    imports.add_argument("--dataset", help="name of this source (default: the file's name)")
    imports.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="FIELD=SOURCE",
        help="take schema FIELD from the file's SOURCE field (repeatable)",
    )
    imports.add_argument("--mapping", type=Path, help="a JSON file {field: source field}")
    imports.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="give FIELD this value for every feature, over the file's (repeatable)",
    )
    imports.add_argument(
        "--default",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="give FIELD this value where the file has none (repeatable)",
    )
    imports.add_argument("--provider", help="who provides the data (catalogue)")
    imports.add_argument(
        "--owner",
        help="the unit that owns the data: the catalogue's owner, and the owner_unit (a "
        "unit's code) of every feature that names none",
    )
    imports.add_argument("--licence", help="licence of the data (catalogue)")
    imports.add_argument("--cadence", help="how often it is updated (catalogue)")
    imports.add_argument("--json", action="store_true", help="print the report as JSON")
    imports.set_defaults(run=_command("imports", "cmd_import"))

    scene = commands.add_parser("scene", help="register or drop a scene layer (个性化场景)")
    scene_commands = scene.add_subparsers(title="scene commands", metavar="ACTION", required=True)
    create = scene_commands.add_parser("create", help="register a new scene layer")
    create.add_argument("name", help="2-40 lower-case letters, digits or _")
    create.add_argument("--geometry", required=True, help="Point, LineString or Polygon")
    create.add_argument(
        "--property",
        action="append",
        default=[],
        metavar="NAME:TYPE",
        help="a property and its type: string, number, integer, boolean",
    )
    create.add_argument("--title", help="a title for people")
    create.add_argument("--owner", default="", help="the unit that owns the scene")
    create.add_argument("--description", default="")
    create.set_defaults(run=_command("scenes", "cmd_scene_create"))
    drop = scene_commands.add_parser("drop", help="remove a scene layer and its features")
    drop.add_argument("name")
    drop.set_defaults(run=_command("scenes", "cmd_scene_drop"))

    terrain = commands.add_parser("terrain", help="the ground elevation model (DEM)")
    terrain_commands = terrain.add_subparsers(
        title="terrain commands", metavar="ACTION", required=True
    )
    dem = terrain_commands.add_parser(
        "import", help="load a DEM (GeoTIFF or any raster GDAL reads) and sample elevations"
    )
    dem.add_argument("path", type=Path)
    dem.add_argument("--crs", help="the raster's CRS when it does not say")
    dem.add_argument("--dataset", help="name of this DEM (default: the file's name)")
    dem.add_argument("--provider", help="who provides it (catalogue)")
    dem.set_defaults(run=_command("terrain", "cmd_terrain_import"))
    sample = terrain_commands.add_parser(
        "sample", help="fill missing elevations of buildings, pipe nodes and sensors"
    )
    sample.set_defaults(run=_command("terrain", "cmd_terrain_sample"))

    datasets = commands.add_parser(
        "datasets",
        help="list a layer's datasets, or delete one",
        description=(
            "List the datasets of a layer (each import names one, by default the file's "
            "name) with their feature counts, or delete one dataset's features with --delete."
        ),
    )
    datasets.add_argument("layer", help="a layer of the catalogue (see 'twin layers')")
    datasets.add_argument("--delete", metavar="NAME", help="delete every feature of this dataset")
    datasets.add_argument("--json", action="store_true", help="print JSON instead of a table")
    datasets.set_defaults(run=_command("datasets", "cmd_datasets"))

    incidents = commands.add_parser("incidents", help="the incidents' closed loop (闭环)")
    incident_commands = incidents.add_subparsers(
        title="incidents commands", metavar="ACTION", required=True
    )
    sweep = incident_commands.add_parser(
        "sweep",
        help="supervise (督办) and escalate overdue incidents",
        description=(
            "Mark each incident newly past its response or resolution time on its timeline "
            "(督办) and escalate it to its jurisdiction's centre; run again, it marks "
            "nothing twice."
        ),
    )
    sweep.add_argument("--json", action="store_true", help="print what was done as JSON")
    sweep.set_defaults(run=_command("incidents", "cmd_incidents_sweep"))

    keys_parser = commands.add_parser(
        "keys",
        help="API keys: make, list and revoke them (stored hashed)",
        description=(
            "Each key has a role (what it may do) and may be held to a jurisdiction (that "
            "one and everything inside it); unit staff keys to their unit's work. The key "
            "is printed once, when it is made: only its hash is kept."
        ),
    )
    key_commands = keys_parser.add_subparsers(title="keys commands", metavar="ACTION",
                                              required=True)  # fmt: skip
    add_key = key_commands.add_parser("add", help="make a key and print it (once)")
    add_key.add_argument("name", help="who holds the key (a person, a team, a system)")
    add_key.add_argument(
        "--role", required=True,
        help="resident, grid_inspector, dispatcher, unit_staff, supervisor, engineer, admin or "
        "external",
    )  # fmt: skip
    add_key.add_argument("--jurisdiction", help="the jurisdiction code the key is held to")
    add_key.add_argument("--unit", help="the unit code (required for unit_staff)")
    add_key.add_argument("--json", action="store_true", help="print the key's row as JSON")
    add_key.set_defaults(run=_command("keys", "cmd_keys_add"))
    list_keys = key_commands.add_parser("list", help="list the keys (never the keys themselves)")
    list_keys.add_argument("--json", action="store_true", help="print JSON instead of a table")
    list_keys.set_defaults(run=_command("keys", "cmd_keys_list"))
    revoke = key_commands.add_parser("revoke", help="revoke a key by its name")
    revoke.add_argument("name")
    revoke.set_defaults(run=_command("keys", "cmd_keys_revoke"))

    tiles = commands.add_parser("tiles", help="the shared vector tile cache: seed or clear it")
    tile_commands = tiles.add_subparsers(title="tiles commands", metavar="ACTION", required=True)
    seed = tile_commands.add_parser(
        "seed",
        help="pre-render a zoom range into the shared tile cache",
        description=(
            "Render the vector tiles of a zoom range over a box into the tile cache every "
            "API process shares: each layer's collection tiles and the one-map tile of them "
            "(of every layer when --layers is not given). Tiles cached and current are left "
            "as they are. Exit status 3 when some tiles could not be made."
        ),
    )
    seed.add_argument("--zooms", type=_zooms, default=range(10, 17), metavar="FROM-TO",
                      help="zoom levels, e.g. 10-16 (the default) or 14")  # fmt: skip
    seed.add_argument("--layers", type=_names, metavar="A,B",
                      help="layers, separated by commas (default: every feature layer)")  # fmt: skip
    seed.add_argument("--bbox", type=_bbox, metavar="W,S,E,N",
                      help="lon/lat box, e.g. 121.38,31.22,121.42,31.25 or -122.5,37.7,"
                           "-122.4,37.8 (default: the layers' extent)")  # fmt: skip
    seed.add_argument("--tms", default="WebMercatorQuad", choices=("WebMercatorQuad",),
                      help="tile matrix set")  # fmt: skip
    seed.add_argument("--jobs", type=_jobs, default=2, help="tiles rendered at once (default 2)")
    seed.add_argument("--json", action="store_true", help="print the counts as JSON")
    seed.set_defaults(run=_command("tiles", "cmd_tiles_seed"))
    clear = tile_commands.add_parser("clear", help="empty the shared tile cache")
    clear.add_argument("--layers", type=_names, metavar="A,B",
                       help="only the tiles holding these layers")  # fmt: skip
    clear.set_defaults(run=_command("tiles", "cmd_tiles_clear"))

    network = commands.add_parser(
        "network", help="the pipe networks (管网): connectivity check, what lies under a dig"
    )
    network_commands = network.add_subparsers(
        title="network commands", metavar="ACTION", required=True
    )
    dig = network_commands.add_parser(
        "excavation",
        help="every pipe and node under a planned dig, gas and power first",
        description=(
            "Before digging: every pipe and pipe node under the dig's outline (a GeoJSON "
            "file of its Polygon or MultiPolygon, or any vector file the imports read; "
            "several polygons are taken together) or within the margin around it, gas first, "
            "then power, heat, water, telecom, drainage and sewage, shallowest first, with "
            "depth, owner and the owners to call. Digs of at most 1 km²."
        ),
    )
    dig.add_argument("path", type=Path, metavar="FILE", help="the dig's outline")
    dig.add_argument("--margin", type=float, default=1.0, metavar="METRES",
                     help="metres around the dig that count as under it, 0 to 50 (default 1)")  # fmt: skip
    dig.add_argument("--crs", help="the file's CRS when it does not say (or says wrong): "
                     "EPSG:4549, 4490, GCJ02, BD09 ...")  # fmt: skip
    dig.add_argument("--json", action="store_true", help="print the answer as JSON")
    dig.set_defaults(run=_command("network", "cmd_network_excavation"))
    check = network_commands.add_parser(
        "check",
        help="the connectivity report: parts, dangling ends, near misses, nodes off the network",
        description=(
            "Ties each network's pipes and nodes together from their geometry (ends closer "
            "than TWIN_NETWORK_SNAP_M meet; a node that close to a pipe splits it) and reports "
            "its parts and which reach no source, pipe ends that meet nothing, ends within "
            "TWIN_NETWORK_NEAR_MISS_M of a pipe they do not meet (with the gap), and nodes "
            "that lie on no pipe. Exits 1 when it finds a problem."
        ),
    )
    check.add_argument("networks", nargs="*", metavar="NETWORK",
                       help="the networks to check (default: every network with pipes)")  # fmt: skip
    check.add_argument("--json", action="store_true", help="print the reports as JSON")
    check.set_defaults(run=_command("network", "cmd_network_check"))

    layers = commands.add_parser("layers", help="list the layer catalogue (data inventory)")
    layers.add_argument("--json", action="store_true", help="print JSON instead of a table")
    layers.set_defaults(run=_command("layers", "cmd_layers"))

    for name, run, text in (
        ("serve", _command("serve", "cmd_serve"), "serve the API on the data base as it is"),
        (
            "up",
            _command("serve", "cmd_up"),
            "the main job: data base, demo city (if none yet), and the API",
        ),
    ):
        serve = commands.add_parser(name, help=text, description=text)
        serve.add_argument("--host", help="address to listen on (TWIN_HOST, default 127.0.0.1)")
        serve.add_argument("--port", type=_port, help="port (TWIN_PORT, default 8000)")
        if name == "up":
            serve.add_argument("--size", choices=SIZES, default="default")
            serve.add_argument("--no-history", action="store_true",
                               help="a first demo city without its history of incidents")  # fmt: skip
        serve.set_defaults(run=run)
    return parser


# Options whose value may start with a minus, a longitude west of Greenwich: argparse
# takes "-122.5,37.7,-122.4,37.8" for an option (only a plain negative number is a value
# to it) and says "expected one argument". Written --bbox=VALUE it is one argument.
SIGNED_VALUES = frozenset({"--bbox"})
_SIGNED = re.compile(r"-\.?[0-9]")


def _signed_values_joined(argv: Sequence[str]) -> list[str]:
    """``argv`` with ``--bbox -122.5,…`` as ``--bbox=-122.5,…`` (up to a ``--``)."""
    joined: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return joined + list(argv[i:])
        if arg in SIGNED_VALUES and i + 1 < len(argv) and _SIGNED.match(argv[i + 1]):
            joined.append(f"{arg}={argv[i + 1]}")
            i += 2
            continue
        joined.append(arg)
        i += 1
    return joined


def _seed(text: str) -> int:
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if seed < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {seed}")
    return seed


MAX_ZOOM = 22  # tiles.matrix.MAX_ZOOM; the parser imports no tile code (see the docstring)


def _zoom(text: str) -> int:
    try:
        zoom = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text.strip()[:20]!r} is not a zoom level") from None
    if not 0 <= zoom <= MAX_ZOOM:
        raise argparse.ArgumentTypeError(f"zoom {zoom} is outside 0..{MAX_ZOOM}")
    return zoom


def _zooms(text: str) -> range:
    """``10-16`` or ``14``: the zoom levels, first to last."""
    first, sep, last = text.partition("-")
    if sep and not (first.strip() and last.strip()):
        raise argparse.ArgumentTypeError(f"{text[:20]!r}: give FROM-TO, e.g. 10-16")
    low = _zoom(first)
    high = _zoom(last) if sep else low
    if low > high:
        raise argparse.ArgumentTypeError(
            f"{text}: the first zoom is above the last (say {high}-{low})"
        )
    return range(low, high + 1)


def _names(text: str) -> list[str]:
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise argparse.ArgumentTypeError("name at least one layer")
    return names


def _bbox(text: str) -> tuple[float, float, float, float]:
    """``west,south,east,north`` in degrees."""
    parts = text.split(",")
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"{text[:60]!r}: give four numbers, west,south,east,north")
    try:
        west, south, east, north = (float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:60]!r}: not four numbers") from None
    if not all(math.isfinite(v) for v in (west, south, east, north)):
        raise argparse.ArgumentTypeError(f"{text[:60]!r}: every number must be finite")
    if not (-180 <= west < east <= 180):
        raise argparse.ArgumentTypeError(
            f"{text[:60]!r}: west and east are longitudes, -180 to 180, west below east"
        )
    if not (-90 <= south < north <= 90):
        raise argparse.ArgumentTypeError(
            f"{text[:60]!r}: south and north are latitudes, -90 to 90, south below north"
        )
    return (west, south, east, north)


def _jobs(text: str) -> int:
    try:
        jobs = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:20]!r} is not a whole number") from None
    if not 1 <= jobs <= 32:
        raise argparse.ArgumentTypeError(f"{jobs}: give 1 to 32")
    return jobs


def _port(text: str) -> int:
    """A TCP port, as argparse reads it: one line naming the range, not bind()'s traceback."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port: ports are 1 to 65535")
    return port
