"""``twin terrain import|sample``: the ground elevation model (DEM)."""

from __future__ import annotations

import argparse

from cli.common import console, prepare, progress_bars
from layers.terrain import import_dem, sample_elevations
from twin import db
from twin.settings import Settings


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
