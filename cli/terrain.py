"""``twin terrain import|sample``: the ground elevation model (DEM)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.common import Commands, console, prepare, progress_bars
from layers.terrain import import_dem, sample_elevations
from twin import db
from twin.settings import Settings


def add_commands(commands: Commands) -> None:
    """Add ``twin terrain`` and its actions."""
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


def cmd_terrain_import(settings: Settings, args: argparse.Namespace) -> int:
    """Load a DEM."""
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
    with db.connect(prepare(settings)) as conn:
        counts = sample_elevations(conn)
    console.print(
        "elevations filled: " + ", ".join(f"{n:,} {t}" for t, n in counts.items()), highlight=False
    )
    return 0
