"""The ``twin`` command: the one place that wires settings, data base, layers and API together.

Errors a person can act on come out as one line on stderr and a non-zero exit, never a
traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime
from pathlib import Path

import psycopg
from pydantic import ValidationError
from pydantic_settings import SettingsError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from twin import catalogue, db
from twin.errors import InvalidInput, NothingStored, TwinError
from twin.settings import Settings

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)


def _port(text: str) -> int:
    """A TCP port, as argparse reads it: one line naming the range, not bind()'s traceback."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port: ports are 1 to 65535")
    return port


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``twin`` console command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        settings = Settings()
        return int(args.run(settings, args) or 0)
    except ValidationError as exc:
        problems = "; ".join(
            f"TWIN_{'_'.join(str(p) for p in e['loc']).upper()}={str(e.get('input'))[:40]!r}: "
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
    """The command line: ``twin db|demo|import|scene|terrain|datasets|layers|serve|up``."""
    parser = argparse.ArgumentParser(
        prog="twin",
        description="The one map (一张图): a spatial digital twin of the city on PostGIS.",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    db_parser = commands.add_parser("db", help="manage the data base (embedded by default)")
    db_commands = db_parser.add_subparsers(title="db commands", metavar="ACTION", required=True)
    for name, run, text in (
        ("start", cmd_db_start, "make (first time) and start the embedded PostGIS cluster"),
        ("stop", cmd_db_stop, "stop the embedded cluster"),
        ("status", cmd_db_status, "say whether the data base is there and up"),
        ("url", cmd_db_url, "print the data base URL (starts the embedded cluster)"),
        ("migrate", cmd_db_migrate, "bring the schema to the newest migration"),
    ):
        db_commands.add_parser(name, help=text, description=text).set_defaults(run=run)

    demo = commands.add_parser(
        "demo", help="generate and load the demo city (replaces only the previous demo)"
    )
    demo.add_argument("--size", choices=("small", "default", "large"), default="default")
    demo.add_argument("--seed", type=_seed, default=1, help="same seed, same city (default 1)")
    demo.set_defaults(run=cmd_demo)

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
        "jurisdictions, units, or a scene's name",
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
    imports.add_argument("--owner", help="the unit that owns the layer (catalogue)")
    imports.add_argument("--licence", help="licence of the data (catalogue)")
    imports.add_argument("--cadence", help="how often it is updated (catalogue)")
    imports.add_argument("--json", action="store_true", help="print the report as JSON")
    imports.set_defaults(run=cmd_import)

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
    create.set_defaults(run=cmd_scene_create)
    drop = scene_commands.add_parser("drop", help="remove a scene layer and its features")
    drop.add_argument("name")
    drop.set_defaults(run=cmd_scene_drop)

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
    dem.set_defaults(run=cmd_terrain_import)
    sample = terrain_commands.add_parser(
        "sample", help="fill missing elevations of buildings, pipe nodes and sensors"
    )
    sample.set_defaults(run=cmd_terrain_sample)

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
    datasets.set_defaults(run=cmd_datasets)

    layers = commands.add_parser("layers", help="list the layer catalogue (data inventory)")
    layers.add_argument("--json", action="store_true", help="print JSON instead of a table")
    layers.set_defaults(run=cmd_layers)

    for name, run, text in (
        ("serve", cmd_serve, "serve the API on the data base as it is"),
        ("up", cmd_up, "the main job: data base, demo city (if none yet), and the API"),
    ):
        serve = commands.add_parser(name, help=text, description=text)
        serve.add_argument("--host", help="address to listen on (TWIN_HOST, default 127.0.0.1)")
        serve.add_argument("--port", type=_port, help="port (TWIN_PORT, default 8000)")
        if name == "up":
            serve.add_argument("--size", choices=("small", "default", "large"), default="default")
        serve.set_defaults(run=run)
    return parser


def _seed(text: str) -> int:
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if seed < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {seed}")
    return seed


# -- db ----------------------------------------------------------------------------------


def prepare(settings: Settings) -> str:
    """``db.prepare`` with a spinner: making a cluster the first time takes a few seconds."""
    where = (
        "the data base" if settings.database_url else f"the embedded PostGIS in {settings.data_dir}"
    )
    cluster = None if settings.database_url else db.embedded_cluster(settings)
    if cluster is not None and not cluster.state_file.exists() and not cluster.foreign_files():
        # Said out loud: a command run from another folder would otherwise quietly work
        # on a new, empty map.
        console.print(
            f"no embedded PostGIS in {settings.data_dir.resolve()} yet: making a new, empty one "
            "(set TWIN_DATA_DIR to use another)",
            highlight=False,
        )
    with console.status(f"starting {where}, migrating the schema…"):
        return db.prepare(settings)


def cmd_db_start(settings: Settings, args: argparse.Namespace) -> int:
    """Start the embedded cluster, or check the configured server."""
    url = prepare(settings)
    where = (
        "configured server" if settings.database_url else f"embedded cluster in {settings.data_dir}"
    )
    console.print(f"data base ready ({where}): {_safe(url)}", highlight=False)
    return 0


def cmd_db_stop(settings: Settings, args: argparse.Namespace) -> int:
    """Stop the embedded cluster."""
    if settings.database_url:
        raise TwinError("TWIN_DATABASE_URL is set: that server is not ours to stop")
    stopped = db.embedded_cluster(settings).stop()
    console.print("stopped" if stopped else "not running")
    return 0


def cmd_db_status(settings: Settings, args: argparse.Namespace) -> int:
    """Report where the data base is and whether it is up; exit 1 when it is not."""
    if settings.database_url:
        url = db.libpq_url(settings.database_url)
        db.check_reachable(url)
        report: dict[str, object] = {"kind": "configured", "url": _safe(url), "running": True}
        report["schema_revision"] = db.schema_revision(url)
    else:
        report = {"kind": "embedded", **db.embedded_cluster(settings).status()}
    report["schema_head"] = db.head_revision()
    out.print_json(_json(report))
    return 0 if report.get("running") else 1


def cmd_db_url(settings: Settings, args: argparse.Namespace) -> int:
    """Print the libpq URL (for psql, ogr2ogr, QGIS)."""
    out.print(db.database_url(settings), highlight=False, soft_wrap=True)
    return 0


def cmd_db_migrate(settings: Settings, args: argparse.Namespace) -> int:
    """Apply migrations."""
    url = prepare(settings)
    console.print(f"schema at revision {db.schema_revision(url)}")
    return 0


# -- data ----------------------------------------------------------------------------------


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    """Generate the demo city and load it."""
    load_demo_city(prepare(settings), size=args.size, seed=args.seed)
    return 0


def load_demo_city(url: str, *, size: str, seed: int) -> dict[str, int]:
    """Generate and load the demo city with progress bars; print what was loaded."""
    from layers.demo.generate import generate_city
    from layers.demo.load import load_demo

    started = time.perf_counter()
    with progress_bars() as progress:
        city = generate_city(size, seed=seed, progress=progress)
        generated = time.perf_counter()
        with db.connect(url) as conn:
            counts = load_demo(conn, city, progress=progress)
    finished = time.perf_counter()
    features = sum(counts.values())
    console.print(
        f"demo city ({size}, seed {seed}) loaded: "
        + ", ".join(f"{n:,} {table}" for table, n in counts.items()),
        highlight=False,
    )
    console.print(
        f"generated in {generated - started:.1f} s, loaded in {finished - generated:.1f} s "
        f"({features / max(finished - generated, 1e-9):,.0f} features/s)",
        highlight=False,
    )
    return counts


# The import options as this command's flags: the core names the one that was wrong.
OPTION_FLAGS = {
    "dataset": "--dataset", "crs": "--crs", "layer": "--layer", "mapping": "--map",
    "values": "--set", "defaults": "--default", "provider": "--provider",
    "owner_unit": "--owner", "licence": "--licence", "update_cadence": "--cadence",
}  # fmt: skip


def _worded(exc: TwinError) -> str:
    """An error as this command line says it: with the flag of the input that was wrong."""
    option = exc.option if isinstance(exc, InvalidInput) else None
    return f"{exc} (option {OPTION_FLAGS.get(option, option)})" if option else str(exc)


def cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    """Import a file into a layer and print what happened."""
    from layers.coverage import describe
    from layers.crs import resolve_crs
    from layers.ingest import ImportOptions, group_rejections, import_file
    from layers.readers import check_path

    mapping = _pairs(args.map, "--map")
    if args.mapping:
        mapping = {**_mapping_file(args.mapping), **mapping}
    options = ImportOptions(
        dataset=args.dataset,
        crs=args.crs,
        layer=args.source_layer,
        mapping=mapping,
        values=_pairs(args.set, "--set"),
        defaults=_pairs(args.default, "--default"),
        provider=args.provider,
        owner_unit=args.owner,
        licence=args.licence,
        update_cadence=args.cadence,
    )
    # What can be checked without the data base is, first: a mistyped CRS or a missing
    # file should not start (or make) a cluster before saying so.
    if args.crs:
        resolve_crs(args.crs)
    check_path(Path(args.path))
    url = prepare(settings)
    failed = None
    try:
        with progress_bars() as progress, db.connect(url) as conn:
            report = import_file(conn, args.layer, args.path, options, progress=progress)
    except NothingStored as exc:  # the report says why: printed as any other, then exit 1
        report, failed = exc.report, str(exc)
    if args.json:
        out.print_json(_json(report.as_dict()))
    else:
        # The report is the command's output: stdout, so it can be kept in a file.
        out.print(report.summary(), highlight=False, markup=False)
        for part in report.parts:
            for line in part.notes + group_rejections(part):
                out.print(f"  {part.layer}: {line}", highlight=False, markup=False)
        if report.coverage is not None:
            for line in describe(report.coverage):
                out.print(f"  {line}", highlight=False, markup=False)
    if failed is not None:
        console.print(f"twin: error: {failed}", highlight=False, markup=False)
        return 1
    return 3 if any(p.rejected for p in report.parts) else 0


def cmd_scene_create(settings: Settings, args: argparse.Namespace) -> int:
    """Register a scene layer."""
    from layers.scenes import create_scene

    properties = {}
    for item in args.property:
        name, sep, kind = item.partition(":")
        if not sep:
            raise TwinError(f"--property {item!r}: write it as NAME:TYPE (e.g. count:integer)")
        properties[name.strip()] = kind.strip()
    with db.connect(prepare(settings)) as conn:
        layer = create_scene(
            conn,
            args.name,
            geometry_type=args.geometry,
            properties=properties,
            title=args.title,
            owner_unit=args.owner,
            description=args.description,
        )
    console.print(
        f"scene {layer['name']} registered ({layer['geometry_type']}): "
        f"import features with 'twin import {layer['name']} FILE'",
        highlight=False,
    )
    return 0


def cmd_scene_drop(settings: Settings, args: argparse.Namespace) -> int:
    """Remove a scene layer."""
    from layers.scenes import drop_scene

    with db.connect(prepare(settings)) as conn:
        drop_scene(conn, args.name)
    console.print(f"scene {args.name} removed", highlight=False)
    return 0


def cmd_terrain_import(settings: Settings, args: argparse.Namespace) -> int:
    """Load a DEM."""
    from layers.terrain import import_dem

    with progress_bars() as progress, db.connect(prepare(settings)) as conn:
        result = import_dem(
            conn, args.path, crs=args.crs, dataset=args.dataset, provider=args.provider,
            progress=progress,
        )  # fmt: skip
    console.print(
        f"terrain {result['dataset']}: {result['tiles']} tiles, {result['min_m']:.1f} to "
        f"{result['max_m']:.1f} m; elevations filled: "
        + ", ".join(f"{n:,} {table}" for table, n in result["sampled"].items()),
        highlight=False,
    )
    return 0


def cmd_terrain_sample(settings: Settings, args: argparse.Namespace) -> int:
    """Fill missing elevations from the stored terrain."""
    from layers.terrain import sample_elevations

    with db.connect(prepare(settings)) as conn:
        counts = sample_elevations(conn)
    console.print(
        "elevations filled: " + ", ".join(f"{n:,} {t}" for t, n in counts.items()), highlight=False
    )
    return 0


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise TwinError(f"{flag} {item!r}: write it as NAME=VALUE")
        pairs[name.strip()] = value.strip()
    return pairs


def _mapping_file(path: Path) -> dict[str, str]:
    """The --mapping file's JSON object of field names to source field names."""
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError as exc:  # the C decoder's depth limit: a message, not a traceback
        raise TwinError(f"cannot read the mapping file {path}: nested too deeply") from exc
    except (OSError, ValueError) as exc:
        raise TwinError(f"cannot read the mapping file {path}: {exc}") from exc
    if not isinstance(mapping, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
    ):
        raise TwinError(f"{path} must be a JSON object of field names to source field names")
    return mapping


def cmd_datasets(settings: Settings, args: argparse.Namespace) -> int:
    """List a layer's datasets, or delete one of them."""
    from layers.datasets import delete_dataset, list_datasets

    with db.connect(prepare(settings)) as conn:
        if args.delete is not None:
            deleted = delete_dataset(conn, args.layer, args.delete)
            conn.commit()
            if args.json:
                out.print_json(
                    _json({"layer": args.layer, "dataset": args.delete, "deleted": deleted})
                )
            else:
                console.print(
                    f"deleted dataset {args.delete} of {args.layer}: {deleted:,} features",
                    highlight=False,
                    markup=False,
                )
            return 0
        datasets = list_datasets(conn, args.layer)
    if args.json:
        out.print_json(_json(datasets))
        return 0
    if not datasets:
        console.print(f"layer {args.layer} has no features", highlight=False, markup=False)
        return 0
    table = Table("dataset", "features", "updated", "source", "CRS", "provider", "owner",
                  "licence")  # fmt: skip
    for row in datasets:
        updated = row["updated_at"] or row["imported_at"]
        table.add_row(  # names come from files and people: text, never rich markup
            Text(row["dataset"]),
            f"{row['features']:,}",
            f"{updated:%Y-%m-%d %H:%M}" if updated else "",
            *(Text(row[k]) for k in ("source", "source_crs", "provider", "owner_unit", "licence")),
        )
    out.print(table)
    return 0


def cmd_layers(settings: Settings, args: argparse.Namespace) -> int:
    """Print the layer catalogue."""
    with db.connect(prepare(settings)) as conn:
        layers = catalogue.list_layers(conn)
    if args.json:
        out.print_json(_json(layers))
        return 0
    table = Table("name", "kind", "geometry", "features", "provider", "owner", "updated")
    for layer in layers:
        table.add_row(
            layer["name"],
            layer["kind"],
            layer["geometry_type"],
            f"{layer['feature_count']:,}",
            layer["provider"],
            layer["owner_unit"],
            f"{layer['updated_at']:%Y-%m-%d %H:%M}",
        )
    out.print(table)
    return 0


# -- serving -------------------------------------------------------------------------------


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    """Serve the API on the data base as it is."""
    return serve(settings, prepare(settings), host=args.host, port=args.port)


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    """Data base, demo city when there is none, then serve; stops a cluster it started."""
    from layers.demo.load import DATASET as DEMO_DATASET
    from layers.demo.load import demo_loaded

    host = args.host or settings.host
    port = args.port or settings.port
    _check_port_free(host, port)
    cluster = None if settings.database_url else db.embedded_cluster(settings)
    was_running = cluster is not None and cluster.is_running()
    # kill, Docker and systemd stop a service with SIGTERM, whose default ends the process
    # on the spot (uvicorn re-sends it once it has shut down): as an exception instead, so
    # the cluster this command started is stopped on the way out, as for Ctrl+C.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    url = prepare(settings)
    try:
        with db.connect(url) as conn:
            loaded = demo_loaded(conn)
            buildings = conn.execute(
                "SELECT count(*) FILTER (WHERE dataset = %s), count(*) FROM buildings",
                (DEMO_DATASET,),
            ).fetchone()
        if loaded:
            others = buildings[1] - buildings[0]  # type: ignore[index]
            console.print(
                f"a demo city is loaded ({buildings[0]:,} buildings"  # type: ignore[index]
                + (f", and {others:,} imported" if others else "")
                + "); "
                f"'twin demo --size {args.size}' replaces it",
                highlight=False,
            )
        else:
            load_demo_city(url, size=args.size, seed=1)
        return serve(settings, url, host=host, port=port)
    finally:
        if cluster is not None and not was_running:
            cluster.stop()
            console.print(f"stopped the embedded PostGIS in {cluster.data_dir}", highlight=False)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def serve(settings: Settings, url: str, *, host: str | None, port: int | None) -> int:
    """Run the API with uvicorn until interrupted."""
    import uvicorn

    from api.app import create_app

    host = host or settings.host
    port = port or settings.port
    _check_port_free(host, port)
    app = create_app(settings, database_url=url)
    where = (
        "configured server"
        if settings.database_url
        else f"embedded PostGIS in {settings.data_dir.absolute()}"
    )
    with db.connect(url) as conn:
        features = sum(layer["feature_count"] for layer in catalogue.list_layers(conn))
    console.print(f"data base: {where}, {features:,} features", highlight=False)
    if features == 0:
        console.print("the map is empty: load the demo city with 'twin demo', or import data")
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104
    console.print(
        f"the one map is served at http://{shown}:{port}/  "
        f"(health: /health, API docs: /docs, layers: /layers)",
        highlight=False,
    )
    uvicorn.run(app, host=host, port=port, log_level="info")
    return 0


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise TwinError(
                f"cannot listen on {host}:{port} ({exc.strerror}): "
                "choose another with --port or TWIN_PORT"
            ) from exc


# -- helpers -------------------------------------------------------------------------------


@contextlib.contextmanager
def progress_bars() -> Iterator[Callable[[str, int, int], None]]:
    """A ``progress(step, done, total)`` callback drawing one rich bar per step."""
    bars = Progress(
        TextColumn("{task.description:<24}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        disable=not console.is_terminal,  # bars are for people; logs and pipes get the summary
    )
    tasks: dict[str, int] = {}

    def progress(step: str, done: int, total: int) -> None:
        if step not in tasks:
            tasks[step] = bars.add_task(step, total=total)
        bars.update(tasks[step], completed=done, total=total)

    with bars:
        yield progress


def _json(value: object) -> str:
    """JSON for ``--json``: times in ISO 8601 as the HTTP API writes them, text as it is."""

    def plain(item: object) -> str:
        return item.isoformat() if isinstance(item, date | datetime) else str(item)

    return json.dumps(value, default=plain, ensure_ascii=False)


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


if __name__ == "__main__":
    sys.exit(main())
